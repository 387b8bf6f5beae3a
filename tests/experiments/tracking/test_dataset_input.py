"""The prepared data set as an MLflow dataset input: its digest, profile and source, checked
against an independent hash of the files and on a real SQLite store."""

import hashlib
import json

import numpy as np
import pytest
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom
from diffseg3d.experiments.tracking.dataset_input import (
    CONTEXT,
    DIGEST_CHARS,
    dataset_digest,
    dataset_input,
    preparation_identity,
)
from mlflow.tracking import MlflowClient


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("ds") / "phantom",
                        PhantomSpec(cases=6, shape=(16, 16, 8)))


def _independent_digest(dataset: PreparedDataset) -> str:
    sha = hashlib.sha256(json.dumps(preparation_identity(dataset.meta), sort_keys=True,
                                    default=str).encode())
    for split in sorted(dataset.meta["splits"]):
        ids = dataset.case_ids(split)
        sha.update(json.dumps([split, ids]).encode())
        for array in dataset.arrays(split) if ids else ():
            sha.update(np.ascontiguousarray(array).tobytes())  # whole, not case by case
    return sha.hexdigest()[:DIGEST_CHARS]


def test_digest_hashes_the_arrays_and_the_preparation(phantom):
    dataset = PreparedDataset.load(phantom)
    digest = dataset_digest(dataset)
    assert len(digest) == DIGEST_CHARS and digest == _independent_digest(dataset)
    assert dataset_digest(PreparedDataset.load(phantom)) == digest  # deterministic
    changed = PreparedDataset.load(phantom)
    images, labels = changed.arrays("test")
    changed._arrays["test"] = (images.copy(), labels.copy())
    changed._arrays["test"][0][0, 0, 0, 0] += 1.0  # one voxel of one test image
    assert dataset_digest(changed) != digest
    other = PreparedDataset(dataset.root, {**dataset.meta, "spacing": [1.0, 1.0, 1.0]})
    assert dataset_digest(other) != digest


def test_run_input_shows_name_digest_source_and_split_sizes(phantom, tmp_path):
    dataset = PreparedDataset.load(phantom)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("e"))
    client.log_inputs(run.info.run_id, datasets=[dataset_input(dataset)])
    (logged,) = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert logged.dataset.name == "phantom"
    assert logged.dataset.digest == dataset_digest(dataset)
    assert json.loads(logged.dataset.source) == {"uri": str(dataset.root.resolve())}
    assert logged.dataset.source_type == "local"
    profile = json.loads(logged.dataset.profile)
    assert profile["splits"] == {s: len(dataset.case_ids(s)) for s in dataset.meta["splits"]}
    assert sum(profile["splits"].values()) == 6
    assert profile["shape"] == [16, 16, 8] and len(profile["classes"]) == 8
    assert [(t.key, t.value) for t in logged.tags] == [("mlflow.data.context", CONTEXT)]
