"""`data prepare amos-ct`: AMOS22 abdominal CT (Ji et al. 2022), 15 organs.

Source: the AMOS22 zip or folder holding `amos22/dataset.json` (MSD style: `training` and
`validation` lists of {image, label} paths relative to the folder of dataset.json, and `labels`
{"0": "background", "1": "spleen", ...}), `imagesTr/`, `labelsTr/`, `imagesVa/`, `labelsVa/`.
Without a `validation` list the `imagesVa`/`labelsVa` folders are scanned. Only CT is used: case
ids `amos_XXXX` with XXXX <= 500 (ids above 500 are MR).

Paper preprocessing: HU clipped to [-991, 362] and rescaled to [0, 1], 1.5 x 1.5 x 5.0 mm,
192 x 128 x 128. Split: official training -> train; official validation (sorted ids) shuffled
with `np.random.default_rng(seed)`, the first round(0.1 n) -> valid, the rest -> test
(100 -> 10 / 90).
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

import numpy as np
from diffseg3d.core.data.nifti.io import DataError
from diffseg3d.core.data.preparation import check_geometry, prepare_pairs
from diffseg3d.core.data.preprocess import Intensity
from diffseg3d.core.data.sources.tree import SourceTree, nifti_case, strip_nifti_suffix

SPACING = (1.5, 1.5, 5.0)
SHAPE = (192, 128, 128)
INTENSITY = Intensity(kind="range", low=-991.0, high=362.0)
MAX_CT_ID = 500
VALID_FRACTION = 0.1
SPLIT_SEED = 0
_AMOS_ID = re.compile(r"amos_(\d+)$")


def ct_case_id(case_id: str) -> bool:
    """True for AMOS CT ids (`amos_XXXX`, XXXX <= 500)."""
    match = _AMOS_ID.search(case_id)
    return bool(match) and int(match.group(1)) <= MAX_CT_ID


def split_validation(case_ids: list[str], seed: int = SPLIT_SEED,
                     fraction: float = VALID_FRACTION) -> tuple[list[str], list[str]]:
    """Shuffle sorted `case_ids` with `seed`; the first round(fraction n) are valid, rest test."""
    ordered = sorted(case_ids)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    n_valid = int(round(fraction * len(ordered)))
    if len(ordered) >= 2:
        n_valid = min(max(n_valid, 1), len(ordered) - 1)
    valid = sorted(ordered[i] for i in perm[:n_valid])
    test = sorted(ordered[i] for i in perm[n_valid:])
    return valid, test


def _class_names(labels: dict, where: str) -> list[str]:
    try:
        table = {int(k): str(v) for k, v in labels.items()}
    except (TypeError, ValueError) as err:
        raise DataError(f"{where}: `labels` keys must be integers ({err})") from err
    foreground = sorted(k for k in table if k != 0)
    if foreground != list(range(1, len(foreground) + 1)):
        raise DataError(f"{where}: `labels` must number classes 1..K, got {foreground}")
    return [table[k] for k in foreground]


def _entries(tree: SourceTree, base: PurePosixPath, items, where: str, key: str) -> dict:
    pairs = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise DataError(f"{where}: {key}[{i}] must be an object with image and label")
        refs = []
        for field in ("image", "label"):
            rel = PurePosixPath(item[field])
            if rel.is_absolute() or ".." in rel.parts:
                raise DataError(f"{where}: {key}[{i}].{field} = {item[field]!r} points outside "
                                "the data root")
            name = str(base / rel) if str(base) != "." else str(rel)
            if not tree.has(name):
                raise DataError(f"{where}: {key}[{i}].{field} = {item[field]!r} is missing "
                                f"from {tree.path}")
            nifti_case(rel.name, f"{where}: {key}[{i}].{field}")
            refs.append(tree.ref(name))
        case_id = nifti_case(PurePosixPath(item["image"]).name, f"{where}: {key}[{i}].image")
        if case_id in pairs:
            raise DataError(f"{where}: {key}[{i}] repeats case {case_id!r} (image "
                            f"{item['image']!r})")
        pairs[case_id] = tuple(refs)
    return pairs


def _scan(tree: SourceTree, base: PurePosixPath, images: str, labels: str) -> list[dict]:
    prefix = "" if str(base) == "." else f"{base}/"
    items = []
    for name in tree.names():
        if name.startswith(f"{prefix}{images}/") and strip_nifti_suffix(name):
            fname = PurePosixPath(name).name
            items.append({"image": f"{images}/{fname}", "label": f"{labels}/{fname}"})
    return items


def find_amos_files(source: Path | str):
    """-> (class names, train pairs, validation pairs, where), CT cases only."""
    tree = SourceTree(source)
    hits = tree.find("dataset.json")
    if not hits:
        raise DataError(f"{tree.path}: no dataset.json (expected amos22/dataset.json)")
    meta_name = hits[0]
    where = tree.ref(meta_name).name
    try:
        meta = json.loads(tree.read_text(meta_name))
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: not valid JSON ({err})") from err
    for key in ("labels", "training"):
        if key not in meta:
            raise DataError(f"{where}: missing key {key!r}")
    base = PurePosixPath(meta_name).parent
    validation = meta.get("validation") or _scan(tree, base, "imagesVa", "labelsVa")
    train = _entries(tree, base, [e for e in meta["training"] if ct_case_id(_stem(e))], where,
                     "training")
    valid = _entries(tree, base, [e for e in validation if ct_case_id(_stem(e))], where,
                     "validation")
    return _class_names(meta["labels"], where), train, valid, where


def _stem(entry) -> str:
    image = entry.get("image", "") if isinstance(entry, dict) else ""
    return strip_nifti_suffix(PurePosixPath(image).name) or ""


def prepare_amos_ct(source, out, *, spacing=SPACING, shape=SHAPE, crop_centre="image",
                    seed=SPLIT_SEED, overwrite=False, workers=1) -> Path:
    """Prepare the AMOS CT data set into `out`; see the module docstring."""
    check_geometry(spacing, shape)  # bad arguments fail before the source is read
    class_names, train, official_valid, where = find_amos_files(source)
    if not train or not official_valid:
        raise DataError(f"{where}: needs CT cases (ids <= {MAX_CT_ID}) in both training and "
                        f"validation, found {len(train)} and {len(official_valid)}")
    both = sorted(set(train) & set(official_valid))
    if both:
        raise DataError(f"{where}: cases in both training and validation: {both[:10]}")
    valid, test = split_validation(list(official_valid), seed)
    return prepare_pairs(
        out, name="amos-ct", class_names=class_names, pairs={**train, **official_valid},
        splits={"train": sorted(train), "valid": valid, "test": test},
        spacing=spacing, shape=shape, intensity=INTENSITY, crop_centre=crop_centre,
        source={"kind": "amos-ct", "path": str(Path(source).resolve()),
                "ct_ids": f"<= {MAX_CT_ID}", "split_seed": seed,
                "split": "official train -> train; official validation -> 10% valid / 90% test"},
        overwrite=overwrite, workers=workers)
