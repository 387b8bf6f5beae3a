"""run_grid on real Ray: a local grid into a real SQLite MLflow store, a GPU request on a CPU-only
Ray, and a trial killed mid-training on a real two-node loopback cluster (token authentication
on every node and the driver) logging to a real `mlflow server`. No mocks: real Ray processes,
real MLflow stores, real smoke trials.

Cleanup never uses `ray stop` (it would stop every Ray on the machine, other users' too): each
node is a `ray start --block` process in its own process group, ended by signalling that group.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from diffseg3d.experiments.cluster.manifest import MANIFEST_NAME
from diffseg3d.experiments.cluster.resources import ResourceRequestError
from diffseg3d.experiments.cluster.runner import run_grid
from diffseg3d.experiments.cluster.trainable import FAULT_KILL_TRIAL_ENV, FAULT_MARKER_DIR_ENV
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
GRID_NAME = "runner_test"
TRIALS = (
    "phantom_diffusion_x0_recycle-N_dice-Y_k5_s0",
    "phantom_diffusion_x0_recycle-Y_dice-Y_k5_s0",
)
KILLED = TRIALS[1]
PER_CASE_COLUMNS = [
    "case", "class", "dice", "hd95", "roi_voxels", "roi_mm3", "pred_empty", "label_empty", "nsd",
]
TEST_CASES, FOREGROUND_CLASSES = 2, 8  # phantom of 6 cases: 3 train, 1 valid, 2 test
SMOKE_LOG_STEPS = [5, 10, 15, 20]  # smoke profile: 20 steps, log every 5, checkpoint every 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_grid(path: Path, name: str, base: dict | None = None) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "seeds": [0],
                "data_sets": {"phantom": "replaced-by-data-override"},
                "base": {"method": "diffusion", **(base or {})},
                "comparisons": [{"table": "1", "axes": {"diffusion.recycling": [False, True]}}],
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runner")


@pytest.fixture(scope="module")
def phantom(workspace) -> Path:
    from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

    return make_phantom(workspace / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8)))


@pytest.fixture(scope="module")
def grid_file(workspace) -> Path:
    return _write_grid(workspace / "grid.yaml", GRID_NAME)


def _children(client: MlflowClient, experiment: str) -> tuple[list, list]:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("diffseg3d.kind") == "grid"]
    children = [r for r in runs if r.data.tags.get("diffseg3d.kind") == "trial"]
    return parents, children


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _experiment_dir(out: Path, grid: str = GRID_NAME) -> Path:
    """The grid's one Tune experiment folder, `<grid>_<expansion hash>`, under `out`."""
    (folder,) = (out / "ray_results").glob(f"{grid}_*")
    return folder


# ---------------------------------------------------------------------------------------------
# Local Ray


@pytest.mark.timeout(180)
def test_gpu_request_on_cpu_only_ray_fails_before_any_trial(workspace, phantom, local_ray):
    grid = _write_grid(
        workspace / "gpu_grid.yaml", "gpu_grid", {"resources": {"gpus_per_trial": 1}}
    )
    out = workspace / "gpu_out"
    with pytest.raises(ResourceRequestError) as err:
        run_grid(grid, profile=None, data_override=phantom, out_dir=out, tracking_uri=None)
    text = str(err.value)
    assert f"{TRIALS[0]}: {{'cpu': 1.0, 'gpu': 1.0}}" in text
    assert "0 GPUs" in text and "ray.cluster_resources()" in text
    # Refused before anything started: no Tune experiment, no MLflow store, no parent run.
    assert not list((out / "ray_results").glob("gpu_grid*"))
    assert not (out / "mlflow.db").exists()


@pytest.fixture(scope="module")
def local_run(workspace, phantom, grid_file, local_ray):
    out = workspace / "local"
    results = run_grid(
        grid_file, profile="smoke", data_override=phantom, out_dir=out, max_concurrent=2
    )
    return results, out


