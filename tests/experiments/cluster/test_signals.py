"""Ctrl-C (SIGINT) and SIGTERM on a running `diffseg3d ablate`: the driver exits with one line,
no MLflow run is left RUNNING, none of its Ray processes is left, and the same command run
again resumes and finishes the grid. Real subprocesses, real signals, a local Ray."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
PROFILES = Path(__file__).resolve().parents[3] / "experiments" / "profiles"


def _env() -> dict:
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_MODE"):
        env.pop(key, None)  # ablate starts its own local Ray
    return env


def _grid(tmp_path: Path) -> Path:
    base = yaml.safe_load((PROFILES / "smoke.yaml").read_text())
    base["method"] = "unet"
    base["optim"]["warmup_steps"] = 1
    base["train"].update(steps=8, checkpoint_every=2, log_every=1, eval_every=8)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "name": "signal_test", "seeds": [0], "data_sets": {"phantom": "replaced"}, "base": base,
        "comparisons": [{"table": "1", "axes": {"loss.dice": [True]}}]}))
    return path


def _runs(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("select name, status from runs where lifecycle_stage = 'active'"
                            ).fetchall()


def _trained_steps(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            rows = conn.execute("select max(step) from metrics where key = 'loss'").fetchall()
    except sqlite3.Error:
        return 0
    return rows[0][0] or 0


@pytest.mark.timeout(600)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_grid_cleanly_and_a_rerun_finishes_it(tmp_path, sig):
    from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

    data = make_phantom(tmp_path / "phantom", PhantomSpec(cases=4, shape=(16, 16, 8)))
    out = tmp_path / "runs"
    ablate = [str(BIN / "diffseg3d"), "ablate", str(_grid(tmp_path)), "--data", str(data),
              "--out", str(out)]
    log = tmp_path / "first.log"
    driver = subprocess.Popen(ablate, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while _trained_steps(out / "mlflow.db") < 2:  # a trial is training
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no training step after 300 s"
            time.sleep(0.2)
        tree = psutil.Process(driver.pid).children(recursive=True)
        driver.send_signal(sig)
        rc = driver.wait(120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(30)
    lines = log.read_text().strip().splitlines()
    assert rc == 128 + sig, lines[-20:]
    name = signal.Signals(sig).name
    assert lines[-1] == (f"interrupted by {name}: 0 of 1 trials finished, 1 stopped (their "
                         "MLflow runs ended KILLED); rerun the same command to resume")
    assert not any("Traceback" in line or "Tuner.restore" in line for line in lines)
    statuses = dict(_runs(out / "mlflow.db"))
    assert statuses["signal_test"] == "KILLED"
    assert set(statuses.values()) <= {"KILLED", "FAILED"}, statuses
    _, alive = psutil.wait_procs(tree, timeout=20)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive

    second = subprocess.run(ablate, env=_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "1 of 1 trials finished" in second.stdout
    statuses = _runs(out / "mlflow.db")
    assert sorted(statuses) == [("phantom_unet_dice-Y_s0", "FINISHED"),
                                ("signal_test", "FINISHED")], statuses
