"""`train` and `tables` refuse at once, naming the holder, when a live process holds the lock of
the place they would write (the same trial folder, the same tables folder); a different trial
folder in the same --out is not blocked."""

import subprocess
import sys

import pytest
import yaml
from diffseg3d.cli.main import main
from diffseg3d.experiments.config.layering import load_config
from diffseg3d.experiments.config.schema import config_hash
from diffseg3d.experiments.output_lock import tables_lock_path, train_lock_path

HOLDER = """
import sys
from diffseg3d.experiments.output_lock import output_lock
with output_lock(sys.argv[1], "held"):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def hold():
    """hold(path): a live process holding the lock file `path`; returns its pid."""
    procs = []

    def start(path):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc.pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=60)


def test_train_refuses_a_trial_folder_another_process_writes(tmp_path, capsys, hold):
    from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

    data = make_phantom(tmp_path / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8)))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"name": "t1", "data": {"root": str(data)}}))
    out = tmp_path / "runs"
    folder = f"t1_{config_hash(load_config(config, profile='smoke'))}"
    pid = hold(train_lock_path(out, folder))
    assert main(["train", str(config), "--profile", "smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: trial {folder} in {out} is already being written by pid "
                           f"{pid} on host ")
    assert not (out / "trials").exists() and not (out / "mlflow.db").exists()


def test_tables_refuses_a_folder_another_process_writes(tmp_path, capsys, hold):
    out = tmp_path / "results"
    pid = hold(tables_lock_path(out))
    assert tables_lock_path(out) == tmp_path / ".results.tables.lock"
    assert main(["tables", "--csv-dir", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: the tables folder {out} is already being written by "
                             f"pid {pid} ")
    assert not out.exists()
