"""One nnU-Net trial end to end (`method: nnunet`): the prepared data set in nnU-Net's raw layout
with the project's split -> nnU-Net's own planning, training and prediction (`pipeline`) -> the
project's own per-case Dice, HD95 and NSD on the scored split -> one MLflow run shaped like
every other trial's (`trial.run.run_trial` calls this for nnunet configs).

Folders inside the trial's work folder:
    nnunet/nnUNet_raw, nnunet/nnUNet_preprocessed, nnunet/nnUNet_results   nnU-Net's three
    nnunet_logs/{plan,train,predict}.log                                   its output
    nnunet_predictions/<case>.nii.gz                                       its test labels
    checkpoints/step_<iterations>/trial.json (+ checkpoint_latest.pth)     what Tune resumes

Training reports: nnU-Net's trainer (`trainers.budget_trainer`) writes progress.json after each
epoch; while it trains, the trial logs each new epoch to MLflow (`nnunet_train_loss`,
`nnunet_val_loss`, `nnunet_ema_pseudo_dice`, at step = iterations done) and, when nnU-Net has
saved checkpoint_latest.pth, writes a checkpoint folder with `record.TRIAL_JSON` and a copy of
that file and reports it (Ray Tune keeps it). Resume: the same MLflow run is reopened, nnU-Net's
checkpoint is put back where a fresh work folder lacks it, and nnU-Net continues (`--c`).
A finished training (checkpoint_final.pth) is not repeated.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.nifti.io import read_volume
from diffseg3d.core.metrics import evaluate
from diffseg3d.core.train.checkpoint import FILES_KEY, file_sizes
from diffseg3d.experiments.config.schema import Config, to_yaml
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.tracking.dataset_input import dataset_input
from diffseg3d.experiments.tracking.mlflow_runs import TrialRun, finite_or_nan
from diffseg3d.experiments.trial.checkpoint import TrialError
from diffseg3d.experiments.trial.nnunet import pipeline
from diffseg3d.experiments.trial.nnunet.budget import budget_for
from diffseg3d.experiments.trial.nnunet.layout import (
    RawLayout,
    dataset_folder_name,
    write_raw_layout,
    write_splits,
)
from diffseg3d.experiments.trial.nnunet.trainer_contract import PROGRESS, SPLIT_USED
from diffseg3d.experiments.trial.opening import open_run
from diffseg3d.experiments.trial.predictions import save_predictions
from diffseg3d.experiments.trial.scoring import test_means

#: Artifact folder of nnU-Net's trained-model folder (`model_files`): what
#: `nnUNetv2_predict_from_modelfolder -m <it> -f 0` loads.
ARTIFACT_NNUNET_MODEL = "nnunet_model"
#: Files of the model folder that are logged: its plans and dataset description, and of the
#: fold the final checkpoint and nnU-Net's records (checkpoint_best.pth, chosen on nnU-Net's
#: pseudo Dice, and its validation predictions stay in the work folder).
MODEL_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")
FOLD_FILES = ("checkpoint_final.pth", SPLIT_USED, PROGRESS, "debug.json", "progress.png",
              "training_log_*.txt", "validation/summary.json")
#: Artifact folder of nnU-Net's own output of the three programs.
ARTIFACT_NNUNET_LOGS = "nnunet_logs"
#: nnU-Net's per-epoch values logged while it trains (progress.json key -> MLflow metric).
EPOCH_METRICS = {"train_loss": "nnunet_train_loss", "val_loss": "nnunet_val_loss",
                 "ema_fg_dice": "nnunet_ema_pseudo_dice"}


def nnunet_workers(config: Config) -> int:
    """`nnunet.workers`, or one per CPU Ray gives the trial beyond the training process."""
    if config.nnunet.workers is not None:
        return config.nnunet.workers
    return max(0, int(config.resources.cpus_per_trial) - 1)


def nnunet_device(config: Config) -> str:
    """nnU-Net's `-device`: cuda for a GPU trial (the GPU Ray gave it), else cpu."""
    return "cuda" if config.resources.accelerator == "gpu" else "cpu"


