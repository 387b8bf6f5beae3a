"""`diffseg3d evaluate`: score a folder of predicted NIfTI label maps against a folder of labels,
per case and class (Dice, HD95 in mm, NSD at a tolerance in mm, ROI size), with the same
definitions and CSV as a trial's `per_case_metrics.csv`, so other tools' outputs can be compared
with ours.

Cases are matched by file name (`<case>.nii.gz` or `<case>.nii`). Works on a plain folder with
no options:
- classes: `classes` (`--classes`), else `class_names` of a `dataset.json` in the labels folder
  or its parent (a prepared data set's `labelsTr/`), else the integer labels present: classes
  1..K named `class_1` .. `class_K`, K the largest label in any label or prediction file (a
  value between that is absent everywhere is still a class, with NaN Dice, counted);
- spacing (mm): each label's NIfTI header (the default), or with `spacing_from_labels=False`
  that `dataset.json`'s `spacing` when it has one (the headers otherwise).

A foreground value that predictions hold but no label file does (a class the labels never use,
or a stray value) is scored like any other class and reported through `echo` with its cases
(`unlabelled_values`).

Geometry: a prediction must lie on its label's grid, i.e. have the same shape and the same
voxel-to-world affine (origin, axis directions and voxel size), within `AFFINE_TOLERANCE_MM`: the
largest distance between the world positions the two affines give the same voxel, over the
label's grid. A prediction 100 mm away or with a flipped axis would otherwise be scored voxel by
voxel as if it were aligned. On a mismatch `evaluate_folder` refuses (naming both files and the
difference), or with `resample=True` samples the prediction onto the label's grid (nearest
neighbour through world coordinates, `core.data.resample.resample_to_grid`; label 0 outside the
prediction's grid) and reports it through `echo`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from itertools import product
from pathlib import Path

import numpy as np
from diffseg3d.core.metrics.nsd import DEFAULT_TOLERANCE_MM

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: Largest distance (mm) between the world positions a prediction's and its label's affines give
#: the same voxel of the label's grid that still counts as the same grid.
AFFINE_TOLERANCE_MM = 1e-3


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


def _load_label(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(integer label map, 4x4 affine, header voxel size in mm) of one NIfTI file."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises several types for unreadable files
        raise EvaluateError(f"{path}: not a readable NIfTI file ({err})") from None
    data = np.asarray(image.dataobj)
    rounded = np.rint(data)
    if not np.array_equal(rounded, data):
        raise EvaluateError(f"{path}: not a label map (non-integer values)")
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    return rounded.astype(np.int64), np.asarray(image.affine, np.float64), zooms


def grid_mismatch_mm(affine: np.ndarray, reference: np.ndarray, shape: Sequence[int]) -> float:
    """Largest distance in mm between where `affine` and `reference` put the same voxel, over a
    grid of `shape` (3 spatial axes). Both maps are affine in the voxel index, so their difference
    is too and its largest norm over the grid's box is at one of the 8 corners."""
    difference = np.asarray(affine, np.float64) - np.asarray(reference, np.float64)
    extent = (*tuple(shape)[:3], 1, 1, 1)[:3]  # a 2D grid is one slice thick
    corners = np.array([[*corner, 1.0] for corner in
                        product(*[(0.0, max(n - 1, 0)) for n in extent])])
    return float(np.linalg.norm(corners @ difference[:3].T, axis=1).max())


