"""Trial resource requests, the 'can any node ever hold it' check and the trial's JAX env;
the TPU requests on a real two-node loopback Ray cluster whose second node advertises TPU chips."""

import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from diffseg3d.experiments.cluster.environment import forget_cached_ray_token
from diffseg3d.experiments.cluster.resources import (
    ResourceRequestError,
    check_cluster_fits,
    node_resources,
    trial_env,
    trial_resources,
)
from diffseg3d.experiments.cluster.runner import run_grid
from diffseg3d.experiments.cluster.trainable import (
    FAULT_KILL_TRIAL_ENV,
    FAULT_MARKER_DIR_ENV,
    apply_env,
    fault_should_fire,
)
from diffseg3d.experiments.config.accelerators import TPU_CHIP_COUNTS
from diffseg3d.experiments.config.layering import PROFILES_DIR, load_profile
from diffseg3d.experiments.config.schema import validate_config

CPU_NODE = {"Alive": True, "Resources": {"CPU": 2.0, "memory": 1e9}}
GPU_NODE = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}}
DEAD_GPU_NODE = {"Alive": False, "Resources": {"CPU": 96.0, "GPU": 8.0}}
BIN = Path(sys.executable).parent
TPU_NODE = {"Alive": True, "Resources": {"CPU": 240.0, "TPU": 4.0, "TPU-v4-8-head": 1.0}}


def test_request_comes_from_the_resources_section():
    gpu = {"resources": {"cpus_per_trial": 4, "accelerator": "gpu", "accelerators_per_trial": 0.5}}
    assert trial_resources(gpu) == {"cpu": 4.0, "gpu": 0.5}
    tpu = {"resources": {"accelerator": "tpu", "accelerators_per_trial": 8}}
    assert trial_resources(tpu) == {"cpu": 1.0, "TPU": 8.0}
    assert trial_resources({"resources": {"accelerator": "tpu"}}) == {"cpu": 1.0, "TPU": 1.0}
    assert trial_resources({"resources": {"accelerator": "gpu"}}) == {"cpu": 1.0, "gpu": 1.0}
    assert trial_resources({}) == {"cpu": 1.0}
    # Configs written before `accelerator` existed keep their meaning.
    assert trial_resources({"resources": {"gpus_per_trial": 2}}) == {"cpu": 1.0, "gpu": 2.0}
    assert trial_resources({"resources": {"gpus_per_trial": 0}}) == {"cpu": 1.0}


def test_node_resources_use_rays_names():
    assert node_resources({"cpu": 4.0, "gpu": 1.0}) == {"CPU": 4.0, "GPU": 1.0}
    assert node_resources({"cpu": 4.0, "TPU": 4.0}) == {"CPU": 4.0, "TPU": 4.0}