def run_nnunet_trial(
    config: Config, *, workdir: str | os.PathLike, tracking_uri: str | None, experiment: str,
    parent_run_id: str | None = None, resume_from: str | os.PathLike | None = None,
    report=None, progress: bool = False,
) -> dict[str, Any]:
    """`run_trial` for `method: nnunet` (same arguments and result keys where they apply:
    `run_id`, `trial`, `config_hash`, `step` (iterations trained), `checkpoint_dir`,
    `per_case_csv` and the test means). `progress` is unused: nnU-Net prints its own."""
    del progress
    pipeline.require_nnunet()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run, meta, trial_meta = open_run(config, experiment=experiment, tracking_uri=tracking_uri,
                                     parent_run_id=parent_run_id, resume_from=resume_from)
    chash = trial_meta["config_hash"]
    try:
        # ---- data: nnU-Net's raw layout, the project's split as its fold 0 ----
        dataset = PreparedDataset.load(config.data.root)
        if meta is None:
            run.log_inputs([dataset_input(dataset)])
            run.log_text(to_yaml(config), record.ARTIFACT_CONFIG)
        split, conf = config.eval.split, config.nnunet.configuration
        layout = RawLayout(workdir / "nnunet", dataset_folder_name(config.data.name))
        budget = budget_for(config.nnunet.budget, config.train.steps,
                            config.nnunet.iterations_per_epoch)
        workers = nnunet_workers(config)
        env = pipeline.environment(layout, workers,
                                   budget if config.nnunet.budget == "steps" else None)
        logs = workdir / ARTIFACT_NNUNET_LOGS
        write_raw_layout(dataset, layout, split)

        # ---- plan and preprocess (nnU-Net's own) ----
        if not pipeline.plans_file(layout).is_file():
            pipeline.run_program(pipeline.plan_command(conf, workers),
                                 pipeline.planning_environment(env), logs / "plan.log",
                                 data_name=config.data.name, refusal=True)
        plans = pipeline.read_plans(layout, conf, config.data.name)
        write_splits(dataset, layout)

        # ---- train ----
        fold = pipeline.fold_folder(layout, conf)
        train_start = time.perf_counter()
        if not (fold / pipeline.CHECKPOINT_FINAL).is_file():
            _restore_latest(resume_from, fold)
            reporter = _EpochReporter(run, fold, workdir / "checkpoints", trial_meta, report)
            pipeline.run_program(
                pipeline.train_command(conf, nnunet_device(config),
                                       resume=(fold / pipeline.CHECKPOINT_LATEST).is_file()),
                env, logs / "train.log", data_name=config.data.name, poll=reporter.poll)
        train_seconds = time.perf_counter() - train_start
        check_split_used(fold / SPLIT_USED, dataset)
        iterations = _iterations_done(fold, budget.iterations)

        # ---- predict the scored split and score it with the project's metrics ----
        eval_start = time.perf_counter()
        out_dir = workdir / "nnunet_predictions"
        pipeline.run_program(pipeline.predict_command(layout, conf, nnunet_device(config),
                                                      workers, out_dir),
                             env, logs / "predict.log", data_name=config.data.name)
        predict_seconds = time.perf_counter() - eval_start
        case_ids = dataset.case_ids(split)
        images, labels = dataset.arrays(split)
        preds = read_predictions(out_dir, case_ids, dataset)
        rows = evaluate.evaluate_cases(case_ids, preds, labels, dataset.class_names,
                                       dataset.spacing, config.eval.nsd_tolerance_mm)
        summary = test_means(rows, split, dataset.class_names)
        summary[f"{'test' if split == 'test' else split}_checkpoint_step"] = iterations
        summary.update({"cost_train_seconds": train_seconds,
                        "cost_eval_seconds": time.perf_counter() - eval_start,
                        "cost_inference_seconds_1": predict_seconds / max(1, len(case_ids)),
                        "cost_inference_samples": 1.0})

        # ---- record ----
        csv_path = evaluate.write_per_case_csv(rows, workdir / record.ARTIFACT_PER_CASE)
        run.log_artifact(csv_path)
        save_predictions(run, config.name, config.eval.save_predictions, dataset, case_ids,
                         images, labels, preds, rows, workdir)
        for path in model_files(pipeline.model_folder(layout, conf)):
            parent = path.parent.relative_to(pipeline.model_folder(layout, conf)).as_posix()
            run.log_artifact(path, ARTIFACT_NNUNET_MODEL if parent == "." else
                             f"{ARTIFACT_NNUNET_MODEL}/{parent}")
        run.log_artifacts(logs, ARTIFACT_NNUNET_LOGS)
        run.log_metrics({k: finite_or_nan(v) for k, v in summary.items()}, iterations)
        run.set_tags({record.TAG_DEVICE_KIND: _device_kind(nnunet_device(config)),
                      record.TAG_TEST_CHECKPOINT: f"{iterations} (nnU-Net checkpoint_final)",
                      "diffseg3d.nnunet_patch_size": str(
                          plans["configurations"][conf].get("patch_size")),
                      "diffseg3d.nnunet_batch_size": str(
                          plans["configurations"][conf].get("batch_size"))})
        final_dir = save_trial_checkpoint(workdir / "checkpoints", {**trial_meta,
                                                                    "step": iterations})
        result = {"run_id": run.run_id, "trial": config.name, "config_hash": chash,
                  "step": iterations, "checkpoint_dir": str(final_dir),
                  "per_case_csv": str(csv_path), **summary}
        if report is not None:
            numbers = {k: v for k, v in result.items() if isinstance(v, int | float)}
            report({**numbers, "done": True}, str(final_dir))
    except BaseException as err:
        with contextlib.suppress(Exception):
            run.set_tags({record.TAG_FAILURE: record.failure_reason(err)})
        run.finish("FAILED")
        raise
    run.finish("FINISHED")
    return result


# ---------------------------------------------------------------------------------------------
# Pieces


def model_files(folder: Path) -> list[Path]:
    """The files of nnU-Net's model folder that the run keeps (`MODEL_FILES`, `FOLD_FILES`)."""
    fold = folder / f"fold_{pipeline.FOLD}"
    found = [folder / name for name in MODEL_FILES if (folder / name).is_file()]
    for pattern in FOLD_FILES:
        found += sorted(fold.glob(pattern))
    return found


