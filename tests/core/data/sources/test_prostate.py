"""prostate-mr preparation from a real zip in the zenodo 7013610 layout."""

import json

import numpy as np
import pytest
from diffseg3d.cli.main import main
from diffseg3d.core.data import PreparedDataset
from diffseg3d.core.data.nifti.io import FileRef
from diffseg3d.core.data.preprocess import Intensity, preprocess_case
from diffseg3d.core.data.resample import voxel_spacing
from diffseg3d.core.data.sources.prostate import paper_split

from tests.core.data.nifti_builders import (
    load,
    make_prostate_zip,
    octant_label,
    world_centroid,
    write_nii,
)

SPACING, SHAPE = (1.2, 1.2, 3.0), (14, 14, 6)
# Institution "A" has 8 cases (valid 2, train 2, test 4), "B" 6 (valid 2, train 0, test 4).
ROWS = [(f"{i:03d}", "B" if i >= 8 else "A") for i in range(14)]


def test_paper_split_reproduces_411_14_164():
    # Seven institutions of these sizes: sum 589 and sum(int(0.75 n)) = 439 as in the paper data.
    sizes = [101, 86, 90, 94, 98, 60, 60]
    rows = [(f"{k}_{i}", f"inst{k}") for k, n in enumerate(sizes) for i in range(n)]
    splits = paper_split(rows)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [411, 14, 164]
    assert len(set(sum(splits.values(), []))) == 589
    # Per institution: the first 2 listed cases are validation, the next int(0.75 n) - 4 train.
    assert splits["valid"][:2] == ["0_0", "0_1"]
    assert splits["train"][0] == "0_2" and "0_72" in splits["train"] and "0_73" in splits["test"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prostate")
    zpath, affine = make_prostate_zip(tmp / "data.zip", ROWS)
    out = tmp / "prepared"
    rc = main(["data", "prepare", "prostate-mr", "--source", str(zpath), "--out", str(out),
               "--spacing", *map(str, SPACING), "--shape", *map(str, SHAPE)])
    assert rc == 0
    return out, affine


def test_prepared_folder_shape_spacing_affine_and_labels(prepared):
    out, source_affine = prepared
    ds = PreparedDataset.load(out, verify="full")
    assert ds.name == "prostate-mr" and ds.num_classes == 9
    assert ds.shape == SHAPE and ds.spacing == SPACING
    assert [len(ds.case_ids(s)) for s in ("train", "valid", "test")] == [2, 4, 8]
    assert ds.case_ids("valid") == ["000", "001", "008", "009"]
    images, labels = ds.arrays("test")
    assert images.shape == (8, *SHAPE) and images.dtype == np.float32
    assert labels.dtype == np.int32 and 0.0 <= images.min() and images.max() <= 1.0
    source_label = octant_label((20, 20, 8), 8)
    for case_id in ds.case_ids("test")[:2]:
        label, affine = load(ds.label_path(case_id))
        np.testing.assert_allclose(affine, ds.affine(case_id), atol=1e-5)
        np.testing.assert_allclose(voxel_spacing(affine), SPACING, atol=1e-6)
        # RAS after reorientation: the voxel axes point along +x, +y, +z in world space.
        assert np.all(np.diag(affine[:3, :3]) > 0)
        assert set(np.unique(label)) == set(range(9))  # label set preserved by resampling
        for k in (1, 5, 8):  # each structure stays where it was in the world (within a voxel)
            shift = world_centroid(label, affine, k) - world_centroid(source_label,
                                                                      source_affine, k)
            assert np.all(np.abs(shift) <= np.asarray(SPACING)), (k, shift)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["preprocessing"]["spacing"] == list(SPACING)
    assert meta["cases"]["000"]["original"]["shape"] == [20, 20, 8]
    assert meta["source"]["kind"] == "prostate-mr"


def test_same_preparation_is_a_no_op(prepared):
    out, _ = prepared
    before = (out / "dataset.json").stat().st_mtime_ns
    zpath = out.parent / "data.zip"
    rc = main(["data", "prepare", "prostate-mr", "--source", str(zpath), "--out", str(out),
               "--spacing", *map(str, SPACING), "--shape", *map(str, SHAPE)])
    assert rc == 0 and (out / "dataset.json").stat().st_mtime_ns == before


def test_crop_depends_on_the_image_only(tmp_path):
    rng = np.random.default_rng(1)
    shape, affine = (22, 18, 8), np.diag([0.8, 0.8, 2.0, 1.0])
    image = rng.random(shape, dtype=np.float32) * 100
    image[:4] = 0  # off-centre dark slab so the body mask is not the whole volume
    label_a = np.zeros(shape, np.uint8)
    label_a[2:6, 2:6, 1:3] = 1  # in a corner: a label-centred crop would move
    label_b = np.zeros(shape, np.uint8)
    label_b[15:20, 10:16, 5:8] = 2
    img_ref = FileRef(write_nii(tmp_path / "img.nii", image, affine))
    for centre in ("image", "body"):
        cases = [preprocess_case(img_ref, FileRef(write_nii(tmp_path / f"{n}.nii", lab, affine)),
                                 num_classes=3, spacing=(1.0, 1.0, 2.0), shape=(12, 12, 6),
                                 intensity=Intensity(), crop_centre=centre)
                 for n, lab in (("a", label_a), ("b", label_b))]
        np.testing.assert_array_equal(cases[0].image, cases[1].image)
        np.testing.assert_array_equal(cases[0].affine, cases[1].affine)
        assert not np.array_equal(cases[0].label, cases[1].label)
