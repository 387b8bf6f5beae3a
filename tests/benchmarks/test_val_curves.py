"""`benchmarks.probes.val_curves`: validation Dice of runs in real SQLite MLflow stores, as a
step-column Markdown table (values as logged, gaps where a run was not validated) and a figure."""

import mlflow
import pytest

from benchmarks.probes import val_curves

pytestmark = pytest.mark.slow  # MLflow store creation: about 8 s per test


def _store(folder, values):
    """A `diffseg3d train`-like --out folder: mlflow.db with one run logging val_dice."""
    folder.mkdir()
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    try:
        with mlflow.start_run() as run:
            for step, value in values.items():
                mlflow.log_metric("val_dice", value, step=step)
    finally:
        mlflow.set_tracking_uri(None)
    return run.info.run_id


def test_table_has_one_row_per_run_and_one_column_per_step(tmp_path, capsys):
    _store(tmp_path / "mask", {200: 0.7412, 400: 0.8249})
    _store(tmp_path / "noise", {200: 0.0841, 400: 0.148, 600: 0.1967})
    stem = tmp_path / "fig" / "curves"
    assert val_curves.main(["--out", str(stem), f"mask={tmp_path / 'mask'}",
                            f"noise, 8 features={tmp_path / 'noise'}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ["| run | 200 | 400 | 600 |", "|---|---|---|---|",
                         "| mask | 0.741 | 0.825 |  |",
                         "| noise, 8 features | 0.084 | 0.148 | 0.197 |"]
    assert stem.with_suffix(".png").stat().st_size > 10_000


def test_a_store_with_several_runs_needs_a_run_id(tmp_path):
    first = _store(tmp_path / "two", {100: 0.5})
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'two' / 'mlflow.db'}")
    try:
        with mlflow.start_run():
            mlflow.log_metric("val_dice", 0.9, step=100)
    finally:
        mlflow.set_tracking_uri(None)
    with pytest.raises(SystemExit, match="holds 2 runs; name one as a=STORE#RUN_ID"):
        val_curves.history(*val_curves.parse_source(f"a={tmp_path / 'two'}"))
    picked = val_curves.history(*val_curves.parse_source(f"a={tmp_path / 'two'}#{first}"))
    assert picked["value"].tolist() == [0.5] and picked["setting"].tolist() == ["a"]
    with pytest.raises(SystemExit, match="expected LABEL=STORE"):
        val_curves.parse_source("no-label")