def test_tpu_sizes_are_the_ones_ray_accepts():
    from ray._private.accelerators.tpu import TPU_VALID_CHIP_OPTIONS

    assert TPU_CHIP_COUNTS == tuple(TPU_VALID_CHIP_OPTIONS)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"accelerator": "gpu", "accelerators_per_trial": 1.5},
         "resources.accelerators_per_trial=1.5: GPU fractions must be < 1"),
        ({"accelerator": "tpu", "accelerators_per_trial": 3},
         "resources.accelerators_per_trial=3 with resources.accelerator=tpu: Ray accepts "
         "(1, 2, 4, 8)"),
        ({"accelerator": "tpu", "accelerators_per_trial": 0.5},
         "resources.accelerators_per_trial=0.5 with resources.accelerator=tpu"),
        ({"accelerator": "cpu", "accelerators_per_trial": 1},
         "resources.accelerators_per_trial=1 with resources.accelerator=cpu"),
        ({"accelerator": "tpu", "accelerators_per_trial": 0}, "accelerators_per_trial"),
        ({"accelerator": "npu"}, "accelerator"),
        ({"cpus_per_trial": -1}, "cpus_per_trial"),
        ({"accelerator": "gpu", "accelerators_per_trial": "one"}, "accelerators_per_trial"),
        ({"gpus_per_trial": 1, "accelerator": "cpu"}, "gpus_per_trial (legacy)"),
    ],
)
def test_bad_requests_name_the_key_and_value(section, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        trial_resources({"resources": section})


def test_cpu_trials_fit_a_cpu_node():
    check_cluster_fits({"a": {"cpu": 1}}, [CPU_NODE], {"CPU": 2.0})


def test_gpu_trial_on_cpu_only_cluster_names_request_and_cluster():
    with pytest.raises(ResourceRequestError) as err:
        check_cluster_fits(
            {"amos_unet": {"cpu": 1, "gpu": 1}, "cpu_ok": {"cpu": 1}},
            [CPU_NODE],
            {"CPU": 2.0, "memory": 1e9},
        )
    text = str(err.value)
    assert "amos_unet: {'cpu': 1, 'gpu': 1}" in text
    assert "cpu_ok" not in text
    assert "0 GPUs" in text and "'CPU': 2.0" in text
    assert "add GPU nodes" in text and "TPU hosts" not in text


def test_tpu_trials_need_a_node_with_enough_chips():
    nodes = [CPU_NODE, TPU_NODE, TPU_NODE]
    check_cluster_fits({"t": {"cpu": 4, "TPU": 4}, "c": {"cpu": 2}}, nodes, {"TPU": 8.0})
    # Two 4-chip hosts are 8 chips in the cluster, but one trial runs on one host.
    with pytest.raises(ResourceRequestError) as err:
        check_cluster_fits({"big": {"cpu": 1, "TPU": 8}}, nodes, {"TPU": 8.0})
    text = str(err.value)
    assert "big: {'cpu': 1, 'TPU': 8}" in text and "4 TPUs" in text
    assert "add TPU hosts" in text and "GPU nodes" not in text
    # A TPU trial does not fit on a GPU node, a GPU trial not on a TPU host.
    with pytest.raises(ResourceRequestError, match=r"g: \{'cpu': 1, 'gpu': 1\}"):
        check_cluster_fits({"g": {"cpu": 1, "gpu": 1}, "t": {"cpu": 1, "TPU": 4}}, nodes, {})
    with pytest.raises(ResourceRequestError, match=r"t: \{'cpu': 1, 'TPU': 1\}"):
        check_cluster_fits({"t": {"cpu": 1, "TPU": 1}}, [GPU_NODE], {})


def test_a_trial_must_fit_on_one_node_not_the_sum():
    # Two nodes with 2 GPUs each give the cluster 4 GPUs, but no single actor can hold 4.
    nodes = [GPU_NODE, GPU_NODE]
    check_cluster_fits({"t": {"cpu": 8, "gpu": 2}}, nodes, {"GPU": 4.0})
    with pytest.raises(ResourceRequestError, match="t: {'cpu': 1, 'gpu': 4}"):
        check_cluster_fits({"t": {"cpu": 1, "gpu": 4}}, nodes, {"GPU": 4.0})
    with pytest.raises(ResourceRequestError, match="8 CPUs"):
        check_cluster_fits({"t": {"cpu": 9}}, nodes, {"CPU": 16.0})


def test_dead_nodes_do_not_count():
    with pytest.raises(ResourceRequestError, match="2 GPUs"):
        check_cluster_fits({"t": {"cpu": 1, "gpu": 8}}, [GPU_NODE, DEAD_GPU_NODE], {})


def test_fractional_gpu_caps_jax_memory_and_cpu_trials_stay_on_cpu():
    assert trial_env({"cpu": 1, "gpu": 0.5}) == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.450"}
    assert trial_env({"cpu": 1, "gpu": 0.25}) == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.225"}
    assert trial_env({"cpu": 1, "gpu": 1}) == {}
    assert trial_env({"cpu": 1}) == {"JAX_PLATFORMS": "cpu"}
    assert trial_env({"cpu": 1}, intra_trial_threads=False) == {
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
    }
    # TPU trials leave JAX free to find the chips Ray made visible (TPU_VISIBLE_CHIPS).
    assert trial_env({"cpu": 4, "TPU": 4}) == {}


def test_paper_tpu_profile_is_the_paper_profile_on_tpu():
    paper, tpu = load_profile("paper"), load_profile("paper_tpu")

    def shared(profile):
        train = {k: v for k, v in profile["train"].items() if k != "grad_accum_steps"}
        model = {k: v for k, v in profile["model"].items() if k != "remat"}
        evaluation = {k: v for k, v in profile["eval"].items() if k != "batch_size"}
        return {**{k: v for k, v in profile.items() if k != "resources"}, "train": train,
                "model": model, "eval": evaluation}

    assert shared(paper) == shared(tpu), (
        "paper_tpu.yaml must mirror every setting of paper.yaml except `resources`, "
        "train.grad_accum_steps, model.remat and eval.batch_size")
    assert paper["model"]["compute_dtype"] == "bfloat16" and paper["model"]["conv_impl"] == "auto"
    assert tpu["resources"]["cpus_per_trial"] == paper["resources"]["cpus_per_trial"]
    # The paper's batch of 8 splits evenly over the chips of every size a TPU trial can ask for.
    chips = trial_resources(tpu)["TPU"]
    assert paper["data"]["batch_size"] % chips == 0 and 8 % chips == 0
    # The GPU trains the batch of 8 in one pass (its memory plan: paper.yaml's header), the TPU
    # host one volume per chip per microbatch (2 microbatches of 4 on 4 chips).
    gpus = trial_resources(paper)["gpu"]
    assert gpus == 1 and paper["train"]["grad_accum_steps"] == 1
    assert paper["data"]["batch_size"] // tpu["train"]["grad_accum_steps"] == chips
    # Evaluation: the GPU samples the batch of 8 at once, the TPU host one volume per chip.
    assert "batch_size" not in paper["eval"] and tpu["eval"]["batch_size"] == chips


@pytest.mark.parametrize("name", ["paper", "paper_tpu", "quick", "smoke"])
def test_profiles_quote_the_request_they_make(name):
    """A profile comment that states Ray's request must state the one `trial_resources` makes."""
    path = PROFILES_DIR / f"{name}.yaml"
    config = validate_config(load_profile(name), source=str(path)).model_dump(mode="json")
    request = repr(trial_resources(config))
    quoted = re.findall(r"\{'cpu': [^}]*\}", path.read_text())
    assert all(q == request for q in quoted if "TPU" not in q or "TPU" in request), (
        quoted, request
    )
    if name.startswith("paper"):
        assert request in path.read_text()


def test_apply_env_appends_xla_flags(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_onednn=true")
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    env = {
        "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": ".4",
    }
    apply_env(env)
    apply_env(env)  # idempotent: a restarted trial in a reused process adds nothing twice
    assert os.environ["XLA_FLAGS"] == (
        "--xla_cpu_use_onednn=true --xla_cpu_multi_thread_eigen=false"
    )
    assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == ".4"


def test_fault_hook_fires_once_per_named_trial(tmp_path):
    fault = {FAULT_KILL_TRIAL_ENV: "b", FAULT_MARKER_DIR_ENV: str(tmp_path)}
    assert fault_should_fire("a", fault) is None
    marker = fault_should_fire("b", fault)
    assert marker == tmp_path / "b.killed"
    marker.write_text("x")
    assert fault_should_fire("b", fault) is None
    assert fault_should_fire("a", {FAULT_KILL_TRIAL_ENV: "*", FAULT_MARKER_DIR_ENV: str(tmp_path)})
    assert fault_should_fire("a", {FAULT_KILL_TRIAL_ENV: "*"}) is None  # no marker dir: off


def test_multi_host_cluster_refuses_a_driver_local_mlflow_store():
    from diffseg3d.experiments.cluster.connection import check_reachable_from_all_nodes
    from diffseg3d.experiments.config.errors import ConfigError

    one_host, two_hosts = {"10.0.0.1"}, {"10.0.0.1", "10.0.0.2"}
    for uri in ("sqlite:////runs/mlflow.db", "http://127.0.0.1:5000", "/runs/mlruns"):
        check_reachable_from_all_nodes(uri, "/runs/ray_results", one_host)  # one host: fine
        with pytest.raises(ConfigError, match="spans 2 hosts"):
            check_reachable_from_all_nodes(uri, "/runs/ray_results", two_hosts)
    check_reachable_from_all_nodes("http://10.0.0.1:5000", "/mnt/shared/ray_results", two_hosts)


# ---------------------------------------------------------------------------------------------
# TPU requests on a real two-node loopback Ray cluster: a head without accelerators and a
# worker advertising `--resources '{"TPU": 4}'` (and no GPU), as a TPU VM host does. Token auth
# on every node, as in the cluster files. The trials run the real runner path (run_grid).


def _tpu_grid(path: Path, name: str, accelerators: tuple[str, str], chips: int) -> Path:
    """Two smoke-size trials (recycling off/on); trial i asks for `accelerators[i]`."""
    smoke = load_profile("smoke")
    base = {
        **{k: smoke[k] for k in ("data", "model", "optim", "eval")},
        "method": "diffusion",
        "train": {"steps": 4, "log_every": 2, "checkpoint_every": 4, "eval_every": 4},
        "resources": {"accelerators_per_trial": chips, "cpus_per_trial": 1},
    }
    comparisons = [
        {"table": "1", "axes": {"diffusion.recycling": [recycle],
                                "resources.accelerator": [accelerator]}}
        for recycle, accelerator in zip((False, True), accelerators, strict=True)
    ]
    path.write_text(yaml.safe_dump({
        "name": name, "seeds": [0], "data_sets": {"phantom": "replaced-by-data-override"},
        "base": base, "comparisons": comparisons,
    }))
    return path


@pytest.fixture(scope="module")
def tpu_workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tpu")


@pytest.fixture(scope="module")
def tpu_phantom(tpu_workspace) -> Path:
    from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

    return make_phantom(tpu_workspace / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8)))


