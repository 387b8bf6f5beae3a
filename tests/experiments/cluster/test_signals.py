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
    # Enough steps that the resumed run is still training when the second signal comes.
    base["train"].update(steps=40, checkpoint_every=2, log_every=1, eval_every=40)
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


def _interrupt(ablate: list[str], env: dict, log: Path, db: Path, sig: int,
               after_step: int) -> int:
    """Run `ablate`, send `sig` once a trial has logged a step beyond `after_step`, check the
    driver's exit, last line, runs and processes; return the last step logged before it."""
    driver = subprocess.Popen(ablate, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while _trained_steps(db) <= after_step:  # a trial is training
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no training step after {after_step} in 300 s"
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
    statuses = dict(_runs(db))
    assert statuses["signal_test"] == "KILLED"
    assert set(statuses.values()) <= {"KILLED", "FAILED"}, statuses
    _, alive = psutil.wait_procs(tree, timeout=20)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    return _trained_steps(db)


@pytest.mark.timeout(600)
def test_ctrl_c_then_sigterm_stop_the_grid_cleanly_and_a_rerun_finishes_it(tmp_path):
    from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

    data = make_phantom(tmp_path / "phantom", PhantomSpec(cases=4, shape=(16, 16, 8)))
    out = tmp_path / "runs"
    db = out / "mlflow.db"
    ablate = [str(BIN / "diffseg3d"), "ablate", str(_grid(tmp_path)), "--data", str(data),
              "--out", str(out)]
    # One compile for the three drivers: the reruns load the train step from JAX's cache.
    env = {**_env(), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    stopped = _interrupt(ablate, env, tmp_path / "first.log", db, signal.SIGINT, after_step=1)
    # The rerun resumes; SIGTERM (what a scheduler or `kill` sends) once it trains further.
    _interrupt(ablate, env, tmp_path / "second.log", db, signal.SIGTERM, after_step=stopped)

    third = subprocess.run(ablate, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    assert "1 of 1 trials finished" in third.stdout
    statuses = _runs(db)
    assert sorted(statuses) == [("phantom_unet_dice-Y_s0", "FINISHED"),
                                ("signal_test", "FINISHED")], statuses