def test_local_grid_logs_one_child_run_per_trial(local_run):
    results, out = local_run
    assert [r["trial"] for r in results] == list(TRIALS)
    assert [r["status"] for r in results] == ["ok", "ok"], results

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    parents, children = _children(client, GRID_NAME)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["diffseg3d.trial"] for r in children) == sorted(TRIALS)
    for run in children:
        name = run.data.tags["diffseg3d.trial"]
        result = next(r for r in results if r["trial"] == name)
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["diffseg3d.config_hash"] == result["hash"]
        assert run.info.status == "FINISHED"
        params = run.data.params
        assert params["diffusion.recycling"] == ("true" if "recycle-Y" in name else "false")
        assert params["train.steps"] == "20" and params["model.channels"] == "[4, 8]"
        assert params["data.root"] == str(out.parent / "phantom")
        assert _steps(client, run.info.run_id, "loss") == SMOKE_LOG_STEPS
        assert _steps(client, run.info.run_id, "val_dice") == [10, 20]
        # Tune's last result and MLflow agree on the final test mean.
        assert 0.0 <= run.data.metrics["test_dice"] <= 1.0
        assert result["metrics"]["test_dice"] == pytest.approx(run.data.metrics["test_dice"])

        csv = Path(client.download_artifacts(run.info.run_id, "per_case_metrics.csv", str(out)))
        lines = csv.read_text().splitlines()
        assert lines[0].split(",") == PER_CASE_COLUMNS
        assert len(lines) - 1 == TEST_CASES * FOREGROUND_CLASSES

        # CheckpointConfig(num_to_keep=2) on Tune's storage.
        trial_dir = _experiment_dir(out) / name
        assert 1 <= len(list(trial_dir.glob("checkpoint_*"))) <= 2


def test_rerunning_a_finished_grid_reruns_nothing(workspace, phantom, grid_file, local_run):
    results, out = local_run
    result_files = sorted(_experiment_dir(out).glob("*/result.json"))
    before = [f.read_text() for f in result_files]
    manifest = json.loads((_experiment_dir(out) / MANIFEST_NAME).read_text())

    again = run_grid(
        grid_file, profile="smoke", data_override=phantom, out_dir=out, max_concurrent=2
    )
    assert [r["status"] for r in again] == ["ok", "ok"]
    assert [r["metrics"]["test_dice"] for r in again] == [
        r["metrics"]["test_dice"] for r in results
    ]
    assert [f.read_text() for f in result_files] == before  # no trial reported anything new
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    parents, children = _children(client, GRID_NAME)
    assert [p.info.run_id for p in parents] == [manifest["parent_run_id"]]
    assert len(children) == 2


# ---------------------------------------------------------------------------------------------
# Two-node cluster on loopback + mlflow server


def _node_args() -> list[str]:
    # Every node on this host needs its own agent/metrics ports (defaults would collide).
    return [
        "--num-cpus", "1", "--num-gpus", "0", "--node-ip-address", "127.0.0.1",
        "--dashboard-agent-listen-port", str(_free_port()),
        "--dashboard-agent-grpc-port", str(_free_port()),
        "--metrics-export-port", str(_free_port()),
        "--runtime-env-agent-port", str(_free_port()),
        "--disable-usage-stats", "--block",
    ]


