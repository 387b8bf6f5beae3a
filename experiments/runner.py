"""Run an ablation grid with Ray Tune, one Tune trial per expanded config, one MLflow run each.

`run_grid` is what `diffseg3d ablate` calls. The flow (DESIGN.md "Embedded defaults and
scale-out"):

1. Expand the grid (`grid.expand`) into named trials with resolved configs.
2. Connect to Ray: the cluster at `RAY_ADDRESS` when set, else a local Ray with the machine's
   CPUs and no dashboard. Refuse at once, before any trial starts, trials that no node can
   ever hold (e.g. GPUs on a CPU-only cluster), instead of letting Tune wait forever.
3. On the driver, create the MLflow experiment (named after the grid) and the grid's parent run
   once; trials only open child runs (creating the experiment from several trials races).
4. Run the trials with `tune.Tuner` over `tune.grid_search` of the trial names; resources per
   trial from each config (`resources.trial_resources`). Checkpoints go to Tune's storage
   (`<out_dir>/ray_results/<grid>` or `storage_path`, shared storage on a cluster) and a lost
   trial is retried from its last checkpoint up to `max_failures` times.
5. Rerunning the same command after an interruption finds the Tune experiment
   (`Tuner.can_restore`) and restores it: finished trials are not rerun, unfinished and errored
   ones continue from their checkpoints, and the same MLflow parent run is reused. The grid's
   manifest (`<storage>/<grid>/diffseg3d_grid.json`, written on the driver) records the trial
   hashes and the parent run id; a rerun whose expansion differs is refused with the
   differences named rather than silently mixed into the old experiment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from diffseg3d.experiments.config import ConfigError
from diffseg3d.experiments.grid import absolute_root
from diffseg3d.experiments.ray_env import set_ray_env_defaults
from diffseg3d.experiments.record import TAG_FAILED_TRIALS
from diffseg3d.experiments.resources import (
    ResourceRequestError,
    check_cluster_fits,
    trial_env,
    trial_resources,
)
from diffseg3d.experiments.trainable import FAULT_KILL_TRIAL_ENV, FAULT_MARKER_DIR_ENV, train_trial

__all__ = [
    "GridChangedError",
    "ResourceRequestError",
    "failed_trials",
    "run_grid",
]

#: File beside Tune's experiment state that ties a Tune experiment to a grid expansion and its
#: MLflow parent run.
MANIFEST_NAME = "diffseg3d_grid.json"


class GridChangedError(ConfigError):
    """The grid expands differently from the interrupted Tune experiment it would resume
    (a `ConfigError`, so `diffseg3d ablate` reports it in one line)."""


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

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tracking_uri = tracking_uri or default_tracking_uri(out)
    storage = storage_path or str(out / "ray_results")
    experiment_path = _join(storage, grid_name)

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
    if restoring and manifest is not None:
        _check_same_grid(manifest["trials"], hashes, experiment_path)

    experiment_id, parent_run_id = _parent_run(
        tracking_uri, out, grid_name, manifest if restoring else None, grid_hash(trials)
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
                name=grid_name,
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
    """`ray` after connecting: to RAY_ADDRESS when set, else a fresh local Ray on this machine."""
    set_ray_env_defaults()
    import ray

    if ray.is_initialized():
        return ray
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    return ray


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


def _check_same_grid(old: Mapping[str, str], new: Mapping[str, str], path: str) -> None:
    if dict(old) == dict(new):
        return
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(n for n in set(old) & set(new) if old[n] != new[n])
    raise GridChangedError(
        f"{path} holds an interrupted run of a different expansion of this grid "
        f"(added: {added or '-'}; removed: {removed or '-'}; config changed: {changed or '-'}). "
        "Use another --out (or storage path), or delete that folder to start over."
    )


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
