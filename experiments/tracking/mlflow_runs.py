"""MLflow tracking: one experiment per grid, one parent run per grid, one child run per trial.

Everything goes through `MlflowClient` with explicit run ids (never the fluent global "active
run"), so several trials in one process, Ray workers and resumed trials cannot log into each
other's runs. The default store is SQLite in the output folder (`sqlite:///<out>/mlflow.db`,
artifacts under `<out>/mlartifacts`); `MLFLOW_TRACKING_URI` overrides it, e.g. a `mlflow server`
on a cluster's head node (`http://head:5000`), whose own artifact store is then used.

Tag names, artifact names and the param codec are the run record's (`record`): a trial's run
carries `TAG_PARENT` (MLflow nests on it), `TAG_TRIAL`, `TAG_CONFIG_HASH`, `TAG_TABLES`,
`TAG_KIND` and the axis tags of `trial_axes`; a parent run carries `TAG_GRID`, `TAG_GRID_HASH`
and `TAG_KIND`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from pathlib import Path

from diffseg3d.experiments.config.schema import Config, config_hash
from diffseg3d.experiments.tracking.record import (
    KIND_GRID,
    KIND_TRIAL,
    TAG_CONFIG_HASH,
    TAG_GRID,
    TAG_GRID_HASH,
    TAG_KIND,
    TAG_OVERRIDDEN,
    TAG_PARENT,
    TAG_SUPERSEDED_BY,
    TAG_TABLES,
    TAG_TRIAL,
    flatten,
)
from diffseg3d.experiments.tracking.retry import is_transient, with_retries
from diffseg3d.experiments.tracking.trial_axes import axis_tags
from diffseg3d.experiments.tracking.ui_view import mark_experiment

# MLflow's telemetry thread removes its session variable from os.environ while a request may be
# reading it (a KeyError seen once in benchmarks.mlflow_load under 16 concurrent loggers); the
# machines this runs on often have no outside network anyway. Set before MLflow is imported; a
# value the user exported wins.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

#: MLflow's per-request limits for `log_batch`.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100


def default_tracking_uri(out_dir: str | os.PathLike) -> str:
    """`MLFLOW_TRACKING_URI` when set, else `sqlite:///<abs out_dir>/mlflow.db`."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"


def default_artifact_location(out_dir: str | os.PathLike, tracking_uri: str) -> str | None:
    """Artifact root for a new experiment: `<out>/mlartifacts` for a local (SQLite/file) store,
    None (the server's own artifact store) for a tracking server."""
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    return (Path(out_dir).resolve() / "mlartifacts").as_uri()


