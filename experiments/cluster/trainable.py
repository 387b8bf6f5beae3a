"""The Ray Tune trainable: a thin adapter from one Tune trial to `trial.run_trial`.

It runs inside a Ray worker process, possibly on another node, with the trial's working
directory as cwd. It must not import JAX before the trial's environment is set
(`resources.trial_env`: memory fraction for fractional GPUs, CPU-only platform), so this module
imports nothing heavy at module level and `run_trial` is imported inside the function.

Checkpoints: `run_trial` calls `report(metrics, checkpoint_dir)` at every checkpoint and at the
end; that becomes `tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(dir))`, which
copies the directory (orbax state + trial.json with the MLflow run id) to Tune's storage. After
a lost worker Tune restarts the trial with `tune.get_checkpoint()` set; it is copied to a local
folder and handed to `run_trial(resume_from=...)`, which continues the same step, random
stream and MLflow run.

A driver killed with SIGKILL may die after the trial saved a checkpoint but before Tune
recorded it in its experiment state; the restored trial then gets no (or an older) checkpoint
from Tune. So the trial's working folder is kept on Tune's storage beside Tune's own trial
folder (`<experiment folder>/<trial>/work`, the same path in every driver session, unlike
Ray's per-session working directory) and the newest complete checkpoint of either source is
resumed (`newest_checkpoint`): `run_trial` writes `trial.json` after the orbax state, so a
folder with a valid `trial.json` of this config (and, when it names a `best_step`, the
best-validation parameters file) is complete.

Retries: Tune retries a trial that raised (`FailureConfig.max_failures`), except one that
diverged (`trial.divergence.NonFiniteTrainingError`, `train.stop_on_nonfinite`): the same seed
and data diverge at the same step again, so `train_trial` reports the error as its last result
(`FAILED_METRIC`) and returns, which ends the trial, and the runner lists it as failed.

Fault hook (for the fault-tolerance test and for drills on a real cluster): when the driver's
environment has `DIFFSEG3D_FAULT_KILL_TRIAL=<trial name>` (or `*` for every trial) and
`DIFFSEG3D_FAULT_MARKER_DIR=<folder on storage every node sees>`, the trial's worker process
SIGKILLs itself right after its first checkpoint report has been accepted by Tune, once per trial
(a marker file `<marker dir>/<trial>.killed` records that it fired). The runner forwards both
variables to the trial, so they need not be set on the worker nodes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Environment variables of the fault hook (see the module docstring).
FAULT_KILL_TRIAL_ENV = "DIFFSEG3D_FAULT_KILL_TRIAL"
FAULT_MARKER_DIR_ENV = "DIFFSEG3D_FAULT_MARKER_DIR"
#: Last reported metric of a trial that ended without a retry (a diverged one): the error.
FAILED_METRIC = "trial_failed"


def apply_env(env: Mapping[str, str]) -> None:
    """Set the trial's environment; XLA_FLAGS are appended to existing flags, not replaced."""
    for key, value in env.items():
        if key == "XLA_FLAGS" and os.environ.get("XLA_FLAGS"):
            if value not in os.environ["XLA_FLAGS"]:
                os.environ["XLA_FLAGS"] = f"{os.environ['XLA_FLAGS']} {value}"
        else:
            os.environ[key] = value


def fault_should_fire(trial: str, fault: Mapping[str, str]) -> Path | None:
    """The marker file to create if the fault hook must kill `trial` now, else None."""
    target = fault.get(FAULT_KILL_TRIAL_ENV)
    marker_dir = fault.get(FAULT_MARKER_DIR_ENV)
    if not target or not marker_dir or target not in ("*", trial):
        return None
    marker = Path(marker_dir) / f"{trial}.killed"
    return None if marker.exists() else marker


