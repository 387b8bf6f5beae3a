"""Loader: batch i depends only on (seed, i); eval order/padding. Writeback: both spaces."""

import numpy as np
import pytest
from diffseg3d.core.data import PreparedDataset, batch_iterator, eval_batches
from diffseg3d.core.data.loader import batch_case_indices
from diffseg3d.core.data.nifti.writeback import write_prediction
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom
from diffseg3d.core.data.sources.prostate import prepare_prostate_mr

from .nifti_builders import load, make_prostate_zip, octant_label


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_phantom(tmp_path_factory.mktemp("ld") / "ph",
                        PhantomSpec(cases=9, shape=(16, 16, 8)))
    return PreparedDataset.load(root)


def _take(iterator, n):
    out = [next(iterator) for _ in range(n)]
    iterator.close()
    return out


def test_resumed_stream_equals_the_uninterrupted_tail(dataset):
    full = _take(batch_iterator(dataset, "train", 4, seed=5), 6)
    tail = _take(batch_iterator(dataset, "train", 4, seed=5, start_step=4), 2)
    sync = _take(batch_iterator(dataset, "train", 4, seed=5, start_step=4, prefetch=0), 2)
    for a, b, c in zip(full[4:], tail, sync, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
        np.testing.assert_array_equal(a["image"], c["image"])
    assert full[0]["image"].shape == (4, 16, 16, 8, 1) and full[0]["label"].dtype == np.int32


def test_each_epoch_is_a_permutation_and_seeds_differ(dataset):
    n = len(dataset.case_ids("train"))  # 9 - 3 test - 1 valid = 5
    assert n == 5
    seen = np.concatenate([batch_case_indices(i, 2, n, seed=0) for i in range(5)])  # 2 epochs
    assert sorted(seen[:5]) == list(range(5)) and sorted(seen[5:]) == list(range(5))
    assert not np.array_equal(seen[:5], seen[5:])  # reshuffled per epoch
    other = np.concatenate([batch_case_indices(i, 2, n, seed=1) for i in range(5)])
    assert not np.array_equal(seen, other)
    np.testing.assert_array_equal(batch_case_indices(0, 5, n, 0, shuffle=False), range(5))
    # The loaded batch holds exactly those cases.
    images, _ = dataset.arrays("train")
    batch = _take(batch_iterator(dataset, "train", 2, seed=0, start_step=3), 1)[0]
    np.testing.assert_array_equal(batch["image"][..., 0], images[seen[6:8]])


def test_eval_batches_in_case_order_with_padding(dataset):
    images, labels = dataset.arrays("test")  # 3 cases
    batches = list(eval_batches(dataset, "test", 2))
    assert len(batches) == 2
    np.testing.assert_array_equal(batches[1]["valid"], [True, False])
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches]), [0, 1, 2, -1])
    np.testing.assert_array_equal(batches[0]["label"], labels[:2])
    np.testing.assert_array_equal(batches[1]["image"][0, ..., 0], images[2])


def test_writeback_prepared_and_original_space(tmp_path):
    # Prepared spacing equals the source spacing and the target shape only pads, so writing the
    # prepared label back to the original (oblique, LPS-flipped) grid must be exact.
    rows = [(f"{i:03d}", "A") for i in range(3)]
    zpath, affine = make_prostate_zip(tmp_path / "data.zip", rows)
    root = prepare_prostate_mr(zpath, tmp_path / "prep", spacing=(0.8, 0.8, 2.0),
                               shape=(24, 22, 10))
    ds = PreparedDataset.load(root)
    case = "000"
    label = ds.arrays("valid")[1][ds.case_ids("valid").index(case)]
    path = write_prediction(ds, case, label, tmp_path / "pred.nii.gz")
    saved, saved_affine = load(path)
    np.testing.assert_array_equal(saved, label)
    np.testing.assert_allclose(saved_affine, ds.affine(case), atol=1e-5)
    path = write_prediction(ds, case, label, tmp_path / "orig.nii.gz", original_space=True)
    back, back_affine = load(path)
    np.testing.assert_allclose(back_affine, affine, atol=1e-5)
    np.testing.assert_array_equal(back, octant_label((20, 20, 8), 8))
