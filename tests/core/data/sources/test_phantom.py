"""The synthetic phantom: deterministic, every class present, sizes spread >= 2 orders."""

import numpy as np
import pytest
from diffseg3d.cli.main import main
from diffseg3d.core.data import PreparedDataset
from diffseg3d.core.data.sources.phantom import (
    CLASS_NAMES,
    DEFAULT_SHAPE,
    phantom_affine,
    phantom_case,
    phantom_splits,
)


@pytest.fixture(scope="module")
def default_phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("ph") / "phantom"
    assert main(["data", "phantom", "--out", str(out)]) == 0
    return PreparedDataset.load(out, verify="full")


def test_default_phantom_layout_and_splits(default_phantom):
    ds = default_phantom
    assert ds.shape == (32, 32, 16) and ds.spacing == (1.5, 1.5, 3.0)
    assert 6 <= len(ds.class_names) <= 10 and ds.class_names == CLASS_NAMES
    assert [len(ds.case_ids(s)) for s in ("train", "valid", "test")] == [14, 2, 8]
    np.testing.assert_array_equal(ds.affine("phantom_000"), phantom_affine((32, 32, 16),
                                                                          (1.5, 1.5, 3.0)))


def test_every_class_in_every_case_and_size_spread(default_phantom):
    counts = []
    for split in ("train", "valid", "test"):
        images, labels = default_phantom.arrays(split)
        assert np.all((images >= 0) & (images <= 1))
        counts += [np.bincount(lab.ravel(), minlength=9) for lab in labels]
    counts = np.array(counts)[:, 1:]
    assert counts.shape == (24, 8) and counts.min() > 0
    mean = counts.mean(axis=0)
    assert mean.max() / mean.min() >= 100  # two orders of magnitude between class sizes
    assert mean.max() >= 1000 and (mean < 300).sum() >= 3
    assert len({tuple(c) for c in counts}) == 24  # per-case shape variation


def test_touching_and_nested_structures():
    _, label = phantom_case(0)
    core, capsule = label == CLASS_NAMES.index("core") + 1, label == CLASS_NAMES.index(
        "capsule") + 1
    grown = np.zeros_like(core)
    # Nested: every face-neighbour of the core is core or capsule.
    for axis in range(3):
        for shift in (-1, 1):
            grown |= np.roll(core, shift, axis=axis)
    ring = grown & ~core
    assert ring.any() and capsule[ring].mean() > 0.9
    liver, kidney = (label == CLASS_NAMES.index(n) + 1 for n in ("liver", "kidney"))
    assert (liver & np.roll(kidney, 1, axis=0)).any() or (liver & np.roll(kidney, -1, 0)).any()


def test_deterministic_for_a_seed_and_independent_of_case_count():
    image_a, label_a = phantom_case(3, seed=7)
    image_b, label_b = phantom_case(3, seed=7)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(label_a, label_b)
    image_c, _ = phantom_case(3, seed=8)
    assert not np.array_equal(image_a, image_c)
    assert image_a.shape == DEFAULT_SHAPE


def test_same_seed_gives_identical_folders(tmp_path):
    arrays = []
    for name in ("a", "b"):
        assert main(["data", "phantom", "--out", str(tmp_path / name), "--cases", "4",
                     "--shape", "16", "16", "8", "--seed", "3"]) == 0
        arrays.append(PreparedDataset.load(tmp_path / name).arrays("train"))
    np.testing.assert_array_equal(arrays[0][0], arrays[1][0])
    np.testing.assert_array_equal(arrays[0][1], arrays[1][1])


def test_split_rule():
    assert [len(v) for v in phantom_splits([str(i) for i in range(24)]).values()] == [14, 2, 8]
    assert [len(v) for v in phantom_splits([str(i) for i in range(3)]).values()] == [1, 1, 1]
