"""Rerunning `ablate` into the same --out: the same grid on a second data set runs beside the
first (its own Tune experiment folder and MLflow parent run), and a driver killed with SIGKILL
resumes its running trial from the trial's last checkpoint on disk.

Real processes only: a local Ray (in this process, or started by the `diffseg3d ablate`
subprocess), SQLite MLflow stores, smoke-sized trials. The killed driver is a process group this
module started; its Ray processes are ended by their pids, never by `ray stop`.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from diffseg3d.experiments.cluster.manifest import MANIFEST_NAME
from diffseg3d.experiments.cluster.runner import experiment_folder_name, run_grid
from diffseg3d.experiments.grid import expand, grid_hash
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
PROFILES = Path(__file__).resolve().parents[3] / "experiments" / "profiles"
GRID_NAME = "rerun_test"
TRIAL = "phantom_diffusion_x0_recycle-Y_dice-Y_k5_s0"
STEPS, CHECKPOINT_EVERY, LOG_EVERY = 60, 10, 5


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rerun")


def _phantom(path: Path, seed: int, shape: tuple[int, int, int]) -> Path:
    from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

    return make_phantom(path, PhantomSpec(cases=6, shape=shape, seed=seed))


@pytest.fixture(scope="module")
def phantom_a(workspace) -> Path:
    return _phantom(workspace / "phantom_a", 0, (16, 16, 8))


@pytest.fixture(scope="module")
def phantom_b(workspace) -> Path:
    return _phantom(workspace / "phantom_b", 7, (16, 16, 16))


@pytest.fixture(scope="module")
def grid_file(workspace) -> Path:
    """One trial with the smoke profile's settings, but 60 steps and a checkpoint every 10, so
    a driver can be killed between two checkpoints of a running trial. Used without a profile."""
    base = yaml.safe_load((PROFILES / "smoke.yaml").read_text())
    base["method"] = "diffusion"
    base["train"].update(steps=STEPS, checkpoint_every=CHECKPOINT_EVERY, log_every=LOG_EVERY,
                         eval_every=30)
    path = workspace / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "name": GRID_NAME, "seeds": [0], "data_sets": {"phantom": "replaced-by-data-override"},
        "base": base, "comparisons": [{"table": "1", "axes": {"diffusion.recycling": [True]}}],
    }))
    return path


def _folder(storage: Path, grid: Path, data: Path) -> Path:
    """The Tune experiment folder of `grid` expanded on `data`, from the expansion's hash."""
    expansion = grid_hash(expand(grid, None, str(data.resolve())))
    return storage / experiment_folder_name(GRID_NAME, expansion)


def _runs(client: MlflowClient, kind: str) -> list:
    exp = client.get_experiment_by_name(GRID_NAME)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("diffseg3d.kind") == kind]


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def shared_out(workspace, phantom_a, grid_file, local_ray) -> Path:
    """The grid on phantom A, uninterrupted, into `shared/`."""
    out = workspace / "shared"
    results = run_grid(grid_file, profile=None, data_override=phantom_a, out_dir=out)
    assert [r["status"] for r in results] == ["ok"], results
    return out


