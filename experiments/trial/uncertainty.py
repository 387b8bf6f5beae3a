"""A trial's sample-set, calibration and error-detection scores of its test split, per case.

Diffusion trials with `eval.samples` N >= 2 score the N-sample ensemble (`sampling_eval`):
sample Dice and its spread, diversity and GED per class (`core.metrics.sample_set`), ECE of the
ensemble's mean class probabilities (`core.metrics.calibration`) and AUROC / AP of its entropy
and disagreement maps for the ensemble's wrong voxels (`core.metrics.error_detection`), both
inside `evaluation_region` of the ensemble label and the reference (ECE also over all voxels).
U-Net trials score their softmax the same way (calibration and entropy, the baseline); the
sample-set columns and the disagreement are NaN there.

Rows (`record.UNCERTAINTY_COLUMNS`): one per (case, foreground class); the per-case values
(ECE, AUROC, AP, region and error voxels) are repeated on each class row of their case, so the
class mean the analysis takes per case (`analysis.pairing`) is the case's value.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import jax
import numpy as np
from diffseg3d.core.data.loader import eval_batches
from diffseg3d.core.metrics.calibration import (
    bin_edges,
    expected_calibration_error,
    reliability_bins,
)
from diffseg3d.core.metrics.dice import dice_per_class
from diffseg3d.core.metrics.error_detection import error_detection, evaluation_region
from diffseg3d.core.metrics.sample_set import SAMPLE_SET_KEYS, sample_set_metrics
from diffseg3d.core.train.sharding import place_batch
from diffseg3d.experiments.tracking import record

#: Columns averaged over cases (of the per-case class means) into `test_<name>` metrics.
SUMMARY_KEYS: tuple[str, ...] = ("sample_dice_std", "diversity", "ged", "ece", "ece_all",
                                 "auroc_entropy", "ap_entropy", "auroc_disagreement",
                                 "ap_disagreement")


@dataclasses.dataclass
class UncertaintyScores:
    """Accumulated over the cases of a split: `rows` (`COLUMNS`), the pooled reliability bins
    inside the region (`bins`: count, confidence, correct sums), and one slice of the first case
    for a figure (`slice`: image, label, pred, entropy (H, W), or None)."""

    rows: list[dict] = dataclasses.field(default_factory=list)
    bins: dict[str, np.ndarray] | None = None
    slice: dict[str, np.ndarray] | None = None

    def add(self, case_id: str, class_names, probs: np.ndarray, label: np.ndarray,
            entropy: np.ndarray, disagreement: np.ndarray | None = None,
            sample_labels: np.ndarray | None = None, image: np.ndarray | None = None) -> None:
        """Score one case.

        probs: (*S, C) ensemble (or softmax) probabilities; label: (*S) reference;
        entropy: (*S) nats; disagreement: (*S) in [0, 1] or None; sample_labels: (N, *S) or None
        (N < 2 gives NaN sample-set columns); image: (*S) or (*S, 1), kept for the first case.
        """
        num_classes = probs.shape[-1]
        pred = probs.argmax(axis=-1)
        region = evaluation_region(pred, label)
        bins = reliability_bins(probs, label, region)
        self.bins = bins if self.bins is None else {k: self.bins[k] + v for k, v in bins.items()}
        by_entropy = error_detection(entropy, pred, label, region)
        by_disagreement = (error_detection(disagreement, pred, label, region)
                           if disagreement is not None else {"auroc": math.nan, "ap": math.nan})
        case = {"ece": expected_calibration_error(bins),
                "ece_all": expected_calibration_error(reliability_bins(probs, label)),
                "auroc_entropy": by_entropy["auroc"], "ap_entropy": by_entropy["ap"],
                "auroc_disagreement": by_disagreement["auroc"],
                "ap_disagreement": by_disagreement["ap"],
                "region_voxels": by_entropy["region_voxels"],
                "error_voxels": by_entropy["error_voxels"]}
        n = 0 if sample_labels is None else len(sample_labels)
        nan = np.full(num_classes - 1, np.nan)
        sample_set = (sample_set_metrics(sample_labels, label, num_classes) if n >= 2
                      else dict.fromkeys(SAMPLE_SET_KEYS, nan))
        dice = dice_per_class(pred, label, num_classes)
        for c, name in enumerate(class_names):
            self.rows.append({"case": case_id, "class": name, "samples": n,
                              "dice_ensemble": float(dice[c]),
                              **{k: float(sample_set[k][c]) for k in SAMPLE_SET_KEYS}, **case})
        if self.slice is None and image is not None:
            self.slice = figure_slice(np.asarray(image), label, pred, entropy)

    def summary(self, prefix: str = "test") -> dict[str, float]:
        """`<prefix>_<key>` for `SUMMARY_KEYS`: mean over cases of each case's class mean
        (NaN classes skipped; NaN when no case has a value), and `<prefix>_ece_pooled`, the ECE
        of the bins pooled over the split."""
        out = {f"{prefix}_{key}": _mean_of_case_means(self.rows, key) for key in SUMMARY_KEYS}
        out[f"{prefix}_ece_pooled"] = (expected_calibration_error(self.bins)
                                       if self.bins is not None else math.nan)
        return out


def figure_slice(image: np.ndarray, label: np.ndarray, pred: np.ndarray,
                 entropy: np.ndarray) -> dict[str, np.ndarray]:
    """The last-axis slice with the most reference foreground of one case: image, label, pred,
    entropy, each (H, W)."""
    image = image[..., 0] if image.ndim == label.ndim + 1 else image
    counts = (label > 0).reshape(-1, label.shape[-1]).sum(axis=0)
    z = int(np.argmax(counts))
    return {"image": image[..., z].astype(np.float32), "label": label[..., z].astype(np.int16),
            "pred": pred[..., z].astype(np.int16), "entropy": entropy[..., z].astype(np.float32)}


def _mean_of_case_means(rows: list[dict], key: str) -> float:
    by_case: dict[str, list[float]] = {}
    for row in rows:
        by_case.setdefault(row["case"], []).append(row[key])
    means = [np.nanmean(v) for v in by_case.values() if np.isfinite(v).any()]
    return float(np.mean(means)) if means else math.nan


def score_softmax_split(probabilities, params, dataset, split: str, batch_size: int,
                        mesh=None) -> UncertaintyScores:
    """A U-Net's `UncertaintyScores` of `split` from its softmax: `probabilities(params, image
    (B, *S, 1)) -> (B, *S, C)` (`core.infer.predict.predict_unet_probabilities`), entropy of
    the softmax as the uncertainty, no samples and no disagreement. With a `mesh` each batch's
    images are split over its devices (`core.train.sharding.place_batch`)."""
    scores = UncertaintyScores()
    case_ids = iter(dataset.case_ids(split))
    for batch in eval_batches(dataset, split, batch_size):
        probs = np.asarray(jax.device_get(probabilities(params, place_batch(batch["image"],
                                                                           mesh))), np.float64)
        for i in np.flatnonzero(batch["valid"]):
            p = probs[i]
            entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)  # 0 log 0 = 0
            scores.add(next(case_ids), dataset.class_names, p, batch["label"][i], entropy,
                       image=batch["image"][i])
    return scores


def write_scores(scores: UncertaintyScores, folder) -> list:
    """`record.ARTIFACT_UNCERTAINTY`, `ARTIFACT_RELIABILITY` and `ARTIFACT_UNCERTAINTY_SLICE`
    into `folder`; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / record.ARTIFACT_UNCERTAINTY, folder / record.ARTIFACT_RELIABILITY]
    with open(paths[0], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(record.UNCERTAINTY_COLUMNS))
        writer.writeheader()
        writer.writerows(scores.rows)
    edges = bin_edges(len(scores.bins["count"]))
    with open(paths[1], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(record.RELIABILITY_COLUMNS)
        for b, n in enumerate(scores.bins["count"]):
            conf = scores.bins["confidence"][b] / n if n else math.nan
            acc = scores.bins["correct"][b] / n if n else math.nan
            writer.writerow([b, edges[b], edges[b + 1], int(n), conf, acc])
    if scores.slice is not None:
        paths.append(folder / record.ARTIFACT_UNCERTAINTY_SLICE)
        np.savez_compressed(paths[-1], **scores.slice)
    return paths
