"""Trial resource requests, the 'can any node ever hold it' check and the trial's JAX env."""

import os

import pytest
from diffseg3d.experiments.resources import (
    ResourceRequestError,
    check_cluster_fits,
    trial_env,
    trial_resources,
)
from diffseg3d.experiments.trainable import (
    FAULT_KILL_TRIAL_ENV,
    FAULT_MARKER_DIR_ENV,
    apply_env,
    fault_should_fire,
)

CPU_NODE = {"Alive": True, "Resources": {"CPU": 2.0, "memory": 1e9}}
GPU_NODE = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}}
DEAD_GPU_NODE = {"Alive": False, "Resources": {"CPU": 96.0, "GPU": 8.0}}


def test_request_comes_from_the_resources_section():
    cfg = {"resources": {"cpus_per_trial": 4, "gpus_per_trial": 0.5}}
    assert trial_resources(cfg) == {"cpu": 4.0, "gpu": 0.5}
    assert trial_resources({}) == {"cpu": 1.0, "gpu": 0.0}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"gpus_per_trial": 1.5}, "resources.gpus_per_trial=1.5"),
        ({"cpus_per_trial": -1}, "resources.cpus_per_trial=-1"),
        ({"gpus_per_trial": "one"}, "resources.gpus_per_trial='one'"),
        ({"gpus_per_trial": True}, "resources.gpus_per_trial=True"),
    ],
)
def test_bad_requests_name_the_key_and_value(section, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        trial_resources({"resources": section})


def test_cpu_trials_fit_a_cpu_node():
    check_cluster_fits({"a": {"cpu": 1, "gpu": 0}}, [CPU_NODE], {"CPU": 2.0})


def test_gpu_trial_on_cpu_only_cluster_names_request_and_cluster():
    with pytest.raises(ResourceRequestError) as err:
        check_cluster_fits(
            {"amos_unet": {"cpu": 1, "gpu": 1}, "cpu_ok": {"cpu": 1, "gpu": 0}},
            [CPU_NODE],
            {"CPU": 2.0, "memory": 1e9},
        )
    text = str(err.value)
    assert "amos_unet: {'cpu': 1, 'gpu': 1}" in text
    assert "cpu_ok" not in text
    assert "0 GPUs" in text and "'CPU': 2.0" in text


def test_a_trial_must_fit_on_one_node_not_the_sum():
    # Two nodes with 2 GPUs each give the cluster 4 GPUs, but no single actor can hold 4.
    nodes = [GPU_NODE, GPU_NODE]
    check_cluster_fits({"t": {"cpu": 8, "gpu": 2}}, nodes, {"GPU": 4.0})
    with pytest.raises(ResourceRequestError, match="t: {'cpu': 1, 'gpu': 4}"):
        check_cluster_fits({"t": {"cpu": 1, "gpu": 4}}, nodes, {"GPU": 4.0})
    with pytest.raises(ResourceRequestError, match="8 CPUs"):
        check_cluster_fits({"t": {"cpu": 9, "gpu": 0}}, nodes, {"CPU": 16.0})


def test_dead_nodes_do_not_count():
    with pytest.raises(ResourceRequestError, match="2 GPUs"):
        check_cluster_fits({"t": {"cpu": 1, "gpu": 8}}, [GPU_NODE, DEAD_GPU_NODE], {})


def test_fractional_gpu_caps_jax_memory_and_cpu_trials_stay_on_cpu():
    assert trial_env({"cpu": 1, "gpu": 0.5}) == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.450"}
    assert trial_env({"cpu": 1, "gpu": 0.25}) == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.225"}
    assert trial_env({"cpu": 1, "gpu": 1}) == {}
    assert trial_env({"cpu": 1, "gpu": 0}) == {"JAX_PLATFORMS": "cpu"}
    assert trial_env({"cpu": 1, "gpu": 0}, intra_trial_threads=False) == {
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
    }


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
    from diffseg3d.experiments.config import ConfigError
    from diffseg3d.experiments.runner import check_reachable_from_all_nodes

    one_host, two_hosts = {"10.0.0.1"}, {"10.0.0.1", "10.0.0.2"}
    for uri in ("sqlite:////runs/mlflow.db", "http://127.0.0.1:5000", "/runs/mlruns"):
        check_reachable_from_all_nodes(uri, "/runs/ray_results", one_host)  # one host: fine
        with pytest.raises(ConfigError, match="spans 2 hosts"):
            check_reachable_from_all_nodes(uri, "/runs/ray_results", two_hosts)
    check_reachable_from_all_nodes("http://10.0.0.1:5000", "/mnt/shared/ray_results", two_hosts)
