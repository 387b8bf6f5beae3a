"""Run an ablation grid with Ray Tune, one Tune trial per expanded config, one MLflow run each.

`run_grid` is what `diffseg3d ablate` calls. The flow (DESIGN.md "Embedded defaults and
scale-out"):

1. Expand the grid (`grid.expand`) into named trials with resolved configs.
2. Connect to Ray: the cluster at `RAY_ADDRESS` when set, else a local Ray with the machine's
   CPUs, no dashboard, every Ray server bound to 127.0.0.1 and token authentication on (Ray
   generates the token in `~/.ray/auth_token`; see `_connect_ray`). Refuse at once, before
   any trial starts, trials that no node can ever hold (e.g. GPUs on a CPU-only cluster),
   instead of letting Tune wait forever.
3. On the driver, create the MLflow experiment (named after the grid) and the grid's parent run
   once; trials only open child runs (creating the experiment from several trials races).
4. Run the trials with `tune.Tuner` over `tune.grid_search` of the trial names; resources per
   trial from each config (`resources.trial_resources`). The Tune experiment folder is keyed
   by the expansion, `<storage>/<grid>_<expansion hash>` (storage `<out_dir>/ray_results` or
   `storage_path`, shared storage on a cluster): the same grid on another data set (or any
   other change of a trial config) gets its own folder and MLflow parent run beside the first.
   A lost trial is retried from its last checkpoint up to `max_failures` times.
5. Rerunning the same command after an interruption finds the Tune experiment of the same
   expansion (`Tuner.can_restore`) and restores it: finished trials are not rerun, unfinished
   and errored ones continue from their checkpoints, and the same MLflow parent run is reused
   (the manifest `<experiment folder>/diffseg3d_grid.json` records it). A trial whose last
   checkpoint Tune never registered (the driver was SIGKILLed right after the trial saved it)
   resumes from its working folder `<experiment folder>/<trial>/work/checkpoints/` instead
   (`trainable.train_trial`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from diffseg3d.experiments.config import ConfigError
from diffseg3d.experiments.grid import absolute_root
from diffseg3d.experiments.ray_env import forget_cached_ray_token, set_ray_env_defaults
from diffseg3d.experiments.record import TAG_FAILED_TRIALS
from diffseg3d.experiments.resources import (
    ResourceRequestError,
    check_cluster_fits,
    trial_env,
    trial_resources,
)
from diffseg3d.experiments.trainable import FAULT_KILL_TRIAL_ENV, FAULT_MARKER_DIR_ENV, train_trial

__all__ = [
    "ResourceRequestError",
    "experiment_folder_name",
    "failed_trials",
    "run_grid",
]

#: File beside Tune's experiment state that ties a Tune experiment to a grid expansion and its
#: MLflow parent run.
MANIFEST_NAME = "diffseg3d_grid.json"
#: Hex digits of the expansion hash (`grid.grid_hash`) in the Tune experiment folder's name.
EXPANSION_HASH_CHARS = 8
#: Ray reads this once, at import: "0" makes a Linux node take 127.0.0.1 as its IP, so every
#: Ray server of a local run binds to loopback (`_loopback_only`).
RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def run_grid(
    grid_path: str | os.PathLike,
    *,
    profile: str | None = "quick",
    data_override: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "runs",
    max_concurrent: int = 2,
    tracking_uri: str | None = None,
    max_failures: int = 2,
    storage_path: str | None = None,
) -> list[dict]:
    """Run (or resume) every trial of the grid at `grid_path`; one result dict per trial.

    profile: `smoke` | `quick` | `paper` (experiments/profiles), None for the grid's own values.
    data_override: a prepared data folder replacing every data set of the grid.
    out_dir: local output folder: `mlflow.db` + `mlartifacts/` (default tracking) and
        `ray_results/` (default Tune storage).
    max_concurrent: trials running at once (Ray also limits by resources).
    tracking_uri: MLflow tracking URI; default `MLFLOW_TRACKING_URI`, else
        `sqlite:///<out_dir>/mlflow.db` (absolute, so trials in other working dirs find it).
    max_failures: retries of a trial whose worker died or that raised (Tune FailureConfig).
    storage_path: Tune storage (local path, NFS mount or `s3://...`); default
        `<out_dir>/ray_results`. On a multi-node cluster it must be storage every node sees.

    Returns, in grid order, `{"trial", "hash", "status", "error", "metrics", "checkpoint"}`:
    status "ok" (final report received), "error" (raised or lost more than `max_failures`
    times; `error` is the root cause in one line) or "unfinished" (driver interrupted);
    `metrics` is the last reported dict (the test means for finished trials); `checkpoint`
    the path of its last checkpoint on Tune's storage. Failed trials are returned, not raised:
    `failed_trials` turns them into an exit status.

    Note: on a restore, Tune keeps the original run's `max_concurrent` and `max_failures`.
    """
    from diffseg3d.experiments.grid import expand, grid_hash, load_grid, resolve_grid_path
    from diffseg3d.experiments.tracking import default_tracking_uri

    if max_concurrent < 1:
        raise ValueError(f"max_concurrent={max_concurrent}: must be >= 1")
    if max_failures < 0:
        raise ValueError(f"max_failures={max_failures}: must be >= 0")

    grid_path = resolve_grid_path(grid_path)
    if data_override is not None:
        # Absolute before expansion: trials run in their own working directories, and the
        # config hash must not change when the runner resolves the path later.
        data_override = Path(data_override).resolve()
        if not data_override.is_dir():
            raise ConfigError(f"--data {data_override}: no such prepared data folder")
    grid = load_grid(grid_path)
    trials = expand(grid, profile, None if data_override is None else str(data_override))
    if not trials:
        raise ConfigError(f"{grid_path}: the grid expands to no trials")
    grid_name = _grid_name(grid, grid_path)
    expansion = grid_hash(trials)
    folder_name = experiment_folder_name(grid_name, expansion)

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tracking_uri = tracking_uri or default_tracking_uri(out)
    storage = storage_path or str(out / "ray_results")
    experiment_path = _join(storage, folder_name)

    configs = {t.name: _resolved_config_dict(t.config) for t in trials}
    requests = {name: trial_resources(cfg) for name, cfg in configs.items()}
    envs = {name: trial_env(req) for name, req in requests.items()}
    hashes = {t.name: t.hash for t in trials}

    ray = _connect_ray()
    nodes = ray.nodes()
    check_cluster_fits(requests, nodes, ray.cluster_resources())
    check_reachable_from_all_nodes(
        tracking_uri, storage, {n["NodeManagerAddress"] for n in nodes if n.get("Alive", True)}
    )

    from ray import tune

    manifest = _read_manifest(experiment_path)
    restoring = tune.Tuner.can_restore(experiment_path)
    print(f"grid {grid_name}: {'resuming' if restoring else 'starting'} {len(trials)} trials "
          f"in {experiment_path}", file=sys.stderr)

    experiment_id, parent_run_id = _parent_run(
        tracking_uri, out, grid_name, manifest if restoring else None, expansion
    )
    _write_manifest(
        experiment_path,
        {
            "grid": str(Path(grid_path).resolve()),
            "profile": profile,
            "data_override": None if data_override is None else str(Path(data_override).resolve()),
            "tracking_uri": tracking_uri,
            "experiment": grid_name,
            "experiment_id": experiment_id,
            "expansion": expansion,
            "parent_run_id": parent_run_id,
            "trials": hashes,
        },
    )

    trainable = tune.with_resources(
        tune.with_parameters(
            train_trial,
            configs=configs,
            envs=envs,
            tracking_uri=tracking_uri,
            experiment=grid_name,
            parent_run_id=parent_run_id,
            experiment_path=None if "://" in experiment_path else experiment_path,
            fault={k: os.environ[k] for k in (FAULT_KILL_TRIAL_ENV, FAULT_MARKER_DIR_ENV)
                   if k in os.environ},
        ),
        resources=lambda param: requests[param["trial"]],
    )
    if restoring:
        tuner = tune.Tuner.restore(
            experiment_path, trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.name for t in trials])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=folder_name,
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                verbose=1,
            ),
        )
    result_grid = tuner.fit()
    results = _collect(result_grid, [t.name for t in trials], hashes)
    _close_parent_run(tracking_uri, parent_run_id, results)
    return results


def experiment_folder_name(grid_name: str, expansion: str) -> str:
    """`<grid>_<first EXPANSION_HASH_CHARS of the expansion hash>`: the Tune experiment folder
    (and Tune experiment name) of one expansion of a grid."""
    return f"{grid_name}_{expansion[:EXPANSION_HASH_CHARS]}"


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


def failed_trials(results: Sequence[Mapping]) -> list[tuple[str, str]]:
    """(trial name, error) for every result of `run_grid` that did not finish."""
    return [(r["trial"], r["error"] or r["status"]) for r in results if r["status"] != "ok"]


# ---------------------------------------------------------------------------------------------
# Ray


def _connect_ray():
    """`ray` after connecting: to RAY_ADDRESS when set, else a fresh local Ray on this machine.

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
        with _loopback_only():
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
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


