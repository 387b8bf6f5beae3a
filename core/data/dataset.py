"""`PreparedDataset`: a validated view of a prepared data set folder (see `preparation.py`).

`PreparedDataset.load(root, verify=...)` checks dataset.json (required keys and types, case ids,
paths inside the root, files present) and, depending on `verify`, the NIfTI files:

- "none": dataset.json and file presence only;
- "headers" (default): also each NIfTI header: shape equals dataset.json `shape`, image and label
  agree in shape and affine (fast: no voxel data is read);
- "full": also reads every voxel: corrupt/truncated files, NaN/inf voxels, label values outside
  the class list.

The cached arrays are checked (finite images, labels in the class list) the first time a split is
loaded. Every error is a `DataError` that names the file (or dataset.json key) at fault.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from diffseg3d.core.data.nifti.io import DataError, check_label_values, check_same_grid, read_volume
from diffseg3d.core.data.preparation import DATASET_JSON, FORMAT_VERSION, SPLITS
from diffseg3d.core.data.safe_name import UnsafeNameError, check_safe_name

VERIFY_LEVELS = ("none", "headers", "full")
_REQUIRED = {"name": str, "class_names": list, "spacing": list, "shape": list, "splits": dict}


class PreparedDataset:
    """A prepared data set folder. Build it with `PreparedDataset.load(root)`."""

    def __init__(self, root: Path, meta: dict):
        self.root = Path(root)
        self.meta = meta
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # ---- loading and validation -------------------------------------------------------------
    @classmethod
    def load(cls, root: Path | str, verify: str = "headers") -> PreparedDataset:
        """Read and validate `root/dataset.json` (and the files, per `verify`)."""
        if verify not in VERIFY_LEVELS:
            raise ValueError(f"verify={verify!r} is not one of {VERIFY_LEVELS}")
        root = Path(root)
        meta_path = root / DATASET_JSON
        if not meta_path.is_file():
            raise DataError(f"{meta_path}: missing; is {root} a prepared data set folder?")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{meta_path}: not valid JSON ({err})") from err
        _check_meta(meta, meta_path)
        dataset = cls(root, meta)
        for case_id in dataset.all_case_ids():
            dataset._check_case_paths(case_id)
        if verify != "none":
            for case_id in dataset.all_case_ids():
                dataset._check_case_files(case_id, full=verify == "full")
        return dataset

    def _case_entry(self, case_id: str) -> dict:
        cases = self.meta.get("cases") or {}
        if cases and case_id not in cases:
            raise DataError(f"{self.root / DATASET_JSON}: case {case_id!r} is in `splits` but "
                            "not in `cases`")
        return cases.get(case_id) or {"image": f"imagesTr/{case_id}.nii.gz",
                                      "label": f"labelsTr/{case_id}.nii.gz"}

    def _resolve(self, case_id: str, key: str) -> Path:
        rel = self._case_entry(case_id).get(key)
        where = f"{self.root / DATASET_JSON}: cases.{case_id}.{key}"
        if not isinstance(rel, str) or not rel:
            raise DataError(f"{where}: missing or not a string")
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise DataError(f"{where} = {rel!r} points outside the data root {self.root}")
        return path

    def _check_case_paths(self, case_id: str) -> None:
        for key in ("image", "label"):
            path = self._resolve(case_id, key)
            if not path.is_file():
                raise DataError(f"{path}: case {case_id!r} is listed in dataset.json but its "
                                f"{key} file is missing")

    def _check_case_files(self, case_id: str, *, full: bool) -> None:
        img_path, lbl_path = self.image_path(case_id), self.label_path(case_id)
        if full:
            image = read_volume(img_path)
            label = read_volume(lbl_path, is_label=True)
            check_same_grid(image, label, str(img_path), str(lbl_path))
            check_label_values(label.array, self.num_classes, str(lbl_path))
            shapes = {img_path: image.array.shape}
        else:
            headers = {}
            for path in (img_path, lbl_path):
                try:
                    img = nib.load(str(path))
                    headers[path] = (tuple(img.shape[:3]), np.asarray(img.affine))
                except Exception as err:
                    raise DataError(f"{path}: not a readable NIfTI file ({err})") from err
            (shape_i, aff_i), (shape_l, aff_l) = headers[img_path], headers[lbl_path]
            if shape_i != shape_l:
                raise DataError(f"{lbl_path}: shape {shape_l} differs from image {img_path} "
                                f"shape {shape_i}")
            if not np.allclose(aff_i, aff_l, rtol=1e-5, atol=1e-3):
                raise DataError(f"{lbl_path}: affine differs from image {img_path}")
            shapes = {img_path: shape_i}
        if tuple(shapes[img_path]) != self.shape:
            raise DataError(f"{img_path}: shape {tuple(shapes[img_path])} differs from "
                            f"dataset.json shape {self.shape}")

    # ---- metadata ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def class_names(self) -> list[str]:
        """Foreground class names; index i is label value i + 1."""
        return list(self.meta["class_names"])

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.meta["class_names"]) + 1

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.meta["spacing"])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.meta["shape"])

    def case_ids(self, split: str) -> list[str]:
        if split not in self.meta["splits"]:
            raise KeyError(f"split {split!r} not in {sorted(self.meta['splits'])} "
                           f"({self.root / DATASET_JSON})")
        return list(self.meta["splits"][split])

    def all_case_ids(self) -> list[str]:
        return [c for s in self.meta["splits"] for c in self.meta["splits"][s]]

    def image_path(self, case_id: str) -> Path:
        return self._resolve(case_id, "image")

    def label_path(self, case_id: str) -> Path:
        return self._resolve(case_id, "label")

    def affine(self, case_id: str) -> np.ndarray:
        """Prepared voxel-to-world (RAS mm) affine of a case, (4, 4) float64."""
        entry = self._case_entry(case_id)
        if "affine" in entry:
            return np.asarray(entry["affine"], dtype=np.float64)
        return np.asarray(nib.load(str(self.image_path(case_id))).affine, dtype=np.float64)

    def original(self, case_id: str) -> dict | None:
        """Original image provenance {image, affine (4x4), shape} or None (synthetic data)."""
        return self._case_entry(case_id).get("original")

    # ---- arrays -----------------------------------------------------------------------------
    def raw_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images (N, *S) float32, labels (N, *S) uint8/int) as stored: memory-mapped cache
        files when present, else read from the NIfTI files. Validated on first use."""
        if split not in self._arrays:
            self._arrays[split] = self._load_split(split)
        return self._arrays[split]

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images (N, *S) float32, labels (N, *S) int32) of a split, in `case_ids` order."""
        images, labels = self.raw_arrays(split)
        return images, np.asarray(labels, dtype=np.int32)

    def _load_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        ids = self.case_ids(split)
        files = (self.meta.get("cache") or {}).get(split)
        if files:
            img_file, lbl_file = (self._cache_path(files, k) for k in ("images", "labels"))
        if files and img_file.is_file() and lbl_file.is_file():
            images = _load_npy(img_file)
            labels = _load_npy(lbl_file)
            for arr, path in ((images, img_file), (labels, lbl_file)):
                if arr.shape != (len(ids), *self.shape):
                    raise DataError(f"{path}: shape {arr.shape} != ({len(ids)}, *{self.shape}) "
                                    f"from dataset.json split {split!r}")
            self._check_cached(images, labels, ids, img_file, lbl_file)
            return images, labels
        images = np.zeros((len(ids), *self.shape), np.float32)
        labels = np.zeros((len(ids), *self.shape), np.int32)
        for i, case_id in enumerate(ids):
            image = read_volume(self.image_path(case_id))
            label = read_volume(self.label_path(case_id), is_label=True)
            check_label_values(label.array, self.num_classes, str(self.label_path(case_id)))
            if image.array.shape != self.shape or label.array.shape != self.shape:
                raise DataError(f"{self.image_path(case_id)}: shape differs from {self.shape}")
            images[i], labels[i] = image.array, label.array
        return images, labels

    def _cache_path(self, files: dict, key: str) -> Path:
        rel = files.get(key, "")
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise DataError(f"{self.root / DATASET_JSON}: cache path {rel!r} points outside "
                            f"the data root {self.root}")
        return path

    def _check_cached(self, images, labels, ids, img_file, lbl_file) -> None:
        for i, case_id in enumerate(ids):
            if not np.all(np.isfinite(images[i])):
                raise DataError(f"{img_file}: case {case_id!r} has NaN/inf voxels")
            if labels[i].size and (labels[i].max() >= self.num_classes or labels[i].min() < 0):
                raise DataError(f"{lbl_file}: case {case_id!r} has label values outside "
                                f"0..{self.num_classes - 1}")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: unreadable cache array ({err})") from err


def _check_meta(meta: dict, meta_path: Path) -> None:
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: top level must be an object")
    for key, kind in _REQUIRED.items():
        if key not in meta:
            raise DataError(f"{meta_path}: missing key {key!r}")
        if not isinstance(meta[key], kind):
            raise DataError(f"{meta_path}: key {key!r} must be a {kind.__name__}, "
                            f"got {type(meta[key]).__name__}")
    if len(meta["spacing"]) != 3 or not all(
            isinstance(s, int | float) and s > 0 for s in meta["spacing"]):
        raise DataError(f"{meta_path}: `spacing` must be 3 positive numbers, "
                        f"got {meta['spacing']}")
    if len(meta["shape"]) != 3 or not all(isinstance(s, int) and s > 0 for s in meta["shape"]):
        raise DataError(f"{meta_path}: `shape` must be 3 positive integers, got {meta['shape']}")
    if not all(isinstance(c, str) for c in meta["class_names"]) or not meta["class_names"]:
        raise DataError(f"{meta_path}: `class_names` must be a non-empty list of strings")
    # The name and the case ids become folder and file names of checkpoints and predictions.
    try:
        check_safe_name(meta["name"], what="key 'name'")
        for ids in meta["splits"].values():
            for case_id in ids if isinstance(ids, list) else []:
                check_safe_name(case_id, what="case id")
    except UnsafeNameError as err:
        raise DataError(f"{meta_path}: {err}") from err
    version = meta.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(f"{meta_path}: format_version {version!r} is newer than this diffseg3d "
                        f"reads ({FORMAT_VERSION}); re-prepare or upgrade")
    unknown = set(meta["splits"]) - set(SPLITS)
    if unknown:
        raise DataError(f"{meta_path}: unknown splits {sorted(unknown)}; expected {SPLITS}")
    seen: set[str] = set()
    for split, ids in meta["splits"].items():
        if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
            raise DataError(f"{meta_path}: splits.{split} must be a list of case ids")
        dup = seen.intersection(ids)
        if dup or len(set(ids)) != len(ids):
            raise DataError(f"{meta_path}: splits.{split} repeats case ids {sorted(dup)[:5]}")
        seen.update(ids)
