"""Per-case evaluation rows, the per-case metrics CSV, and NaN-aware summaries.

One row per (case, foreground class) with keys exactly `ROW_KEYS`:
    case, class, dice, hd95 (mm), roi_voxels, roi_mm3 (ground truth), pred_empty, label_empty,
    nsd (normalised surface Dice at the evaluation's tolerance in mm, `nsd.py`).
NaN Dice and NSD (class absent from both maps) and NaN HD95 (class absent from either) are kept
in the rows and in the CSV (written as `nan`), skipped by the means of `summarise` and counted
there, so nothing is dropped silently (design card, Metrics). NSD is 0 where exactly one map has
the class (`pred_empty` / `label_empty` say which).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from diffseg3d.core.metrics.dice import dice_per_class
from diffseg3d.core.metrics.hd95 import hd95_per_class
from diffseg3d.core.metrics.inputs import check_pair, check_spacing
from diffseg3d.core.metrics.nsd import DEFAULT_TOLERANCE_MM, check_tolerance, nsd_per_class
from diffseg3d.core.metrics.roi import roi_size_per_class

#: Keys of every row, in CSV column order (`nsd` last, so the older columns keep their place).
ROW_KEYS = (
    "case", "class", "dice", "hd95", "roi_voxels", "roi_mm3", "pred_empty", "label_empty", "nsd",
)
#: The per-case metrics `summarise` averages (NaN skipped and counted).
SUMMARY_METRICS = ("dice", "hd95", "nsd")


def evaluate_case(
    case_id: str,
    pred: np.ndarray,
    label: np.ndarray,
    class_names: Sequence[str],
    spacing: Sequence[float],
    nsd_tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> list[dict[str, Any]]:
    """Dice, HD95, NSD and ROI size of every foreground class of one case.

    Args:
        case_id: the case identifier written in the `case` column.
        pred: (*spatial) int predicted label map.
        label: (*spatial) int ground-truth label map.
        class_names: foreground class names; name i belongs to label value i + 1.
        spacing: voxel size in mm per spatial axis (of the space pred and label are in).
        nsd_tolerance_mm: the NSD tolerance in mm (`nsd.nsd_per_class`).

    Returns:
        len(class_names) dicts with keys `ROW_KEYS`.
    """
    num_classes = len(class_names) + 1
    try:
        pred, label = check_pair(pred, label, num_classes)
        spacing = check_spacing(spacing, label.ndim)
        nsd_tolerance_mm = check_tolerance(nsd_tolerance_mm)
    except ValueError as err:
        raise ValueError(f"case {case_id!r}: {err}") from err
    dice = dice_per_class(pred, label, num_classes)
    hd95 = hd95_per_class(pred, label, num_classes, spacing)
    nsd = nsd_per_class(pred, label, num_classes, spacing, nsd_tolerance_mm)
    roi_voxels, roi_mm3 = roi_size_per_class(label, num_classes, spacing)
    pred_voxels = np.bincount(pred.ravel(), minlength=num_classes)[1:]
    return [
        {
            "case": str(case_id),
            "class": name,
            "dice": float(dice[i]),
            "hd95": float(hd95[i]),
            "roi_voxels": int(roi_voxels[i]),
            "roi_mm3": float(roi_mm3[i]),
            "pred_empty": bool(pred_voxels[i] == 0),
            "label_empty": bool(roi_voxels[i] == 0),
            "nsd": float(nsd[i]),
        }
        for i, name in enumerate(class_names)
    ]


def evaluate_cases(
    case_ids: Sequence[str],
    preds: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    spacing: Sequence[float],
    nsd_tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> list[dict[str, Any]]:
    """`evaluate_case` rows of every case: preds and labels (cases, *spatial), `case_ids` in
    the same order; len(case_ids) * len(class_names) rows, case by case."""
    rows: list[dict[str, Any]] = []
    for case_id, pred, label in zip(case_ids, preds, labels, strict=True):
        rows += evaluate_case(case_id, pred, label, class_names, spacing, nsd_tolerance_mm)
    return rows


def write_per_case_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Writes rows to a CSV with header `ROW_KEYS` (NaN as `nan`); returns the path."""
    path = Path(path)
    for index, row in enumerate(rows):
        if set(row) != set(ROW_KEYS):
            raise ValueError(
                f"row {index} for {path.name} has keys {sorted(row)}; expected {list(ROW_KEYS)}."
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROW_KEYS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_per_case_csv(path: str | Path) -> list[dict[str, Any]]:
    """Reads a CSV written by `write_per_case_csv` back into typed rows."""
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != ROW_KEYS:
            raise ValueError(f"{path}: columns {reader.fieldnames}; expected {list(ROW_KEYS)}.")
        return [
            {
                "case": raw["case"],
                "class": raw["class"],
                "dice": float(raw["dice"]),
                "hd95": float(raw["hd95"]),
                "roi_voxels": int(raw["roi_voxels"]),
                "roi_mm3": float(raw["roi_mm3"]),
                "pred_empty": raw["pred_empty"] == "True",
                "label_empty": raw["label_empty"] == "True",
                "nsd": float(raw["nsd"]),
            }
            for raw in reader
        ]


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, population std, number of NaN) of values, skipping NaN; NaN stats if all are NaN."""
    array = np.asarray(values, dtype=np.float64)
    valid = array[~np.isnan(array)]
    n_nan = int(array.size - valid.size)
    if valid.size == 0:
        return math.nan, math.nan, n_nan
    return float(valid.mean()), float(valid.std()), n_nan


def _mean_of_case_means(per_case: Iterable[Sequence[float]]) -> float:
    """Mean over cases of each case's mean over its non-NaN values; NaN cases are skipped."""
    return _mean_std([_mean_std(values)[0] for values in per_case])[0]