def _trial_name(trial) -> str:
    # Tune's default "train_trial_<id>_<n>_trial=<name>,..." hides the grid's readable name.
    return str(trial.config["trial"])


# ---------------------------------------------------------------------------------------------
# Configs and grid identity


def _grid_name(grid, grid_path) -> str:
    name = getattr(grid, "name", None)
    return str(name) if name else Path(grid_path).stem


def _resolved_config_dict(config) -> dict:
    """JSON-able config with `data.root` absolute: trials run in their own working directories."""
    data = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    root = data.get("data", {}).get("root")
    if root:
        data["data"]["root"] = absolute_root(root)
    return data


def _join(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else str(Path(storage) / name)


def _read_manifest(experiment_path: str) -> dict | None:
    if "://" in experiment_path:
        return None  # remote storage: the parent run is found through MLflow tags instead
    path = Path(experiment_path) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RuntimeError(
            f"{path}: corrupt grid manifest ({err}); delete it to start over"
        ) from None


def _write_manifest(experiment_path: str, manifest: Mapping) -> None:
    if "://" in experiment_path:
        return
    path = Path(experiment_path) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------
# MLflow parent run (driver side)


def _parent_run(tracking_uri, out, grid_name, manifest, grid_hash) -> tuple[str, str]:
    """(experiment id, parent run id): the manifest's parent when resuming a Tune experiment,
    else `tracking.start_parent_run` (which also reuses an unfinished parent of the same grid)."""
    from diffseg3d.experiments import tracking

    experiment_id = tracking.ensure_experiment(
        grid_name,
        artifact_location=tracking.default_artifact_location(out, tracking_uri),
        tracking_uri=tracking_uri,
    )
    if manifest is not None and manifest.get("parent_run_id"):
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri).update_run(manifest["parent_run_id"], status="RUNNING")
        return experiment_id, manifest["parent_run_id"]
    parent_run_id = tracking.start_parent_run(
        experiment_id, grid_name, grid_hash=grid_hash, tracking_uri=tracking_uri
    )
    return experiment_id, parent_run_id


