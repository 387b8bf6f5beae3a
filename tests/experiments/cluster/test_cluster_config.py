"""ray_cluster.yaml is a valid Ray cluster-launcher file that builds what the README promises."""

import shlex
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[3]
CLUSTER_YAML = REPO / "ray_cluster.yaml"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _commands(cluster: dict, key: str) -> str:
    return "\n".join(cluster.get(key) or [])


def test_passes_rays_own_launcher_schema(cluster):
    # Ray's launcher fills its provider defaults and validates against ray-schema.json: the
    # same checks `ray up` runs before touching the cloud (unknown keys, types, min/max).
    validate_config(prepare_config(cluster))


def test_head_runs_the_mlflow_server_on_all_interfaces(cluster):
    head = _commands(cluster, "head_start_ray_commands")
    server = next(c for c in cluster["head_start_ray_commands"] if "bin/mlflow server" in c)
    args = shlex.split(server.split("bin/mlflow server", 1)[1].split(">", 1)[0])
    opts = dict(zip(args[::2], args[1::2], strict=True))
    # PostgreSQL on the head (SQLite locks under concurrent trials); no password in the URI.
    assert opts["--backend-store-uri"] == "postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow"
    setup = _commands(cluster, "head_setup_commands")
    assert "createdb -O mlflow mlflow" in setup and "~/.pgpass" in setup
    assert opts["--artifacts-destination"].startswith("/mnt/shared/")
    assert opts["--host"] == "0.0.0.0"
    assert "ray start --head" in head
    # Trials on workers log over HTTP to the head's address, never to a localhost URI.
    assert "hostname -I" in _commands(cluster, "head_setup_commands")


def test_gpu_worker_types_scale_between_min_and_max(cluster):
    types = cluster["available_node_types"]
    head = cluster["head_node_type"]
    workers = {name: t for name, t in types.items() if name != head}
    assert workers, "no worker node types"
    gpu_instances = ("p4d", "p4de", "p5", "g5", "g6", "g6e")
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"], name
        assert t["node_config"]["InstanceType"].split(".")[0] in gpu_instances, name
    # At least one GPU node is always up so `ablate` sees GPUs at once (the runner refuses
    # trials no node can hold rather than waiting).
    assert sum(t["min_workers"] for t in workers.values()) >= 1
    assert sum(t["max_workers"] for t in workers.values()) <= cluster["max_workers"]
    assert types[head]["resources"] == {"CPU": 0}


def test_setup_installs_this_package_from_the_synced_repo(cluster):
    mounts = cluster["file_mounts"]
    synced = [remote for remote, local in mounts.items() if local in (".", "./")]
    assert synced, "the repository is not synced to the nodes"
    setup = _commands(cluster, "setup_commands")
    assert f"cd {synced[0].replace('/home/ubuntu', '~')} &&" in setup
    assert "pip install" in setup and " -e " in setup
    assert "ray[tune]" in (REPO / "pyproject.toml").read_text()  # Ray comes with the package
    assert "jax[cuda12]" in setup


def test_every_node_mounts_the_shared_storage_for_tune_results(cluster):
    init = _commands(cluster, "initialization_commands")
    assert "mount -t nfs4" in init and "/mnt/shared" in init
    assert "/mnt/shared/ray_results" in init
    assert "$RAY_HEAD_IP:6379" in _commands(cluster, "worker_start_ray_commands")
