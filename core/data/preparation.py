"""Writing a prepared data set folder atomically.

Layout (docs/ARCHITECTURE.md, diffseg3d.core.data): `imagesTr/<case>.nii.gz`,
`labelsTr/<case>.nii.gz` (NIfTI with the prepared affine), `cache/<split>_images.npy` float32
(N, X, Y, Z) and `cache/<split>_labels.npy` uint8 (N, X, Y, Z) in split order (memory-mappable),
and `dataset.json`. Everything is written into a hidden temporary sibling folder
(`.<out>.partial-<pid>-<random>`) that is renamed onto the output at the end, so an interrupted
or failed preparation leaves no partial data set; a failure removes the temporary folder, and
one left by a killed process (its pid no longer running) is removed by the next preparation.

An output folder that already holds a preparation with the same fingerprint (name, classes,
spacing, shape, splits, source, preprocessing) is left alone; a different preparation is an error
unless `overwrite=True` (the error names each setting that differs, old -> new). A non-empty
folder without dataset.json is not a prepared data set and is never touched, `overwrite` or not.

Arguments are checked before anything is read or written (`check_geometry`, `check_intensity`):
spacing three finite numbers > 0 (mm), shape three whole numbers >= 1, an intensity window with
low < high.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from diffseg3d.core.data.nifti.io import DataError, check_label_values, write_volume
from diffseg3d.core.data.preprocess import Intensity, PreparedCase, preprocess_case
from diffseg3d.core.data.safe_name import UnsafeNameError, check_safe_name

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
DATASET_JSON = "dataset.json"
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def fingerprint(spec: dict) -> str:
    """sha256 of the canonical JSON of a preparation spec (what makes two preparations equal)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_case_id(case_id: str) -> None:
    """Case ids become file names: letters, digits, `_ . -`, no path separators."""
    if not _CASE_ID.match(case_id) or ".." in case_id:
        raise DataError(f"case id {case_id!r} is not a safe file name")


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def check_geometry(spacing, shape) -> None:
    """Raise DataError unless `spacing` is 3 finite numbers > 0 (mm) and `shape` 3 whole
    numbers >= 1 (voxels)."""
    spacing, shape = list(spacing), list(shape)
    if len(spacing) != 3 or not all(_is_number(s) and math.isfinite(s) and s > 0
                                    for s in spacing):
        raise DataError(f"spacing must be 3 finite numbers > 0 (mm per voxel), got {spacing}")
    if len(shape) != 3 or not all(_is_number(s) and float(s).is_integer() and s >= 1
                                  for s in shape):
        raise DataError(f"shape must be 3 whole numbers >= 1 (voxels), got {shape}")


def check_intensity(intensity: Intensity) -> None:
    """Raise DataError unless the intensity window is usable: finite `low < high`, and for
    percentiles within [0, 100] (`low >= high` would make every image blank)."""
    low, high = intensity.low, intensity.high
    if not (_is_number(low) and _is_number(high) and math.isfinite(low)
            and math.isfinite(high)):
        raise DataError(f"intensity window must be two finite numbers, got [{low}, {high}]")
    if low >= high:
        raise DataError(f"intensity window [{low:g}, {high:g}]: low must be < high")
    if intensity.kind == "percentile" and not 0 <= low < high <= 100:
        raise DataError(f"intensity percentiles [{low:g}, {high:g}] must lie in [0, 100]")


def _existing_meta(out: Path) -> dict | None:
    """The dataset.json of a prepared `out`; None when `out` is missing or empty."""
    meta = out / DATASET_JSON
    if not out.exists():
        return None
    if not meta.exists():
        if any(out.iterdir()):
            count = sum(1 for _ in out.iterdir())
            raise DataError(f"{out}: exists with {count} entries but no {DATASET_JSON}, so it is "
                            "not a prepared data set folder; it is never replaced or deleted "
                            "(not even with --overwrite): choose a new or empty folder")
        return None
    try:
        data = json.loads(meta.read_text())
    except (json.JSONDecodeError, OSError) as err:
        raise DataError(f"{meta}: unreadable ({err}); remove the folder or choose another") from err
    if not isinstance(data, dict):
        raise DataError(f"{meta}: not a JSON object; remove the folder or choose another")
    return data


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else f"{text[:77]}..."


#: dataset.json keys that are results of a preparation, not its settings.
_RESULT_KEYS = ("fingerprint", "cases", "cache")


