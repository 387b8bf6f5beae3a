"""An MLflow 3 logged model of a trial run, through the run's client (`tracking.TrialRun`).

The steps `mlflow.models.Model.log` takes, without its fluent active run: create the logged
model in the run's experiment with the run as its source (`create_logged_model`), save the
MLflow model folder into its artifact location (the caller), then `finish_logged_model`: upload
the folder, record the model as the run's output at `step` (the runs table's Models column),
log `metrics` for both run and model (the model page's metrics; the run's own values at that
step are unchanged) and mark the model READY. Every store call is retried on transient errors
(`retry.with_retries`).
"""

from __future__ import annotations

import os
import time

from diffseg3d.experiments.config.schema import Config
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.tracking.retry import with_retries
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric

#: `model_type` of the logged models (a free-form label in MLflow).
MODEL_TYPE = "segmentation"


def _retried(fn, /, *args, **kwargs):
    return with_retries(lambda: fn(*args, **kwargs))


def create_logged_model(run, config: Config):
    """A new logged model named `record.ARTIFACT_MODEL` in `run`'s experiment, source run `run`,
    tagged with the trial's name and config hash, with the run's params (`LoggedModel`)."""
    client = run.client
    source = _retried(client.get_run, run.run_id)
    return _retried(
        client.create_logged_model, source.info.experiment_id, name=record.ARTIFACT_MODEL,
        source_run_id=run.run_id, model_type=MODEL_TYPE, params=dict(source.data.params),
        tags={record.TAG_TRIAL: config.name, record.TAG_CONFIG_HASH: source.data.tags.get(
            record.TAG_CONFIG_HASH, "")})


def finish_logged_model(run, model_id: str, folder: str | os.PathLike,
                        metrics: dict[str, float], step: int) -> None:
    """Upload the saved model `folder`, link the model to `run` at `step` with `metrics` and
    mark it READY (module docstring)."""
    client = run.client
    _retried(client.log_model_artifacts, model_id, os.fspath(folder))
    _retried(client.log_outputs, run.run_id, [LoggedModelOutput(model_id, step=int(step))])
    now = int(time.time() * 1000)
    batch = [Metric(key, float(value), now, int(step), model_id=model_id, run_id=run.run_id)
             for key, value in sorted(metrics.items())]
    for start in range(0, len(batch), 1000):  # MLflow's metrics per log_batch request
        _retried(client.log_batch, run.run_id, metrics=batch[start:start + 1000])
    _retried(client.finalize_logged_model, model_id, LoggedModelStatus.READY)
