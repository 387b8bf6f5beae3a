"""A trial's prepared data set as an MLflow dataset input of its run (the runs table's Dataset
column and filter, the run page's Datasets).

The dataset (`PreparedVolumes`): name = the data set's `name` (dataset.json), source = the
prepared folder (a local source, its absolute path), digest = `dataset_digest`: sha256 over the
preparation record and the bytes of every split's prepared image and label arrays, so two runs
on different data (another preparation, other cases, other voxels) show different digests.
Profile (JSON): the split sizes, shape, spacing and foreground classes. One input per run, with
MLflow's context tag `train` (the trial trains, validates and tests on the one prepared set).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from mlflow.data.dataset import Dataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

#: MLflow context tag value of the input.
CONTEXT = "train"
#: Hex digits of the digest shown in the UI (MLflow suggests 8-10).
DIGEST_CHARS = 10
#: Cases hashed per update: the (memory-mapped) arrays are read case by case, never whole.
_CASE_CHUNK = 1


class PreparedVolumes(Dataset):
    """A prepared data set folder as an MLflow dataset (module docstring)."""

    def __init__(self, source: LocalArtifactDatasetSource, name: str, digest: str,
                 profile: dict[str, Any]):
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest)

    def _compute_digest(self) -> str:  # the digest is always given (`dataset_digest`)
        raise NotImplementedError

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    @property
    def schema(self) -> None:
        return None

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def preparation_identity(meta: dict) -> dict[str, Any]:
    """The dataset.json entries that define the prepared arrays: name, classes, spacing, shape,
    splits and the preprocessing record."""
    keys = ("name", "class_names", "spacing", "shape", "splits", "preprocessing")
    return {key: meta.get(key) for key in keys}


def dataset_digest(dataset) -> str:
    """`DIGEST_CHARS` hex digits of sha256 over `preparation_identity(dataset.meta)` (canonical
    JSON) and, per split in sorted order, its case ids and the raw bytes of its image (float32)
    and label (int32) arrays (`PreparedDataset.arrays`)."""
    sha = hashlib.sha256(json.dumps(preparation_identity(dataset.meta), sort_keys=True,
                                    default=str).encode())
    for split in sorted(dataset.meta["splits"]):
        ids = dataset.case_ids(split)
        sha.update(json.dumps([split, ids]).encode())
        if not ids:
            continue
        for array in dataset.arrays(split):
            for start in range(0, len(array), _CASE_CHUNK):
                sha.update(np.ascontiguousarray(array[start:start + _CASE_CHUNK]).tobytes())
    return sha.hexdigest()[:DIGEST_CHARS]


def dataset_profile(dataset) -> dict[str, Any]:
    """The profile shown with the dataset: `{"splits": {split: cases}, "shape", "spacing",
    "classes"}`."""
    return {"splits": {s: len(dataset.case_ids(s)) for s in sorted(dataset.meta["splits"])},
            "shape": [int(v) for v in dataset.shape],
            "spacing": [float(v) for v in dataset.spacing],
            "classes": list(dataset.class_names)}


def prepared_volumes(dataset) -> PreparedVolumes:
    """The MLflow dataset of a `core.data.dataset.PreparedDataset`."""
    source = LocalArtifactDatasetSource(str(dataset.root.resolve()))
    return PreparedVolumes(source, dataset.name, dataset_digest(dataset), dataset_profile(dataset))


def dataset_input(dataset) -> DatasetInput:
    """The run input of a `PreparedDataset` (context `CONTEXT`)."""
    entity = prepared_volumes(dataset)._to_mlflow_entity()
    return DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, CONTEXT)])
