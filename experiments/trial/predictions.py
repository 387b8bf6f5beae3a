"""The first `eval.save_predictions` cases of the scored split as NIfTI label maps on the
prepared grid and PNG montages (`record.ARTIFACT_PREDICTIONS`), logged to the trial's run."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.tracking.mlflow_runs import TrialRun
from diffseg3d.experiments.trial.montage import save_montage


def save_predictions(run: TrialRun, name: str, count: int, dataset: PreparedDataset,
                     case_ids: list[str], images: np.ndarray, labels: np.ndarray,
                     preds: np.ndarray, rows: list[dict], workdir: Path) -> None:
    """`<workdir>/predictions/<case>.nii.gz` (uint8, the case's affine) and `<case>.png` (image,
    reference, prediction; titled with the trial `name` and the case's mean Dice from `rows`)
    for the first `count` of `case_ids`; images, labels, preds (N, *spatial) in that order."""
    pred_dir = workdir / record.ARTIFACT_PREDICTIONS
    for i, case_id in enumerate(case_ids[:count]):
        pred_dir.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(preds[i].astype(np.uint8), dataset.affine(case_id)),
                 str(pred_dir / f"{case_id}.nii.gz"))
        case_dice = [r["dice"] for r in rows if r["case"] == case_id]
        title = f"{name} | {case_id} | mean Dice {np.nanmean(case_dice):.3f}"
        save_montage(images[i], labels[i], preds[i], pred_dir / f"{case_id}.png",
                     dataset.class_names, title=title)
    if pred_dir.is_dir():
        run.log_artifacts(pred_dir, record.ARTIFACT_PREDICTIONS)
