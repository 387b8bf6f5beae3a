"""amos-ct and generic nifti preparation from real folders in their download layouts."""

import json
import zipfile

import numpy as np
from diffseg3d.cli.main import main
from diffseg3d.core.data import PreparedDataset
from diffseg3d.core.data.sources.amos import split_validation
from diffseg3d.core.data.sources.nifti import random_split

from tests.core.data.nifti_builders import (
    load,
    make_amos_folder,
    oblique_affine,
    octant_label,
    write_nii,
)


def test_amos_validation_split_is_10_90_and_seeded():
    ids = [f"amos_{i:04d}" for i in range(1, 101)]
    valid, test = split_validation(ids, seed=0)
    assert (len(valid), len(test)) == (10, 90) and not set(valid) & set(test)
    assert split_validation(ids[::-1], seed=0) == (valid, test)  # independent of listing order
    assert split_validation(ids, seed=1)[0] != valid


def test_amos_ct_only_hu_clip_and_layout(tmp_path):
    root, _ = make_amos_folder(tmp_path / "src", train_ids=[1, 2, 3, 540],
                               valid_ids=[101, 102, 103, 104, 105, 507])
    out = tmp_path / "amos"
    rc = main(["data", "prepare", "amos-ct", "--source", str(root.parent), "--out", str(out),
               "--spacing", "2.0", "2.0", "4.0", "--shape", "10", "8", "6"])
    assert rc == 0
    ds = PreparedDataset.load(out, verify="full")
    assert ds.class_names == [f"organ{k}" for k in range(1, 16)]
    assert ds.case_ids("train") == ["amos_0001", "amos_0002", "amos_0003"]  # 540 is MR
    assert len(ds.case_ids("valid")) == 1 and len(ds.case_ids("test")) == 4
    assert "amos_0507" not in ds.all_case_ids()
    image, affine = load(ds.image_path("amos_0001"))
    label, _ = load(ds.label_path("amos_0001"))
    assert image.shape == (10, 8, 6)
    np.testing.assert_allclose(np.abs(np.diag(affine[:3, :3])), [2.0, 2.0, 4.0], atol=1e-6)
    # HU window [-991, 362] -> [0, 1]: air (-1500 HU) is 0; organ k (40 + 20 k HU) is linear.
    assert image[label == 0].min() == 0.0
    inner = (label == 1)
    expected = (60.0 + 991.0) / (362.0 + 991.0)
    assert abs(np.median(image[inner]) - expected) < 0.02
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["preprocessing"]["intensity"] == {"kind": "range", "low": -991.0, "high": 362.0}


def test_generic_folders_and_msd_layouts(tmp_path):
    affine = oblique_affine((1.0, 1.0, 2.0))
    ids = [f"case{i}" for i in range(6)]
    rng = np.random.default_rng(0)
    for case in ids:
        label = octant_label((12, 12, 6), 3, margin=1)
        write_nii(tmp_path / "imgs" / f"{case}_0000.nii.gz", rng.random(label.shape) * 50, affine)
        write_nii(tmp_path / "lbls" / f"{case}.nii.gz", label.astype(np.uint8), affine)
    out = tmp_path / "own"
    rc = main(["data", "prepare", "nifti", "--images", str(tmp_path / "imgs"), "--labels",
               str(tmp_path / "lbls"), "--class-names", "a", "b", "c", "--spacing", "1", "1", "2",
               "--shape", "8", "8", "4", "--out", str(out)])
    assert rc == 0
    ds = PreparedDataset.load(out, verify="full")
    assert ds.class_names == ["a", "b", "c"]
    assert sorted(ds.all_case_ids()) == ids
    assert ds.meta["splits"] == random_split(ids, seed=0)
    assert [len(ds.case_ids(s)) for s in ("train", "valid", "test")] == [4, 1, 1]

    # nnU-Net v2: labels name -> int, file_ending, no training list.
    nn = tmp_path / "Dataset001"
    (nn / "imagesTr").mkdir(parents=True)
    for case in ids:
        (nn / "imagesTr" / f"{case}_0000.nii.gz").write_bytes(
            (tmp_path / "imgs" / f"{case}_0000.nii.gz").read_bytes())
        write_nii(nn / "labelsTr" / f"{case}.nii.gz", octant_label((12, 12, 6), 3, margin=1)
                  .astype(np.uint8), affine)
    (nn / "dataset.json").write_text(json.dumps({
        "labels": {"background": 0, "x": 1, "y": 2, "z": 3}, "file_ending": ".nii.gz",
        "channel_names": {"0": "MR"}, "numTraining": 6}))
    out2 = tmp_path / "nn"
    assert main(["data", "prepare", "nifti", "--source", str(nn), "--spacing", "1", "1", "2",
                 "--shape", "8", "8", "4", "--out", str(out2)]) == 0
    ds2 = PreparedDataset.load(out2)
    assert ds2.class_names == ["x", "y", "z"] and sorted(ds2.all_case_ids()) == ids
    # Same images, same preprocessing: identical arrays to the folder layout.
    np.testing.assert_array_equal(ds2.arrays("train")[0], ds.arrays("train")[0])


def test_amos_zip_equals_folder(tmp_path):
    root, _ = make_amos_folder(tmp_path / "src", train_ids=[4, 5], valid_ids=[201, 202, 203])
    zpath = tmp_path / "amos22.zip"
    with zipfile.ZipFile(zpath, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root.parent).as_posix())
    args = ["--spacing", "2.0", "2.0", "4.0", "--shape", "8", "8", "4"]
    for name, source in (("from_zip", zpath), ("from_folder", root)):
        assert main(["data", "prepare", "amos-ct", "--source", str(source), "--out",
                     str(tmp_path / name), *args]) == 0
    a, b = (PreparedDataset.load(tmp_path / n, verify="full") for n in ("from_zip", "from_folder"))
    assert a.meta["splits"] == b.meta["splits"]
    for split in ("train", "valid", "test"):
        for x, y in zip(a.arrays(split), b.arrays(split), strict=True):
            np.testing.assert_array_equal(x, y)
    assert a.original("amos_0004")["image"].endswith("amos22.zip:amos22/imagesTr/amos_0004.nii.gz")
