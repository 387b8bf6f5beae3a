"""`data prepare nifti`: a user's own NIfTI data, or an MSD / nnU-Net v2 folder.

Two layouts:
- `--images DIR --labels DIR --class-names A B ...`: images `<case>.nii(.gz)` or
  `<case>_0000.nii(.gz)` (nnU-Net channel suffix), labels `<case>.nii(.gz)`; label value i is
  class i (1-based) in `--class-names`.
- `--source DIR` holding `dataset.json`: MSD (`training` list of {image, label}, `labels`
  {"0": "background", "1": name}) or nnU-Net v2 (`labels` {"background": 0, name: i},
  `file_ending`, files `imagesTr/<case>_0000<ending>` and `labelsTr/<case><ending>`).
  Single-channel images only (channel 0000).

Where cases are found by file name (`--images/--labels`, nnU-Net's imagesTr/labelsTr) every image
needs a label and every label an image: a file without its partner is an error naming it, not a
silently dropped case. A case listed twice in an MSD `training` list is an error naming both
entries; a listed file that is not NIfTI (`.mha`, ...) is an error naming it.

Splits: the sorted case ids shuffled with `np.random.default_rng(seed)`; the first
round(test_fraction n) are test, the next round(valid_fraction n) valid (each >= 1 when n >= 3),
the rest train. Both fractions must lie strictly between 0 and 1 and sum to less than 1.
Intensities: `--clip LO HI` (fixed window, e.g. CT HU; LO < HI) or the image's 0.5 / 99.5
percentiles, rescaled to [0, 1].
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath

import numpy as np
from diffseg3d.core.data.nifti.io import DataError
from diffseg3d.core.data.preparation import check_geometry, prepare_pairs
from diffseg3d.core.data.preprocess import Intensity
from diffseg3d.core.data.sources.tree import SourceTree, nifti_case, strip_nifti_suffix

VALID_FRACTION = 0.1
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def random_split(case_ids: list[str], seed: int = SPLIT_SEED, valid_fraction=VALID_FRACTION,
                 test_fraction=TEST_FRACTION) -> dict[str, list[str]]:
    """Seeded train/valid/test split of the module docstring; ids sorted within each split."""
    check_fractions(valid_fraction, test_fraction)
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


def check_fractions(valid_fraction, test_fraction) -> None:
    """Raise DataError unless both split fractions are in (0, 1) and sum to less than 1."""
    for key, value in (("valid fraction", valid_fraction), ("test fraction", test_fraction)):
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or not 0 < value < 1):
            raise DataError(f"{key} must be a number strictly between 0 and 1, got {value!r}")
    if valid_fraction + test_fraction >= 1:
        raise DataError(f"valid fraction {valid_fraction} + test fraction {test_fraction} leave "
                        "nothing for training (their sum must be < 1)")


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
    _check_no_orphan_labels(label_by_case, pairs, str(img_tree.path))
    return pairs


def _check_no_orphan_labels(label_by_case: dict, pairs: dict, images: str) -> None:
    # A label without its image would silently drop a case the user meant to train on.
    orphans = sorted(set(label_by_case) - set(pairs))
    if orphans:
        first = label_by_case[orphans[0]].name
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise DataError(f"{first}: label with no image {orphans[0]}[_0000].nii(.gz) in "
                        f"{images}{more}")


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
    pairs, entry_of = {}, {}
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
                nifti_case(rel.name, f"{where}: training[{i}].{field}")
                refs.append(tree.ref(str(rel)))
            case = nifti_case(rel.name, f"{where}: training[{i}].label")
            if case in pairs:
                raise DataError(f"{where}: training[{i}] repeats case {case!r} of "
                                f"training[{entry_of[case]}] (label {str(rel)!r})")
            pairs[case], entry_of[case] = tuple(refs), i
    else:
        ending = meta.get("file_ending", ".nii.gz")
        if ending not in (".nii.gz", ".nii"):
            raise DataError(f"{where}: file_ending {ending!r} is not NIfTI (.nii.gz or .nii); "
                            "convert the files first (e.g. with SimpleITK)")
        labels = {}
        for name in tree.names():
            if name.startswith("labelsTr/") and name.endswith(ending):
                labels[PurePosixPath(name).name[: -len(ending)]] = tree.ref(name)
            if name.startswith("imagesTr/") and name.endswith(f"_0000{ending}"):
                case = PurePosixPath(name).name[: -len(f"_0000{ending}")]
                label = f"labelsTr/{case}{ending}"
                if not tree.has(label):
                    raise DataError(f"{tree.ref(name).name}: no label {label}")
                pairs[case] = (tree.ref(name), tree.ref(label))
        _check_no_orphan_labels(labels, pairs, f"{tree.path}/imagesTr")
    if not pairs:
        raise DataError(f"{where}: no training cases found")
    return class_names, pairs, where


def prepare_nifti(out, *, spacing, shape, images=None, labels=None, class_names=None,
                  source=None, name="nifti", clip=None, crop_centre="image", seed=SPLIT_SEED,
                  valid_fraction=VALID_FRACTION, test_fraction=TEST_FRACTION,
                  overwrite=False, workers=1) -> Path:
    """Prepare a generic NIfTI data set (either layout of the module docstring) into `out`.

    Raises DataError on bad arguments (spacing, shape, clip window, split fractions) before any
    file is read, and on bad files (naming them)."""
    check_geometry(spacing, shape)
    check_fractions(valid_fraction, test_fraction)
    if clip is not None:
        clip = list(clip)
        if (len(clip) != 2 or not all(isinstance(c, int | float) and math.isfinite(c)
                                      for c in clip) or clip[0] >= clip[1]):
            raise DataError(f"--clip LO HI must be two finite numbers with LO < HI, got {clip}")
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