def client_for(tracking_uri: str | None) -> MlflowClient:
    """An `MlflowClient` on `tracking_uri` (None: MLflow's own default resolution)."""
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(
    name: str, artifact_location: str | None = None, tracking_uri: str | None = None
) -> str:
    """Id of experiment `name`, created if absent, and marked as a model training experiment
    with the trial comparison view (`ui_view.mark_experiment`; an existing experiment, e.g. of
    an older store, is marked too). Call once on the driver before trials start: concurrent
    creation races in the store (the loser re-reads the winner's experiment)."""
    client = client_for(tracking_uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            client.restore_experiment(existing.experiment_id)
        experiment_id = existing.experiment_id
    else:
        try:
            experiment_id = client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:
            existing = client.get_experiment_by_name(name)
            if existing is None:
                raise
            experiment_id = existing.experiment_id
    _retried(mark_experiment, client, experiment_id)
    return experiment_id


def _experiment_id(client: MlflowClient, experiment: str) -> str:
    """`experiment` is an id or a name; returns the id (the experiment must exist)."""
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    try:
        return client.get_experiment(experiment).experiment_id
    except MlflowException:
        raise ValueError(
            f"MLflow experiment {experiment!r} does not exist at {client.tracking_uri}; "
            "create it with ensure_experiment first"
        ) from None


def start_parent_run(
    experiment: str,
    grid_name: str,
    *,
    grid_hash: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Run id of the grid's parent run. An unfinished parent run of the same grid (same
    `grid_hash`) is reused, so rerunning an interrupted `diffseg3d ablate` nests its trials under
    the same parent; otherwise a new one is created."""
    client = client_for(tracking_uri)
    exp_id = _experiment_id(client, experiment)
    if grid_hash is not None:
        runs = client.search_runs(
            [exp_id],
            filter_string=(
                f"tags.`{TAG_GRID_HASH}` = '{grid_hash}' and tags.`{TAG_KIND}` = '{KIND_GRID}'"
            ),
            order_by=["attributes.start_time DESC"],
        )
        for run in runs:
            if run.info.status != RunStatus.to_string(RunStatus.FINISHED):
                client.update_run(run.info.run_id, status="RUNNING")
                return run.info.run_id
    tags = {TAG_GRID: grid_name, TAG_KIND: KIND_GRID}
    if grid_hash is not None:
        tags[TAG_GRID_HASH] = grid_hash
    run = client.create_run(exp_id, tags=tags, run_name=grid_name)
    return run.info.run_id


def _retried(fn, /, *args, **kwargs):
    """`fn(*args, **kwargs)`, repeated on transient store errors (`retry.with_retries`): many
    trials write to one store at once, and a locked SQLite file or a restarting server must not
    fail a trial."""
    return with_retries(lambda: fn(*args, **kwargs))


#: How SQLite and PostgreSQL word the unique-constraint conflict of two concurrent inserts.
_UNIQUE_CONFLICT_TEXT = ("unique constraint failed", "duplicate key value violates unique")


def _transient_or_dataset_race(err: BaseException) -> bool:
    """`is_transient`, or the unique-constraint conflict of two trials logging one data set."""
    return is_transient(err) or any(t in str(err).lower() for t in _UNIQUE_CONFLICT_TEXT)


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _unfinished_runs(
    client: MlflowClient, exp_id: str, parent_run_id: str, trial: str, chash: str
) -> list:
    """Active, not FINISHED runs of `trial` (same config hash) under `parent_run_id`."""
    runs = client.search_runs(
        [exp_id],
        filter_string=(
            f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.`{TAG_TRIAL}` = '{trial}' "
            f"and tags.`{TAG_CONFIG_HASH}` = '{chash}'"
        ),
    )
    finished = RunStatus.to_string(RunStatus.FINISHED)
    return [r for r in runs if r.info.status != finished]


class TrialRun:
    """The MLflow run of one trial; open it with `start` (new run) or `reopen` (resumed trial).

    Exactly one run per trial: a resumed trial stores `run_id` in its checkpoint (`trial.json`)
    and reopens it instead of starting a new one.
    """

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id

    @classmethod
    def start(
        cls,
        config: Config,
        *,
        experiment: str,
        tracking_uri: str | None = None,
        parent_run_id: str | None = None,
    ) -> TrialRun:
        """A new child run for `config` (named `config.name`) with params = `flatten(config)`.

        A trial that starts afresh under a parent run where it already has an unfinished run
        (interrupted or crashed before its first checkpoint, so Tune restarts it from step 0)
        supersedes that run: the old one is soft-deleted (`MlflowClient.restore_run` brings it
        back) and tagged with the new run's id, so the grid keeps exactly one run per trial and
        its curves do not restart mid-history."""
        client = client_for(tracking_uri)
        exp_id = _experiment_id(client, experiment)
        stale = (
            _unfinished_runs(client, exp_id, parent_run_id, config.name, config_hash(config))
            if parent_run_id
            else []
        )
        tags = {
            TAG_TRIAL: config.name,
            TAG_CONFIG_HASH: config_hash(config),
            TAG_TABLES: ",".join(config.tables),
            TAG_KIND: KIND_TRIAL,
        }
        if parent_run_id:
            tags[TAG_PARENT] = parent_run_id
        if config.overridden:
            tags[TAG_OVERRIDDEN] = "; ".join(config.overridden)
        tags.update(axis_tags(config))
        run = _retried(client.create_run, exp_id, tags=tags, run_name=config.name)
        for old in stale:
            client.set_tag(old.info.run_id, TAG_SUPERSEDED_BY, run.info.run_id)
            client.delete_run(old.info.run_id)
        trial_run = cls(client, run.info.run_id)
        trial_run.log_params(config)
        return trial_run

    @classmethod
    def reopen(cls, run_id: str, *, tracking_uri: str | None = None) -> TrialRun:
        """Continue an existing run (a resumed trial): it is set back to RUNNING."""
        client = client_for(tracking_uri)
        try:
            client.get_run(run_id)
        except MlflowException as err:
            raise ValueError(
                f"cannot resume: MLflow run {run_id} not found at {client.tracking_uri} ({err})"
            ) from None
        _retried(client.update_run, run_id, status="RUNNING")
        return cls(client, run_id)

    def log_params(self, config: Config) -> None:
        """Params = `flatten(config)`, logged once: keys the run already has are skipped (MLflow
        rejects changing a param), and a changed value is an error naming the key."""
        existing = _retried(self.client.get_run, self.run_id).data.params
        new = []
        for key, value in flatten(config).items():
            if key in existing:
                if existing[key] != value:
                    raise ValueError(
                        f"run {self.run_id} already has param {key}={existing[key]!r}; "
                        f"the resumed config has {value!r}"
                    )
                continue
            new.append(Param(key, value))
        for chunk in _chunks(new, MAX_PARAMS_PER_BATCH):
            _retried(self.client.log_batch, self.run_id, params=chunk)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log a dict of scalars at `step` in one `log_batch` request (NaN is stored as NaN)."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, int(step)) for k, v in sorted(metrics.items())]
        for chunk in _chunks(batch, MAX_METRICS_PER_BATCH):
            _retried(self.client.log_batch, self.run_id, metrics=chunk)

    def set_tags(self, tags: dict[str, str]) -> None:
        batch = [RunTag(k, str(v)) for k, v in tags.items()]
        _retried(self.client.log_batch, self.run_id, tags=batch)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        _retried(self.client.log_artifact, self.run_id, os.fspath(path), artifact_path)

    def log_artifacts(self, directory: str | os.PathLike, artifact_path: str | None = None) -> None:
        _retried(self.client.log_artifacts, self.run_id, os.fspath(directory), artifact_path)

    def log_inputs(self, datasets: list) -> None:
        """Record dataset inputs (`mlflow.entities.DatasetInput`, e.g. `dataset_input`'s).

        Concurrent trials of one grid log the same data set into one experiment: the store looks
        the (experiment, name, digest) row up and inserts it when absent, so two trials can both
        insert and the second hits the table's unique constraint. Retried, the lookup finds the
        first trial's row and links to it, so that conflict counts as transient here."""
        with_retries(lambda: self.client.log_inputs(self.run_id, datasets=datasets),
                     transient=_transient_or_dataset_race)

    def log_text(self, text: str, artifact_file: str) -> None:
        _retried(self.client.log_text, self.run_id, text, artifact_file)

    def finish(self, status: str = "FINISHED") -> None:
        _retried(self.client.set_terminated, self.run_id, status=status)


def finite_or_nan(value: float) -> float:
    """`float(value)`, with infinities turned into NaN (MLflow rejects +-inf in some stores)."""
    value = float(value)
    return value if math.isfinite(value) else math.nan