def spec_differences(old: dict, new: dict, *, nested: bool = False) -> list[str]:
    """`key: old -> new` for every preparation setting that differs between an existing
    dataset.json `old` and a spec `new` (dotted into `source`, `preprocessing` and `splits`)."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if not nested and key in _RESULT_KEYS:
            continue
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            lines += [f"{key}.{line}" for line in spec_differences(a, b, nested=True)]
        elif nested and key in SPLITS and isinstance(a, list) and isinstance(b, list):
            lines.append(f"{key}: {len(a)} -> {len(b)} cases, {len(set(a) ^ set(b))} ids differ")
        else:
            lines.append(f"{key}: {_short(a)} -> {_short(b)}")
    return lines


def write_prepared(
    out: Path | str,
    *,
    name: str,
    class_names: list[str],
    spacing,
    shape,
    splits: dict[str, list[str]],
    source: dict,
    preprocessing: dict,
    cases: Callable[[str], PreparedCase],
    overwrite: bool = False,
    workers: int = 1,
) -> Path:
    """Prepare `out` from per-case producers; returns the output path.

    `cases(case_id) -> PreparedCase` is called once per case; with `workers` > 1 it runs in that
    many spawned processes (so it must be picklable, e.g. a `functools.partial` of a module-level
    function) while this process writes the results in split order (train, valid, test); the
    output does not depend on `workers`.
    Raises `DataError` for a different existing preparation (without `overwrite`), bad case ids,
    split problems, or a prepared case of the wrong shape/labels (naming the case).
    """
    out = Path(out)
    check_geometry(spacing, shape)
    try:  # dataset.json's name labels trials and their folders
        check_safe_name(name, what="data set name")
    except UnsafeNameError as err:
        raise DataError(str(err)) from None
    spacing = [float(s) for s in spacing]
    shape = [int(s) for s in shape]
    splits = {k: [str(c) for c in splits.get(k, [])] for k in SPLITS}
    all_ids = [c for k in SPLITS for c in splits[k]]
    if len(set(all_ids)) != len(all_ids):
        dup = sorted({c for c in all_ids if all_ids.count(c) > 1})
        raise DataError(f"cases in more than one split (or twice): {dup[:10]}")
    if not all_ids:
        raise DataError(f"{name}: no cases to prepare")
    for case_id in all_ids:
        check_case_id(case_id)
    spec = {
        "name": name, "class_names": list(class_names), "spacing": spacing, "shape": shape,
        "splits": splits, "source": source, "preprocessing": preprocessing,
        "format_version": FORMAT_VERSION,
    }
    fp = fingerprint(spec)
    old = _existing_meta(out)
    if old is not None and not overwrite:
        if old.get("fingerprint", "") == fp:
            logger.info("%s already holds this preparation; nothing to do", out)
            return out
        changed = "; ".join(spec_differences(old, spec)) or (
            f"fingerprint {str(old.get('fingerprint'))[:12]} -> {fp[:12]}")
        raise DataError(f"{out}: already holds a different preparation ({changed}); pass "
                        "--overwrite or choose another folder")

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        records = _write_cases(tmp, spec, cases, workers)
        meta = dict(spec, fingerprint=fp, cases=records,
                    cache={k: {"images": f"cache/{k}_images.npy",
                               "labels": f"cache/{k}_labels.npy"} for k in SPLITS})
        (tmp / DATASET_JSON).write_text(json.dumps(meta, indent=1))
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _produced(produce: Callable[[str], PreparedCase], ids: list[str],
              workers: int) -> Iterator[PreparedCase]:
    """produce(c) for c in ids, in order; computed up to 2 * workers ahead in worker processes."""
    if workers <= 1:
        for case_id in ids:
            yield produce(case_id)
        return
    # spawn, not fork: the caller may hold threads (JAX, a loader) that fork would copy broken.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context)
    try:
        pending: collections.deque = collections.deque()
        queue_ids = iter(ids)
        for case_id in itertools.islice(queue_ids, 2 * workers):
            pending.append(pool.submit(produce, case_id))
        while pending:
            result = pending.popleft().result()
            for case_id in itertools.islice(queue_ids, 1):
                pending.append(pool.submit(produce, case_id))
            yield result
    finally:  # on an error or an early close, drop the queued cases instead of computing them
        pool.shutdown(wait=True, cancel_futures=True)


def _write_cases(tmp: Path, spec: dict, produce, workers: int) -> dict:
    num_classes = len(spec["class_names"]) + 1
    label_dtype = np.uint8 if num_classes <= 256 else np.int16
    (tmp / "cache").mkdir()
    all_ids = [c for split in SPLITS for c in spec["splits"][split]]
    produced = _produced(produce, all_ids, workers)
    try:
        return _write_splits(tmp, spec, produced, num_classes, label_dtype)
    finally:
        produced.close()


def _write_splits(tmp: Path, spec: dict, produced: Iterator[PreparedCase], num_classes: int,
                  label_dtype) -> dict:
    shape = tuple(spec["shape"])
    records = {}
    for split in SPLITS:
        ids = spec["splits"][split]
        images = np.lib.format.open_memmap(tmp / "cache" / f"{split}_images.npy", mode="w+",
                                           dtype=np.float32, shape=(len(ids), *shape))
        labels = np.lib.format.open_memmap(tmp / "cache" / f"{split}_labels.npy", mode="w+",
                                           dtype=label_dtype, shape=(len(ids), *shape))
        for i, case_id in enumerate(ids):
            case = next(produced)
            where = f"case {case_id}"
            if case.image.shape != shape or case.label.shape != shape:
                raise DataError(f"{where}: prepared shapes {case.image.shape}/{case.label.shape} "
                                f"differ from the target shape {shape}")
            check_label_values(case.label, num_classes, where)
            if not np.all(np.isfinite(case.image)):
                raise DataError(f"{where}: prepared image has NaN/inf voxels")
            rel_img, rel_lbl = f"imagesTr/{case_id}.nii.gz", f"labelsTr/{case_id}.nii.gz"
            write_volume(tmp / rel_img, case.image, case.affine, is_label=False)
            write_volume(tmp / rel_lbl, case.label, case.affine, is_label=True)
            images[i] = case.image
            labels[i] = case.label
            records[case_id] = {"image": rel_img, "label": rel_lbl,
                                "affine": np.asarray(case.affine).tolist(),
                                "original": case.original}
            logger.debug("prepared %s (%s)", case_id, split)
        images.flush()
        labels.flush()
        del images, labels
    return records


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_stale_partials(out: Path) -> None:
    """Delete `.<out>.partial-<pid>-*` folders left by killed preparations (their pid is gone)."""
    for path in out.parent.glob(f".{out.name}.partial-*"):
        pid = path.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            logger.info("removing %s left by an interrupted preparation", path)
            shutil.rmtree(path, ignore_errors=True)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename `tmp` onto `out`; an existing `out` is moved aside first and removed after."""
    trash = None
    if out.exists():
        trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, trash)
    try:
        os.replace(tmp, out)
    except BaseException:
        if trash is not None:
            os.replace(trash, out)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _preprocess_pair(case_id: str, *, pairs: dict, **kwargs) -> PreparedCase:
    image_ref, label_ref = pairs[case_id]
    return preprocess_case(image_ref, label_ref, **kwargs)


