"""`data prepare nifti`: a user's own NIfTI data, or an MSD / nnU-Net v2 folder.

Two layouts:
- `--images DIR --labels DIR --class-names A B ...`: images `<case>.nii(.gz)` or
  `<case>_0000.nii(.gz)` (nnU-Net channel suffix), labels `<case>.nii(.gz)`; label value i is
  class i (1-based) in `--class-names`.
- `--source DIR` holding `dataset.json`: MSD (`training` list of {image, label}, `labels`
  {"0": "background", "1": name}) or nnU-Net v2 (`labels` {"background": 0, name: i},
  `file_ending`, files `imagesTr/<case>_0000<ending>` and `labelsTr/<case><ending>`).
  Single-channel images only (channel 0000).

Splits: the sorted case ids shuffled with `np.random.default_rng(seed)`; the first
round(test_fraction n) are test, the next round(valid_fraction n) valid (each >= 1 when n >= 3),
the rest train. Intensities: `--clip LO HI` (fixed window, e.g. CT HU) or the image's 0.5 / 99.5
percentiles, rescaled to [0, 1].
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
from diffseg3d.core.data.nifti_io import DataError
from diffseg3d.core.data.preparation import prepare_pairs
from diffseg3d.core.data.preprocess import Intensity
from diffseg3d.core.data.sources import SourceTree, strip_nifti_suffix

VALID_FRACTION = 0.1
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def random_split(case_ids: list[str], seed: int = SPLIT_SEED, valid_fraction=VALID_FRACTION,
                 test_fraction=TEST_FRACTION) -> dict[str, list[str]]:
    """Seeded train/valid/test split of the module docstring; ids sorted within each split."""
    ordered = sorted(case_ids)
    n = len(ordered)
    if n < 3:
        raise DataError(f"need at least 3 cases for train/valid/test, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_fraction * n)))
    n_valid = max(1, int(round(valid_fraction * n)))
    if n_test + n_valid >= n:
        raise DataError(f"{n} cases leave none for training with test fraction {test_fraction}"
                        f" and valid fraction {valid_fraction}")
    pick = [ordered[i] for i in perm]
    return {"test": sorted(pick[:n_test]), "valid": sorted(pick[n_test:n_test + n_valid]),
            "train": sorted(pick[n_test + n_valid:])}


def _case_of_image(name: str) -> str | None:
    stem = strip_nifti_suffix(name)
    if stem is not None and stem.endswith("_0000"):
        stem = stem[: -len("_0000")]
    return stem


def pair_folders(images: Path | str, labels: Path | str) -> dict:
    """{case: (image ref, label ref)} from an images folder and a labels folder."""
    img_tree, lbl_tree = SourceTree(images), SourceTree(labels)
    label_by_case = {}
    for name in lbl_tree.names():
        stem = strip_nifti_suffix(name) if "/" not in name else None
        if stem is not None:
            label_by_case[stem] = lbl_tree.ref(name)
    pairs = {}
    for name in img_tree.names():
        case = _case_of_image(name) if "/" not in name else None
        if case is None:
            continue
        if case in pairs:
            raise DataError(f"{img_tree.path}: two images for case {case!r}")
        if case not in label_by_case:
            raise DataError(f"{img_tree.ref(name).name}: no label {case}.nii(.gz) in "
                            f"{lbl_tree.path}")
        pairs[case] = (img_tree.ref(name), label_by_case[case])
    if not pairs:
        raise DataError(f"{img_tree.path}: no .nii/.nii.gz images")
    return pairs


def _labels_to_names(labels: dict, where: str) -> list[str]:
    table = {}
    for key, value in labels.items():
        if isinstance(value, int) and not isinstance(value, bool):  # nnU-Net v2: name -> int
            table[value] = str(key)
        else:  # MSD: "int" -> name
            try:
                table[int(key)] = str(value)
            except ValueError as err:
                raise DataError(f"{where}: `labels` entry {key!r}: {value!r} is neither MSD "
                                "nor nnU-Net v2 style (regions are not supported)") from err
    foreground = sorted(k for k in table if k != 0)
    if foreground != list(range(1, len(foreground) + 1)) or not foreground:
        raise DataError(f"{where}: `labels` must number classes 1..K, got {foreground}")
    return [table[k] for k in foreground]


def find_msd_files(source: Path | str) -> tuple[list[str], dict, str]:
    """(class names, {case: (image ref, label ref)}, where) from an MSD / nnU-Net v2 folder."""
    tree = SourceTree(source)
    if not tree.has("dataset.json"):
        raise DataError(f"{tree.path}: no dataset.json")
    where = tree.ref("dataset.json").name
    try:
        meta = json.loads(tree.read_text("dataset.json"))
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: not valid JSON ({err})") from err
    if "labels" not in meta:
        raise DataError(f"{where}: missing key 'labels'")
    class_names = _labels_to_names(meta["labels"], where)
    pairs = {}
    if isinstance(meta.get("training"), list) and meta["training"]:
        for i, item in enumerate(meta["training"]):
            refs = []
            for field in ("image", "label"):
                rel = PurePosixPath(str(item.get(field, "")) if isinstance(item, dict) else "")
                if rel.is_absolute() or ".." in rel.parts:
                    raise DataError(f"{where}: training[{i}].{field} = {str(rel)!r} points "
                                    "outside the data root")
                if not tree.has(str(rel)):
                    raise DataError(f"{where}: training[{i}].{field} = {str(rel)!r} is missing")
                refs.append(tree.ref(str(rel)))
            pairs[strip_nifti_suffix(PurePosixPath(str(rel)).name)] = tuple(refs)
    else:
        ending = meta.get("file_ending", ".nii.gz")
        for name in tree.names():
            if name.startswith("imagesTr/") and name.endswith(f"_0000{ending}"):
                case = PurePosixPath(name).name[: -len(f"_0000{ending}")]
                label = f"labelsTr/{case}{ending}"
                if not tree.has(label):
                    raise DataError(f"{tree.ref(name).name}: no label {label}")
                pairs[case] = (tree.ref(name), tree.ref(label))
    if not pairs:
        raise DataError(f"{where}: no training cases found")
    return class_names, pairs, where


def prepare_nifti(out, *, spacing, shape, images=None, labels=None, class_names=None,
                  source=None, name="nifti", clip=None, crop_centre="image", seed=SPLIT_SEED,
                  valid_fraction=VALID_FRACTION, test_fraction=TEST_FRACTION,
                  overwrite=False, workers=1) -> Path:
    """Prepare a generic NIfTI data set (either layout of the module docstring) into `out`."""
    if source is not None:
        class_names, pairs, _ = find_msd_files(source)
        provenance = {"kind": "nifti", "layout": "msd/nnunet", "path": str(Path(source).resolve())}
    elif images is not None and labels is not None:
        if not class_names:
            raise DataError("--class-names is required with --images/--labels")
        pairs = pair_folders(images, labels)
        provenance = {"kind": "nifti", "layout": "folders", "images": str(Path(images).resolve()),
                      "labels": str(Path(labels).resolve())}
    else:
        raise DataError("give --source DIR (with dataset.json) or --images DIR --labels DIR")
    intensity = (Intensity(kind="range", low=float(clip[0]), high=float(clip[1])) if clip
                 else Intensity())
    splits = random_split(list(pairs), seed, valid_fraction, test_fraction)
    provenance["split_seed"] = seed
    return prepare_pairs(out, name=name, class_names=list(class_names), pairs=pairs,
                         splits=splits, spacing=spacing, shape=shape, intensity=intensity,
                         crop_centre=crop_centre, source=provenance, overwrite=overwrite,
                         workers=workers)