@pytest.fixture(scope="module")
def tpu_cluster(tpu_workspace):
    """Head (1 CPU) + TPU worker (2 CPUs, TPU 4, no GPU) on 127.0.0.1 with token auth; this
    process connected to it (RAY_ADDRESS and the token in os.environ). Yields the TPU node id."""
    from tests.experiments.cluster.test_runner_ray import (
        _free_port,
        _node_args,
        _port_open,
        _spawn,
        _stop,
        _wait,
    )

    token = tpu_workspace / "ray_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **auth}
    env.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="dst", dir="/tmp")
    logs = tpu_workspace / "logs"
    logs.mkdir()
    port = _free_port()
    address = f"127.0.0.1:{port}"
    procs = []
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", *auth)}
    try:
        head = _spawn([str(BIN / "ray"), "start", "--head", "--port", str(port), "--temp-dir",
                       temp_dir, "--include-dashboard", "false", *_node_args()],
                      logs / "head.log", env)
        procs.append(head)
        _wait(lambda: _port_open(port), "ray head", [head], [logs / "head.log"])
        worker = _spawn([str(BIN / "ray"), "start", "--address", address, *_node_args(),
                         "--num-cpus", "2", "--resources", json.dumps({"TPU": 4})],
                        logs / "worker.log", env)
        procs.append(worker)
        os.environ.update(RAY_ADDRESS=address, **auth)
        forget_cached_ray_token()  # Ray read RAY_AUTH_MODE once already: make it read "token"
        import ray

        ray.init(address=address, logging_level="ERROR")

        def tpu_node() -> str | None:
            alive = [n for n in ray.nodes() if n["Alive"]]
            tpu = [n["NodeID"] for n in alive if n["Resources"].get("TPU")]
            return tpu[0] if len(alive) == 2 and tpu else None

        _wait(lambda: tpu_node() is not None, "TPU worker node", procs,
              [logs / "head.log", logs / "worker.log"])
        yield tpu_node()
    finally:
        import ray

        ray.shutdown()
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        forget_cached_ray_token()