def _spawn(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait(predicate, what: str, procs: list[subprocess.Popen], logs: list[Path], limit=120.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: {proc.args[:3]} exited:\n{log.read_text()[-3000:]}")
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not ready after {limit} s")


def _stop(proc: subprocess.Popen) -> None:
    """End a process group this module started (ray start --block tears its node down)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster(workspace):
    """`ray start --head` + `ray start --address` (1 CPU each) and `mlflow server` on 127.0.0.1.

    Token authentication on every node: the token in a file of this test (the README's
    RAY_AUTH_TOKEN_PATH), readable by its owner only. Yields (RAY_ADDRESS, MLflow URI, the Ray
    environment a driver needs: RAY_AUTH_MODE and RAY_AUTH_TOKEN_PATH). Ray's temp dir is short
    (unix socket paths <= 107 bytes).
    """
    token = workspace / "ray_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", **auth)
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    temp_dir = tempfile.mkdtemp(prefix="dsr", dir="/tmp")
    logs = workspace / "cluster_logs"
    logs.mkdir()
    port, mlflow_port = _free_port(), _free_port()
    procs: list[subprocess.Popen] = []
    try:
        head = _spawn(
            [str(BIN / "ray"), "start", "--head", "--port", str(port), "--temp-dir", temp_dir,
             "--include-dashboard", "false", *_node_args()],
            logs / "head.log", env,
        )
        procs.append(head)
        server = _spawn(
            [str(BIN / "mlflow"), "server",
             "--backend-store-uri", f"sqlite:///{workspace / 'server.db'}",
             "--artifacts-destination", str(workspace / "server_artifacts"),
             "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
            logs / "mlflow.log", env,
        )
        procs.append(server)
        _wait(lambda: _port_open(port), "ray head", [head], [logs / "head.log"])
        worker = _spawn(
            [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{port}", *_node_args()],
            logs / "worker.log", env,
        )
        procs.append(worker)
        address = f"127.0.0.1:{port}"
        probe = (
            "import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR');"
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )

        def two_nodes() -> bool:
            out = subprocess.run(
                [sys.executable, "-c", probe, address], env=env, capture_output=True, text=True
            )
            return out.stdout.strip().endswith("2")

        _wait(two_nodes, "second Ray node", [head, worker],
              [logs / "head.log", logs / "worker.log"])
        uri = f"http://127.0.0.1:{mlflow_port}"
        _wait(lambda: _http_ok(f"{uri}/health"), "mlflow server", [server], [logs / "mlflow.log"])
        yield address, uri, auth
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.timeout(900)
def test_killed_trial_resumes_from_its_checkpoint_on_a_two_node_cluster(
    workspace, phantom, grid_file, cluster, local_run
):
    address, uri, auth = cluster
    out, markers = workspace / "cluster_out", workspace / "markers"
    env = dict(
        os.environ,
        RAY_ADDRESS=address,
        MLFLOW_TRACKING_URI=uri,
        **auth,
        **{FAULT_KILL_TRIAL_ENV: KILLED, FAULT_MARKER_DIR_ENV: str(markers)},
    )
    driver = subprocess.run(
        [str(BIN / "diffseg3d"), "ablate", str(grid_file), "--profile", "smoke",
         "--data", str(phantom), "--out", str(out), "--max-concurrent", "2"],
        env=env, capture_output=True, text=True, timeout=840,
    )
    assert driver.returncode == 0, driver.stdout[-3000:] + driver.stderr[-3000:]
    marker = markers / f"{KILLED}.killed"
    assert marker.is_file(), "the fault hook never fired"
    killed_pid = int(marker.read_text().split()[2])

    # Tune restarted the trial once, in a new worker process, from its first checkpoint
    # (iteration 1 = step 10): the final result is iteration 2 but the first since the restore.
    from ray.tune import ExperimentAnalysis

    experiment_dir = _experiment_dir(out)
    failures = {t.config["trial"]: t.num_failures
                for t in ExperimentAnalysis(str(experiment_dir)).trials}
    assert failures == {KILLED: 1, TRIALS[0]: 0}
    result_json = experiment_dir / KILLED / "result.json"
    last = json.loads(result_json.read_text().splitlines()[-1])
    assert (last["step"], last["training_iteration"], last["iterations_since_restore"]) == (
        20, 2, 1,
    )
    assert last["pid"] != killed_pid and last["trial_done"] is True

    client = MlflowClient(uri)
    parents, children = _children(client, GRID_NAME)
    assert len(parents) == 1
    assert sorted(r.data.tags["diffseg3d.trial"] for r in children) == sorted(TRIALS)
    resumed = next(r for r in children if r.data.tags["diffseg3d.trial"] == KILLED)
    assert resumed.info.status == "FINISHED"
    # One run, every step logged once: the restart continued the same run at step 10.
    assert _steps(client, resumed.info.run_id, "loss") == SMOKE_LOG_STEPS
    assert _steps(client, resumed.info.run_id, "val_dice") == [10, 20]

    # Same random streams: bit-identical final parameters to the uninterrupted local run.
    local = MlflowClient(f"sqlite:///{local_run[1] / 'mlflow.db'}")
    _, local_children = _children(local, GRID_NAME)
    digests = {r.data.tags["diffseg3d.trial"]: r.data.tags["diffseg3d.params_digest"]
               for r in local_children}
    assert resumed.data.tags["diffseg3d.params_digest"] == digests[KILLED]