def test_same_grid_on_a_second_data_set_runs_beside_the_first(
    shared_out, phantom_a, phantom_b, grid_file
):
    out, storage = shared_out, shared_out / "ray_results"
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    folder_a, folder_b = _folder(storage, grid_file, phantom_a), _folder(storage, grid_file,
                                                                         phantom_b)
    assert folder_a != folder_b and folder_a.is_dir() and not folder_b.exists()
    (parent_a,) = _runs(client, "grid")
    (child_a,) = _runs(client, "trial")
    result_a = (folder_a / TRIAL / "result.json").read_text()

    results = run_grid(grid_file, profile=None, data_override=phantom_b, out_dir=out)
    assert [r["status"] for r in results] == ["ok"], results
    assert folder_b.is_dir() and (folder_b / TRIAL / "result.json").is_file()
    manifests = {f: json.loads((f / MANIFEST_NAME).read_text()) for f in (folder_a, folder_b)}
    assert manifests[folder_a]["parent_run_id"] == parent_a.info.run_id
    assert manifests[folder_b]["parent_run_id"] != parent_a.info.run_id
    assert manifests[folder_b]["data_override"] == str(phantom_b.resolve())

    parents = {r.info.run_id: r for r in _runs(client, "grid")}
    assert set(parents) == {parent_a.info.run_id, manifests[folder_b]["parent_run_id"]}
    assert all(p.info.status == "FINISHED" for p in parents.values())
    children = {r.info.run_id: r for r in _runs(client, "trial")}
    assert len(children) == 2
    child_b = next(r for i, r in children.items() if i != child_a.info.run_id)
    assert child_b.data.tags["mlflow.parentRunId"] == manifests[folder_b]["parent_run_id"]
    assert child_b.data.params["data.root"] == str(phantom_b.resolve())
    # The first expansion's run is untouched: same end, same metrics, same Tune results.
    again_a = children[child_a.info.run_id]
    assert again_a.info.end_time == child_a.info.end_time
    assert str(again_a.data.metrics) == str(child_a.data.metrics)  # str: nan == nan
    assert again_a.data.params["data.root"] == str(phantom_a.resolve())
    assert (folder_a / TRIAL / "result.json").read_text() == result_a

    # The first command again: its own experiment is restored, nothing is retrained.
    results = run_grid(grid_file, profile=None, data_override=phantom_a, out_dir=out)
    assert [r["status"] for r in results] == ["ok"], results
    assert (folder_a / TRIAL / "result.json").read_text() == result_a
    assert len(_runs(client, "trial")) == 2 and len(_runs(client, "grid")) == 2
    assert MlflowClient(client.tracking_uri).get_run(child_a.info.run_id).info.end_time == (
        child_a.info.end_time
    )


# ---------------------------------------------------------------------------------------------
# A driver killed with SIGKILL


def _env() -> dict:
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_MODE"):
        env.pop(key, None)  # the local path: ablate starts its own Ray with token auth
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver's process group and every process it started (Ray's GCS, raylet,
    workers), by pid: what a `kill -9` of a terminal's job or an OOM killer leaves behind."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    os.killpg(proc.pid, signal.SIGKILL)
    for child in tree:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(30)
    psutil.wait_procs(tree, timeout=30)


@pytest.mark.timeout(1200)
def test_sigkilled_driver_resumes_the_running_trial_from_its_checkpoint(
    workspace, phantom_a, grid_file, shared_out
):
    out = workspace / "killed"
    folder = _folder(out / "ray_results", grid_file, phantom_a)
    first_checkpoint = folder / TRIAL / "work" / "checkpoints" / f"step_{CHECKPOINT_EVERY:07d}"
    ablate = [str(BIN / "diffseg3d"), "ablate", str(grid_file), "--data", str(phantom_a),
              "--out", str(out)]
    log = workspace / "killed_first.log"
    driver = subprocess.Popen(ablate, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while not (first_checkpoint / "trial.json").is_file():
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 900 s"
            time.sleep(0.1)
    finally:
        _kill_group(driver)

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (killed,) = _runs(client, "trial")
    assert killed.info.status == "RUNNING"  # killed mid-training, not after the trial finished
    killed_steps = _steps(client, killed.info.run_id, "loss")
    assert killed_steps[0] == LOG_EVERY and killed_steps[-1] < STEPS

    second = subprocess.run(ablate, env=_env(), capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "1 of 1 trials finished" in second.stdout

    (resumed,) = _runs(client, "trial")  # one run per trial: the killed one, reopened
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    (parent,) = _runs(client, "grid")
    assert resumed.data.tags["mlflow.parentRunId"] == parent.info.run_id
    steps = _steps(client, resumed.info.run_id, "loss")
    assert sorted(set(steps)) == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    # Continued from a checkpoint (step 10 or later), not from step 0: the steps up to the first
    # checkpoint were logged once, by the killed driver's trial.
    assert [s for s in steps if s <= CHECKPOINT_EVERY] == [LOG_EVERY, CHECKPOINT_EVERY]
    last = json.loads((folder / TRIAL / "result.json").read_text().splitlines()[-1])
    assert last["step"] == STEPS and last["trial_done"] is True

    # Same random streams: bit-identical final parameters to the uninterrupted run.
    reference = MlflowClient(f"sqlite:///{shared_out / 'mlflow.db'}")
    digests = {r.data.params["data.root"]: r.data.tags["diffseg3d.params_digest"]
               for r in _runs(reference, "trial")}
    assert resumed.data.tags["diffseg3d.params_digest"] == digests[str(phantom_a.resolve())]