def train_trial(
    param: dict[str, Any],
    *,
    configs: Mapping[str, dict],
    envs: Mapping[str, Mapping[str, str]],
    tracking_uri: str,
    experiment: str,
    parent_run_id: str | None,
    fault: Mapping[str, str],
    experiment_path: str | None = None,
) -> None:
    """Tune function trainable for the trial named `param["trial"]`.

    configs: trial name -> resolved config as a JSON-able dict (`Config.model_dump(mode="json")`),
    envs: trial name -> environment from `resources.trial_env`; both are bound on the driver with
    `tune.with_parameters`. Metrics go to Tune through `tune.report`; the final report carries
    the test means (`run_trial`'s last report, with the final checkpoint).
    experiment_path: the Tune experiment folder when Tune's storage is a local (or mounted)
    path: the trial works in `<experiment_path>/<trial>/work`, which outlives a killed driver;
    None (s3:// storage): in Ray's working directory of the trial.
    """
    name = param["trial"]
    apply_env(envs.get(name, {}))

    from diffseg3d.experiments.config.schema import config_hash, validate_config
    from diffseg3d.experiments.trial.divergence import NonFiniteTrainingError
    from diffseg3d.experiments.trial.run import run_trial
    from ray import tune

    config = validate_config(configs[name], source=f"trial {name}")
    base = Path(experiment_path) / name if experiment_path else Path.cwd()
    workdir = base / "work"
    workdir.mkdir(parents=True, exist_ok=True)

    candidates = sorted((workdir / "checkpoints").glob("step_*"))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        # Copied, not `as_directory()`: on s3/NFS storage the context's temp copy would vanish
        # while run_trial still reads it.
        restored = workdir / "restored_checkpoint"
        shutil.rmtree(restored, ignore_errors=True)
        checkpoint.to_directory(str(restored))
        candidates.append(restored)
    resume_from = newest_checkpoint(candidates, config_hash(config))

    state = {"reported_checkpoint": False}

    def report(metrics: Mapping[str, Any], checkpoint_dir: str | os.PathLike | None) -> None:
        ckpt = None
        if checkpoint_dir is not None:
            ckpt = tune.Checkpoint.from_directory(str(checkpoint_dir))
        tune.report(tune_metrics(metrics), checkpoint=ckpt)
        if ckpt is not None and not state["reported_checkpoint"]:
            state["reported_checkpoint"] = True
            marker = fault_should_fire(name, fault)
            if marker is not None:
                # `tune.report` returns only after the driver took this result and its
                # checkpoint (synchronous reporting), so the restart will find it.
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(f"killed pid {os.getpid()} after first checkpoint\n")
                os.kill(os.getpid(), signal.SIGKILL)

    try:
        run_trial(
            config,
            workdir=str(workdir),
            tracking_uri=tracking_uri,
            experiment=experiment,
            parent_run_id=parent_run_id,
            resume_from=None if resume_from is None else str(resume_from),
            report=report,
        )
    except NonFiniteTrainingError as err:
        # Deterministic: Tune's retry (FailureConfig.max_failures) would diverge at the same
        # step. Returning ends the trial without a retry; its last result says why and the
        # runner counts it as failed (its MLflow run already ended FAILED with the reason).
        tune.report({FAILED_METRIC: str(err)})


def newest_checkpoint(folders: Sequence[Path], chash: str) -> Path | None:
    """The folder whose `trial.json` (of config hash `chash`) has the highest step; folders
    without a readable `trial.json`, of another config, or naming a `best_step` without the
    `BEST_PARAMS` file, are skipped (a save cut short). So is a folder whose files differ from
    the sizes its `trial.json` recorded (damaged after the save, e.g. a file cut short): one
    line on stderr names it and says which folder is resumed instead."""
    from diffseg3d.core.train.checkpoint import damaged_file
    from diffseg3d.experiments.tracking.record import (
        BEST_PARAMS,
        TRIAL_JSON,
        TRIAL_JSON_REQUIRED_KEYS,
    )

    usable: list[tuple[int, Path]] = []
    damaged: list[tuple[int, Path, str]] = []
    for folder in folders:
        try:
            meta = json.loads((folder / TRIAL_JSON).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(meta, dict) or any(k not in meta for k in TRIAL_JSON_REQUIRED_KEYS):
            continue
        if meta.get("best_step") and not (folder / BEST_PARAMS).is_file():
            continue
        if meta["config_hash"] != chash:
            continue
        reason = damaged_file(folder, meta)
        if reason is not None:
            damaged.append((int(meta["step"]), folder, reason))
            continue
        if not usable or int(meta["step"]) > usable[0][0]:
            usable = [(int(meta["step"]), folder)]
    best = usable[0] if usable else None
    for step, folder, reason in damaged:
        if best is None or step > best[0]:
            instead = (f"resuming from {best[1]} (step {best[0]}) instead" if best
                       else "no intact checkpoint is left: the trial starts afresh")
            print(f"checkpoint {folder} (step {step}) is damaged ({reason}); {instead}",
                  file=sys.stderr, flush=True)
    return None if best is None else best[1]


def tune_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics as Tune may take them: plain Python scalars, and `done` renamed `trial_done`.

    Tune treats a reported `done: True` as "stop this trial now" and, with synchronous
    reporting, ends the training thread inside `tune.report`, so `run_trial` would never close
    its MLflow run as FINISHED. The trial is done when the function returns.
    """
    out = {}
    for key, value in metrics.items():
        if not _is_metric(value):
            continue
        out["trial_done" if key == "done" else key] = _scalar(value)
    return out


def _is_metric(value: Any) -> bool:
    return isinstance(value, int | float | str | bool) or hasattr(value, "item")


def _scalar(value: Any) -> Any:
    """Plain Python numbers (NumPy/JAX scalars are not JSON-serialisable in Tune's logs)."""
    return value.item() if hasattr(value, "item") else value
