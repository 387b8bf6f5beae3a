"""Connecting the driver to Ray: the cluster at RAY_ADDRESS, or a local Ray reachable from this
machine only; and refusing an MLflow store that the nodes of a multi-host cluster cannot reach.
"""

from __future__ import annotations

import contextlib
import os

from diffseg3d.experiments.cluster.environment import forget_cached_ray_token, set_ray_env_defaults
from diffseg3d.experiments.config.errors import ConfigError

#: Ray reads this once, at import: "0" makes a Linux node take 127.0.0.1 as its IP, so every
#: Ray server of a local run binds to loopback (`_loopback_only`).
RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def connect_ray():
    """`ray` after connecting: to RAY_ADDRESS when set, else a fresh local Ray on this machine
    (never another Ray already running here, e.g. a `ray start --head` of someone else).

    A local Ray is reachable from this machine only: no dashboard, every server (GCS, raylet,
    object manager, runtime-env agent, driver and worker gRPC) bound to 127.0.0.1
    (`_loopback_only`), and token authentication on unless the user exported
    RAY_AUTH_MODE=disabled (Ray generates `~/.ray/auth_token` on first use, or reads
    RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH).
    """
    set_ray_env_defaults()
    import ray

    if ray.is_initialized():
        return ray
    forget_cached_ray_token()
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # RAY_AUTH_MODE unset: Ray turns token authentication on for a cluster it starts
        # (and tells its own already-imported config so); setting the variable here instead
        # would leave this driver's cached config without auth, and the GCS would refuse it.
        # address="local": always a new Ray. Without it Ray joins the machine's latest
        # `ray start` cluster (its address file in Ray's temp folder) when there is one.
        with _loopback_only():
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False)
    return ray


@contextlib.contextmanager
def _loopback_only():
    """While a local Ray starts: make Ray take 127.0.0.1 as this node's IP.

    `ray.init(_node_ip_address="127.0.0.1")` is not enough: Ray replaces a loopback address by
    the host's LAN address (`services.resolve_ip_for_localhost`) and then binds its gRPC servers
    to the wildcard address. With `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` Ray keeps 127.0.0.1 and
    binds every server to it. The processes started now (GCS, raylet, and through the raylet
    the agents and workers) inherit the variable; Ray's already-imported constant is set too,
    as it was read at import. Both are put back afterwards: on Linux the same setting makes
    `ray start --address` refuse to add a node, which later `ray start` commands of this
    process (tests, notebooks) may need.
    """
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(RAY_CLUSTER_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[RAY_CLUSTER_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(RAY_CLUSTER_ENV, None)
        else:
            os.environ[RAY_CLUSTER_ENV] = saved_env


def check_reachable_from_all_nodes(tracking_uri: str, storage: str, node_ips: set[str]) -> None:
    """On a cluster whose nodes are different hosts, refuse a tracking URI or Tune storage that
    only the driver's host can reach (SQLite/file store, localhost server, local folder would
    make trials on other hosts log into their own private copies or fail mid-run).

    Local paths are accepted when the storage is a mount every node shares; the driver cannot
    tell, so only the MLflow URI is checked strictly and storage gets a hint in the message.
    """
    if len(node_ips) <= 1:
        return
    local_store = tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri
    localhost = any(h in tracking_uri for h in ("://127.0.0.1", "://localhost", "://0.0.0.0"))
    if local_store or localhost:
        raise ConfigError(
            f"MLflow tracking URI {tracking_uri!r} is local to the driver, but the Ray cluster "
            f"spans {len(node_ips)} hosts ({', '.join(sorted(node_ips))}). Run `mlflow server "
            "--host 0.0.0.0` on the head node and set MLFLOW_TRACKING_URI=http://<head ip>:5000 "
            f"(ray_cluster.yaml does this); Tune storage {storage!r} must likewise be shared "
            "(NFS/EFS mount or s3://)."
        )