def _close_parent_run(tracking_uri: str, run_id: str, results: Sequence[Mapping]) -> None:
    """Mark the parent FINISHED when every trial finished, FAILED otherwise."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    failures = failed_trials(results)
    client.set_tag(run_id, TAG_FAILED_TRIALS, ",".join(n for n, _ in failures) or "-")
    client.set_terminated(run_id, status="FAILED" if failures else "FINISHED")


# ---------------------------------------------------------------------------------------------
# Results


def _collect(result_grid, order: Sequence[str], hashes: Mapping[str, str]) -> list[dict]:
    by_name: dict[str, dict] = {}
    for result in result_grid:
        name = result.config["trial"]
        metrics = result.metrics or {}
        if result.error is not None:
            status, error = "error", _describe(result.error)
        elif not metrics.get("trial_done"):
            # Stopped before its final report (Ctrl-C on the driver): not a result yet.
            status, error = "unfinished", "interrupted; rerun the same command to resume it"
        else:
            status, error = "ok", None
        by_name[name] = {
            "trial": name,
            "hash": hashes.get(name),
            "status": status,
            "error": error,
            "metrics": {k: v for k, v in metrics.items() if not isinstance(v, dict)},
            "checkpoint": None if result.checkpoint is None else result.checkpoint.path,
        }
    missing = [n for n in order if n not in by_name]
    for name in missing:
        by_name[name] = {
            "trial": name, "hash": hashes.get(name), "status": "error",
            "error": "trial never ran (missing from the Tune results)", "metrics": {},
            "checkpoint": None,
        }
    return [by_name[n] for n in order]


def _describe(error: BaseException) -> str:
    """One-line error: the root cause's type and message (Tune wraps it in RayTaskError)."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    last = next((line for line in reversed(text) if line.strip()), "")
    return f"{type(cause).__name__}: {last}"[:500]