def check_split_used(path: Path, dataset: PreparedDataset) -> None:
    """nnU-Net trained and validated on exactly the project's train and valid cases, as its
    trainer recorded them (`SPLIT_USED`); else a `TrialError` naming the difference."""
    try:
        used = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TrialError(f"{path}: nnU-Net's trainer left no readable record of its split "
                         f"({err})") from None
    for key, split in (("train", "train"), ("val", "valid")):
        expected = sorted(dataset.case_ids(split))
        if sorted(used.get(key, [])) != expected:
            raise TrialError(
                f"{path}: nnU-Net's {key} cases {sorted(used.get(key, []))} are not the "
                f"project's {split} split {expected}")


def read_predictions(out_dir: Path, case_ids: list[str], dataset: PreparedDataset) -> np.ndarray:
    """nnU-Net's label maps `<case>.nii.gz` in `out_dir` as (N, *shape) int32, checked against
    the prepared grid and the class list."""
    preds = np.zeros((len(case_ids), *dataset.shape), np.int32)
    for i, case_id in enumerate(case_ids):
        path = out_dir / f"{case_id}.nii.gz"
        if not path.is_file():
            raise TrialError(f"{path}: nnU-Net wrote no prediction for case {case_id!r}")
        array = read_volume(path, is_label=True).array
        if tuple(array.shape) != tuple(dataset.shape):
            raise TrialError(f"{path}: nnU-Net's prediction has shape {array.shape}, the "
                             f"prepared grid {tuple(dataset.shape)}")
        if array.min() < 0 or array.max() >= dataset.num_classes:
            raise TrialError(f"{path}: labels {int(array.min())}..{int(array.max())} outside "
                             f"0..{dataset.num_classes - 1}")
        preds[i] = array
    return preds


def save_trial_checkpoint(root: Path, meta: dict, latest: Path | None = None) -> Path:
    """`root/step_<meta step>/` with `record.TRIAL_JSON` (written last: a folder with it is
    complete; it records the folder's file sizes, `checkpoint.FILES_KEY`, so a copy damaged
    later is skipped on resume) and, when given, a copy of nnU-Net's checkpoint_latest.pth."""
    folder = root / f"step_{int(meta['step']):07d}"
    folder.mkdir(parents=True, exist_ok=True)
    if latest is not None:
        shutil.copyfile(latest, folder / pipeline.CHECKPOINT_LATEST)
    partial = folder / f"{record.TRIAL_JSON}.partial"
    partial.write_text(json.dumps({**meta, FILES_KEY: file_sizes(folder)}) + "\n")
    os.replace(partial, folder / record.TRIAL_JSON)
    return folder


class _EpochReporter:
    """Called while nnU-Net trains: each new epoch in progress.json to MLflow, and each new
    checkpoint_latest.pth as a trial checkpoint folder to `report` (see the module doc)."""

    def __init__(self, run: TrialRun, fold: Path, checkpoints: Path, meta: dict, report):
        self.run, self.fold, self.checkpoints = run, fold, checkpoints
        self.meta, self.report = meta, report
        self.epoch = -1
        self.checkpoint_mtime = None

    def poll(self) -> None:
        try:
            done = json.loads((self.fold / PROGRESS).read_text())
        except (OSError, json.JSONDecodeError):  # not written yet
            return
        if int(done["epoch"]) <= self.epoch:
            return
        self.epoch, step = int(done["epoch"]), int(done["iterations"])
        metrics = {name: finite_or_nan(done[key]) for key, name in EPOCH_METRICS.items()}
        self.run.log_metrics(metrics, step)
        latest = self.fold / pipeline.CHECKPOINT_LATEST
        mtime = latest.stat().st_mtime if latest.is_file() else None
        if mtime is None or mtime == self.checkpoint_mtime:
            return
        self.checkpoint_mtime = mtime
        folder = save_trial_checkpoint(self.checkpoints, {**self.meta, "step": step}, latest)
        if self.report is not None:
            self.report({"step": step, **metrics}, str(folder))


def _restore_latest(resume_from: str | os.PathLike | None, fold: Path) -> None:
    """nnU-Net's checkpoint_latest.pth from a reported checkpoint folder, where the work folder
    has none (a trial restarted on another node); nnU-Net's own file wins otherwise."""
    if resume_from is None or (fold / pipeline.CHECKPOINT_LATEST).is_file():
        return
    saved = Path(resume_from) / pipeline.CHECKPOINT_LATEST
    if saved.is_file():
        fold.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(saved, fold / pipeline.CHECKPOINT_LATEST)


def _iterations_done(fold: Path, budgeted: int) -> int:
    try:
        return int(json.loads((fold / PROGRESS).read_text())["iterations"])
    except (OSError, json.JSONDecodeError, KeyError, ValueError):
        return budgeted


def _device_kind(device: str) -> str:
    if device != "cuda":
        return "cpu"
    import torch

    return torch.cuda.get_device_name(0)
