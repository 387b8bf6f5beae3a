"""A trial's MLflow run at its start: a new run for a fresh trial, or the run a checkpoint's
`record.TRIAL_JSON` names for a resumed one (after checking the checkpoint is of this config)."""

from __future__ import annotations

import os

from diffseg3d.experiments.config.schema import Config, config_hash
from diffseg3d.experiments.tracking.mlflow_runs import TrialRun
from diffseg3d.experiments.trial.checkpoint import TrialError, read_trial_json


def open_run(config: Config, *, experiment: str, tracking_uri: str | None,
             parent_run_id: str | None, resume_from: str | os.PathLike | None
             ) -> tuple[TrialRun, dict | None, dict]:
    """(the trial's run, the checkpoint's trial.json or None for a fresh trial, the entries every
    trial.json of this trial starts with: mlflow_run_id, config_hash, trial). A resumed trial's
    run is reopened (RUNNING again) and its params logged again (the same values)."""
    chash = config_hash(config)
    meta = read_trial_json(resume_from) if resume_from is not None else None
    if meta is not None and meta["config_hash"] != chash:
        raise TrialError(f"{resume_from}: checkpoint belongs to config {meta['config_hash']}, "
                         f"not {chash} ({config.name})")
    if meta is None:
        run = TrialRun.start(config, experiment=experiment, tracking_uri=tracking_uri,
                             parent_run_id=parent_run_id)
    else:
        run = TrialRun.reopen(meta["mlflow_run_id"], tracking_uri=tracking_uri)
        run.log_params(config)
    return run, meta, {"mlflow_run_id": run.run_id, "config_hash": chash, "trial": config.name}