def mean_case_dice(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """`summarise`'s `mean_case_dice` straight from label maps, without the HD95 cost (the
    validation score during training).

    Args:
        preds: (cases, *spatial) int predicted label maps.
        labels: (cases, *spatial) int ground-truth label maps.
        num_classes: C, including background.

    Returns:
        mean over cases of the mean foreground Dice over the classes present in either map;
        NaN when no case has one.
    """
    return _mean_std(case_mean_dice(preds, labels, num_classes))[0]


def case_mean_dice(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Each case's mean foreground Dice over the classes present in either map: (cases,)
    float64, NaN for a case with no such class. preds, labels: (cases, *spatial) int."""
    return np.array(
        [_mean_std(dice_per_class(pred, label, num_classes))[0]
         for pred, label in zip(preds, labels, strict=True)],
        dtype=np.float64,
    )


def mean_case_dice_per_step(
    step_preds: np.ndarray, labels: np.ndarray, num_classes: int
) -> list[float]:
    """`mean_case_dice` of the label map of every sampling step (quality along the chain).

    Args:
        step_preds: (steps, cases, *spatial) int label maps, step k = argmax of the x0_hat of
            sampling step k + 1 (`sampling.make_sampler(return_trajectory=True)`: row 0 is from
            x_K, the last row is the sampler's own prediction).
        labels: (cases, *spatial) int ground-truth label maps.
        num_classes: C, including background.

    Returns:
        one mean Dice per step; the last equals `mean_case_dice` of the prediction exactly.
    """
    return [mean_case_dice(preds, labels, num_classes) for preds in step_preds]


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, float | int]:
    """NaN-skipping means of the per-case rows, with the NaN counts next to them.

    Keys:
        `n_cases`, `n_rows`;
        for each metric m of `SUMMARY_METRICS` (dice, hd95, nsd):
        `mean_<m>`, `std_<m>`, `n_nan_<m>`: over all (case, class) rows that are not NaN;
        `mean_case_<m>`: mean over cases of each case's mean over its non-NaN classes (the
            paper's "averaged over foreground classes"; cases with no valid class are skipped);
        `<m>/<class>`: per class means over cases, NaN skipped; `n_nan_<m>/<class>`: per class
            NaN counts.
    Means of an all-NaN column are NaN (never a warning or an error).
    """
    summary: dict[str, float | int] = {
        "n_cases": len({row["case"] for row in rows}),
        "n_rows": len(rows),
    }
    for metric in SUMMARY_METRICS:
        mean, std, n_nan = _mean_std([row[metric] for row in rows])
        summary[f"mean_{metric}"], summary[f"std_{metric}"] = mean, std
        summary[f"n_nan_{metric}"] = n_nan
        by_case: dict[str, list[float]] = {}
        by_class: dict[str, list[float]] = {}
        for row in rows:
            by_case.setdefault(row["case"], []).append(row[metric])
            by_class.setdefault(row["class"], []).append(row[metric])
        summary[f"mean_case_{metric}"] = _mean_of_case_means(by_case.values())
        for name, values in by_class.items():
            mean, _, n_nan = _mean_std(values)
            summary[f"{metric}/{name}"] = mean
            summary[f"n_nan_{metric}/{name}"] = n_nan
    return summary
