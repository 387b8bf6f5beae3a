"""The same grid launched twice into one --out, as two real `diffseg3d ablate` processes: the
second refuses while the first runs, naming the first's pid, and the first finishes every trial
with exactly one finished MLflow run per trial (none deleted by the second)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from diffseg3d.experiments.output_lock import parse_holder
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
GRID = "lock_test"
TRIALS = ("phantom_unet_dice-Y_s0", "phantom_unet_dice-Y_s1")


def _ablate(grid: Path, data: Path, out: Path) -> list[str]:
    return [str(BIN / "diffseg3d"), "ablate", str(grid), "--profile", "smoke", "--data",
            str(data), "--out", str(out), "--max-concurrent", "2"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",
                                                             "MLFLOW_TRACKING_URI")}
    return {**env, "JAX_PLATFORMS": "cpu"}


def _wait_for_holder(locks: Path, pid: int, first: subprocess.Popen, timeout: float):
    """The first process's lock file, once it names `pid` (the lock is taken before Ray starts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert first.poll() is None, "the first ablate ended before taking its lock"
        for path in locks.glob("ablate_*.lock"):
            holder = parse_holder(path.read_text())
            if holder is not None and holder.pid == pid:
                return path
        time.sleep(0.2)
    raise AssertionError(f"no lock file naming pid {pid} in {locks} after {timeout} s")


@pytest.mark.timeout(900)
def test_a_second_ablate_of_the_same_grid_refuses_while_the_first_finishes(tmp_path):
    from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

    data = make_phantom(tmp_path / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8)))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "name": GRID, "seeds": [0, 1], "data_sets": {"phantom": "replaced-by-data-override"},
        "base": {"method": "unet"},
        "comparisons": [{"table": "1", "axes": {"method": ["unet"]}}]}))
    out = tmp_path / "runs"
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(_ablate(grid, data, out), stdout=log, stderr=subprocess.STDOUT,
                             env=_env(), start_new_session=True)
    try:
        lock = _wait_for_holder(out / "locks", first.pid, first, timeout=300)
        second = subprocess.run(_ablate(grid, data, out), capture_output=True, text=True,
                                env=_env(), timeout=300)
        # Refused because the first held the lock: a second launch after the first had
        # released it would have run (rc 0), so no assumption on how fast either one is.
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in second.stderr
        assert err[0].startswith(f"error: grid {GRID} (Tune folder {GRID}_")
        assert f"is already being written by pid {first.pid} on host " in err[0]
        assert f"diffseg3d ablate {grid}" in err[0] and str(lock) in err[0]
        assert first.wait(timeout=840) == 0, (tmp_path / "first.log").read_text()[-4000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, 9)
            first.wait(timeout=60)
        log.close()
    assert "2 of 2 trials finished" in (tmp_path / "first.log").read_text()
    assert lock.read_text() == ""  # released

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(GRID)
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    trial_runs = [r for r in runs if r.data.tags.get("diffseg3d.kind") == "trial"]
    assert sorted(r.data.tags["diffseg3d.trial"] for r in trial_runs) == sorted(TRIALS)
    assert all(r.info.status == "FINISHED" and r.info.lifecycle_stage == "active"
               for r in trial_runs)
    parents = [r for r in runs if r.data.tags.get("diffseg3d.kind") == "grid"]
    assert [p.info.status for p in parents] == ["FINISHED"]
