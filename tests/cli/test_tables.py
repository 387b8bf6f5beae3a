"""`diffseg3d tables` reads a store and never creates or repairs one."""

import pytest
from diffseg3d.cli.main import main


def _tables(capsys, uri, out):
    code = main(["tables", "--experiment", "paper", "--tracking-uri", uri, "--out", str(out)])
    return code, capsys.readouterr().err


def test_tables_refuses_a_zero_byte_store_and_leaves_it_empty(tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"")
    code, err = _tables(capsys, f"sqlite:///{db}", tmp_path / "out")
    assert code != 0
    assert str(db) in err and len(err.strip().splitlines()) == 1
    assert db.stat().st_size == 0
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["mlfow.db", "missing/mlflow.db"])
def test_tables_refuses_a_mistyped_store_and_creates_nothing(tmp_path, capsys, name):
    db = tmp_path / name
    code, err = _tables(capsys, f"sqlite:///{db}", tmp_path / "out")
    assert code != 0
    assert str(db) in err and "Traceback" not in err
    assert not db.exists() and not (tmp_path / "out").exists()


def test_tables_refuses_a_truncated_store(tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"SQLite format 3\x00" + b"\x00" * 80)
    code, err = _tables(capsys, f"sqlite:///{db}", tmp_path / "out")
    assert code != 0 and str(db) in err and len(err.strip().splitlines()) == 1