def _nothing_written(out: Path, grid: str) -> bool:
    return not list((out / "ray_results").glob(f"{grid}*")) and not (out / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tpu_trials_run_on_the_tpu_node_only(tpu_workspace, tpu_phantom, tpu_cluster):
    import ray
    from ray._private.state import actors

    grid = _tpu_grid(tpu_workspace / "tpu.yaml", "tpu_grid", ("tpu", "tpu"), 2)
    results = run_grid(grid, profile=None, data_override=tpu_phantom,
                       out_dir=tpu_workspace / "tpu_out", max_concurrent=2)
    assert [r["status"] for r in results] == ["ok", "ok"], results
    # Each trial's worker process (the pid Tune reports) was an actor on the TPU node.
    pids = {r["metrics"]["pid"] for r in results}
    placed = {a["Pid"]: a["Address"]["NodeID"] for a in actors().values() if a["Pid"] in pids}
    assert set(placed) == pids, (pids, placed)
    assert set(placed.values()) == {tpu_cluster}
    head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and not n["Resources"].get("TPU"))
    assert head != tpu_cluster


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_tpu_request_larger_than_any_node_fails_at_once(tpu_workspace, tpu_phantom, tpu_cluster):
    grid = _tpu_grid(tpu_workspace / "tpu8.yaml", "tpu8_grid", ("tpu", "tpu"), 8)
    out = tpu_workspace / "tpu8_out"
    # Refused, not left pending: a pending trial would block run_grid until the test's timeout;
    # raising at all, with no Tune experiment or MLflow store written, is the check (no clock:
    # a loaded machine may take long to refuse).
    with pytest.raises(ResourceRequestError) as err:
        run_grid(grid, profile=None, data_override=tpu_phantom, out_dir=out)
    text = str(err.value)
    assert "phantom_diffusion_x0_recycle-N_dice-Y_k5_s0: {'cpu': 1.0, 'TPU': 8.0}" in text
    assert "4 TPUs" in text and "'TPU': 4.0" in text and "add TPU hosts" in text
    assert _nothing_written(out, "tpu8_grid")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_mixed_grid_refuses_the_gpu_trials_by_name(tpu_workspace, tpu_phantom, tpu_cluster):
    grid = _tpu_grid(tpu_workspace / "mixed.yaml", "mixed_grid", ("gpu", "tpu"), 2)
    out = tpu_workspace / "mixed_out"
    with pytest.raises(ResourceRequestError) as err:
        run_grid(grid, profile=None, data_override=tpu_phantom, out_dir=out)
    text = str(err.value)
    assert "phantom_diffusion_x0_recycle-N_dice-Y_k5_s0: {'cpu': 1.0, 'gpu': 2.0}" in text
    assert "recycle-Y" not in text  # the TPU trial fits the TPU node
    assert "0 GPUs" in text and "add GPU nodes" in text
    assert _nothing_written(out, "mixed_grid")