def _mm(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _axis_codes(affine: np.ndarray) -> str:
    import nibabel as nib

    return "".join(nib.aff2axcodes(affine))


def _grid_difference(pred: np.ndarray, pred_affine: np.ndarray, label: np.ndarray,
                     label_affine: np.ndarray) -> str | None:
    """What differs between the prediction's grid and the label's (None: the same grid)."""
    parts = []
    if pred.shape != label.shape:
        parts.append(f"shape: prediction {pred.shape}, label {label.shape}")
    pred_zooms = np.linalg.norm(pred_affine[:3, :3], axis=0)
    label_zooms = np.linalg.norm(label_affine[:3, :3], axis=0)
    if np.max(np.abs(pred_zooms - label_zooms)) > AFFINE_TOLERANCE_MM:
        parts.append(f"voxel size: prediction {_mm(pred_zooms)} mm, label {_mm(label_zooms)} mm")
    if pred.shape == label.shape and not parts:
        mismatch = grid_mismatch_mm(pred_affine, label_affine, label.shape)
        if mismatch <= AFFINE_TOLERANCE_MM:
            return None
        origin = float(np.linalg.norm(pred_affine[:3, 3] - label_affine[:3, 3]))
        parts.append(f"origin {origin:.4g} mm apart")
        pred_codes, label_codes = _axis_codes(pred_affine), _axis_codes(label_affine)
        if pred_codes != label_codes:
            parts.append(f"axis directions: prediction {pred_codes}, label {label_codes}")
        parts.append(f"a voxel lies up to {mismatch:.4g} mm from its place in the label "
                     f"(tolerance {AFFINE_TOLERANCE_MM:g} mm)")
    return ", ".join(parts)


def present_classes(paths: Sequence[Path]) -> list[str]:
    """`class_1` .. `class_K` with K the largest label value in the files `paths`."""
    largest = 0
    for path in paths:
        values = _load_label(path)[0]
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
    nsd_tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    resample: bool = False,
    echo: Callable[[str], None] | None = None,
) -> list[dict]:
    """Score every labelled case; write the per-case CSV to `out_csv` and return its rows.

    Classes and spacing as the module docstring says; NSD at `nsd_tolerance_mm`. A prediction
    not on its label's grid (shape or affine, see the module docstring) is an error, or with
    `resample` is resampled onto it (nearest neighbour) and `echo` (e.g. `print`) is told so.
    Raises `EvaluateError` for a case without a prediction (or a prediction without a label),
    a grid mismatch without `resample`, label values outside the class list, or no foreground
    label anywhere when the classes are inferred.
    """
    from diffseg3d.core.data.resample import resample_to_grid
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
    label_values: set[int] = set()
    pred_values: dict[str, set[int]] = {}
    for case in sorted(labels):
        label, label_affine, label_zooms = _load_label(labels[case])
        label_values.update(int(v) for v in np.unique(label))
        pred, pred_affine, _ = _load_label(preds[case])
        difference = _grid_difference(pred, pred_affine, label, label_affine)
        if difference is not None and not resample:
            raise EvaluateError(
                f"case {case}: prediction {preds[case]} is not on the grid of label "
                f"{labels[case]}: {difference}. Resample the prediction onto the label's grid "
                f"(--resample does it, nearest neighbour)"
            )
        if difference is not None:
            pred = resample_to_grid(pred, pred_affine, label_affine, label.shape, order=0)
            if echo is not None:
                echo(f"case {case}: prediction {preds[case].name} resampled onto the grid of "
                     f"label {labels[case].name} (nearest neighbour; {difference})")
        pred_values[case] = {int(v) for v in np.unique(pred)}
        spacing = tuple(meta["spacing"]) if use_meta_spacing else label_zooms
        try:
            rows.extend(evaluate_case(case, pred, label, classes, spacing[: label.ndim],
                                      nsd_tolerance_mm))
        except ValueError as err:
            raise EvaluateError(f"{labels[case]} / {preds[case]}: {err}") from None
    if echo is not None:
        for line in unlabelled_values(pred_values, label_values, classes):
            echo(line)
    write_per_case_csv(rows, out_csv)
    return rows


def unlabelled_values(pred_values: dict[str, set[int]], label_values: set[int],
                      classes: Sequence[str]) -> list[str]:
    """One note per foreground value that predictions hold but no label file does, naming the
    value, its class and the cases: it is scored as that class like any other (Dice 0 in the
    cases that predict it, NaN in the others), which is easy to misread without the note."""
    cases_of: dict[int, list[str]] = {}
    for case, values in sorted(pred_values.items()):
        for value in sorted(values - label_values - {0}):
            cases_of.setdefault(value, []).append(case)
    return [f"note: label value {value} ({classes[value - 1] if value <= len(classes) else '?'})"
            f" is in no label file but in the predictions of {len(cases)} case(s): "
            f"{', '.join(cases)}; scored as that class (Dice 0 where predicted)"
            for value, cases in sorted(cases_of.items())]