def prepare_pairs(out, *, name: str, class_names: list[str], pairs: dict, splits: dict,
                  spacing, shape, intensity: Intensity, crop_centre: str, source: dict,
                  overwrite: bool = False, workers: int = 1) -> Path:
    """Prepare image/label file pairs `{case_id: (image FileRef, label FileRef)}` with the
    chain of `preprocess.preprocess_case` into `out` (atomically, see `write_prepared`)."""
    check_geometry(spacing, shape)
    check_intensity(intensity)
    missing = [c for k in SPLITS for c in splits.get(k, []) if c not in pairs]
    if missing:
        raise DataError(f"{source.get('path', name)}: split cases without files: {missing[:10]}")
    produce = functools.partial(
        _preprocess_pair, pairs=pairs, num_classes=len(class_names) + 1, spacing=spacing,
        shape=shape, intensity=intensity, crop_centre=crop_centre)

    preprocessing = {
        "orientation": "RAS (nibabel.as_closest_canonical)",
        "intensity": intensity.to_dict(), "normalise": "clip window -> [0, 1]",
        "spacing": [float(s) for s in spacing], "shape": [int(s) for s in shape],
        "resample": {"image": "linear", "label": "nearest", "library": "scipy.ndimage"},
        "crop_centre": crop_centre, "pad_value": 0.0,
    }
    return write_prepared(out, name=name, class_names=class_names, spacing=spacing, shape=shape,
                          splits=splits, source=source, preprocessing=preprocessing,
                          cases=produce, overwrite=overwrite, workers=workers)
