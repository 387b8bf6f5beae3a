"""`diffseg3d evaluate`: score a folder of predicted NIfTI label maps against a folder of labels,
per case and class (Dice, HD95 in mm, ROI size), with the same definitions and CSV as a trial's
`per_case_metrics.csv`, so other tools' outputs can be compared with ours.

Cases are matched by file name (`<case>.nii.gz` or `<case>.nii`). Works on a plain folder with
no options:
- classes: `classes` (`--classes`), else `class_names` of a `dataset.json` in the labels folder
  or its parent (a prepared data set's `labelsTr/`), else the integer labels present: classes
  1..K named `class_1` .. `class_K`, K the largest label in any label or prediction file (a
  value between that is absent everywhere is still a class, with NaN Dice, counted);
- spacing (mm): each label's NIfTI header (the default), or with `spacing_from_labels=False`
  that `dataset.json`'s `spacing` when it has one (the headers otherwise).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: Largest difference between a prediction's and its label's voxel size (mm) accepted as equal.
SPACING_TOLERANCE_MM = 1e-3


class EvaluateError(ValueError):
    """Missing or mismatched cases, shapes, spacings or classes; names the files."""


def case_files(directory: str | os.PathLike) -> dict[str, Path]:
    """`{case id: path}` of the NIfTI files in `directory` (not recursive)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EvaluateError(f"{directory}: no such folder")
    out: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        for suffix in NIFTI_SUFFIXES:
            if path.is_file() and path.name.endswith(suffix):
                case = path.name[: -len(suffix)]
                if case in out:
                    raise EvaluateError(f"{directory}: case {case!r} appears twice ({path.name})")
                out[case] = path
    if not out:
        raise EvaluateError(f"{directory}: holds no .nii or .nii.gz files")
    return out


def find_dataset_json(labels_dir: str | os.PathLike) -> Path | None:
    """`dataset.json` in the labels folder or its parent, if any."""
    for folder in (Path(labels_dir), Path(labels_dir).parent):
        if (folder / "dataset.json").is_file():
            return folder / "dataset.json"
    return None


def _read_dataset_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise EvaluateError(f"{path}: not valid JSON ({err})") from None


def _load_label(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises several types for unreadable files
        raise EvaluateError(f"{path}: not a readable NIfTI file ({err})") from None
    data = np.asarray(image.dataobj)
    rounded = np.rint(data)
    if not np.array_equal(rounded, data):
        raise EvaluateError(f"{path}: not a label map (non-integer values)")
    return rounded.astype(np.int64), tuple(float(z) for z in image.header.get_zooms()[:3])


def present_classes(paths: Sequence[Path]) -> list[str]:
    """`class_1` .. `class_K` with K the largest label value in the files `paths`."""
    largest = 0
    for path in paths:
        values, _ = _load_label(path)
        if values.size and values.min() < 0:
            raise EvaluateError(f"{path}: negative label value {values.min()}")
        largest = max(largest, int(values.max(initial=0)))
    if largest == 0:
        raise EvaluateError(
            "no class list and no foreground label in any file: pass --classes, or put a "
            "dataset.json with class_names in the labels folder or its parent"
        )
    return [f"class_{k}" for k in range(1, largest + 1)]


def evaluate_folder(
    pred_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    spacing_from_labels: bool = True,
) -> list[dict]:
    """Score every labelled case; write the per-case CSV to `out_csv` and return its rows.

    Classes and spacing as the module docstring says. Raises `EvaluateError` for a case without
    a prediction (or a prediction without a label), different shapes or voxel sizes, label values
    outside the class list, or no foreground label anywhere when the classes are inferred.
    """
    from diffseg3d.core.metrics.evaluate import evaluate_case, write_per_case_csv

    preds, labels = case_files(pred_dir), case_files(labels_dir)
    missing = sorted(set(labels) - set(preds))
    extra = sorted(set(preds) - set(labels))
    if missing or extra:
        raise EvaluateError(
            f"cases differ between {pred_dir} and {labels_dir}: "
            f"no prediction for {missing or 'none'}; no label for {extra or 'none'}"
        )
    meta_path = find_dataset_json(labels_dir)
    meta = _read_dataset_json(meta_path) if meta_path else {}
    if classes is None:
        if "class_names" in meta:
            classes = list(meta["class_names"])
        else:
            classes = present_classes([*labels.values(), *preds.values()])
    use_meta_spacing = not spacing_from_labels and "spacing" in meta
    rows: list[dict] = []
    for case in sorted(labels):
        label, label_zooms = _load_label(labels[case])
        pred, pred_zooms = _load_label(preds[case])
        if pred.shape != label.shape:
            raise EvaluateError(
                f"case {case}: prediction {preds[case]} has shape {pred.shape}, label "
                f"{labels[case]} has {label.shape}"
            )
        if np.max(np.abs(np.subtract(pred_zooms, label_zooms))) > SPACING_TOLERANCE_MM:
            raise EvaluateError(
                f"case {case}: prediction voxel size {pred_zooms} mm differs from the label's "
                f"{label_zooms} mm (resample the prediction to the label's grid)"
            )
        spacing = tuple(meta["spacing"]) if use_meta_spacing else label_zooms
        try:
            rows.extend(evaluate_case(case, pred, label, classes, spacing[: label.ndim]))
        except ValueError as err:
            raise EvaluateError(f"{labels[case]} / {preds[case]}: {err}") from None
    write_per_case_csv(rows, out_csv)
    return rows
