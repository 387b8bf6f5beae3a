"""Each bad input of issue #3 gives a DataError naming the file, and no partial output."""

import functools
import gzip
import json
import os
import shutil

import numpy as np
import pytest
from diffseg3d.cli.main import main
from diffseg3d.core.data import DataError, PreparedDataset
from diffseg3d.core.data.nifti_io import nifti_bytes, read_volume
from diffseg3d.core.data.phantom import PhantomSpec, make_phantom
from diffseg3d.core.data.prostate import prepare_prostate_mr

from .nifti_builders import make_prostate_zip, oblique_affine, octant_label, write_nii

ROWS = [(f"{i:03d}", "A") for i in range(3)]
KW = {"spacing": (1.6, 1.6, 4.0), "shape": (8, 8, 4)}
AFFINE = oblique_affine((0.8, 0.8, 2.0))
GOOD_MASK = octant_label((20, 20, 8), 8).astype(np.uint8)


def _assert_nothing_written(tmp_path, out):
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}")]


def _fails(tmp_path, overrides, match):
    zpath, _ = make_prostate_zip(tmp_path / "data.zip", ROWS, overrides=overrides)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=match):
        prepare_prostate_mr(zpath, out, **KW)
    _assert_nothing_written(tmp_path, out)


def test_corrupt_nifti(tmp_path):
    _fails(tmp_path, {"data/001_img.nii": b"not a nifti file" * 30}, r"data/001_img\.nii")


def test_truncated_nifti(tmp_path):
    full = nifti_bytes(np.zeros((20, 20, 8), np.float32), AFFINE)
    _fails(tmp_path, {"data/002_img.nii": full[: len(full) // 2]}, r"data/002_img\.nii")


def test_truncated_gzip_nifti(tmp_path):
    raw = gzip.compress(nifti_bytes(np.ones((20, 20, 8), np.float32), AFFINE))
    path = tmp_path / "x.nii.gz"
    path.write_bytes(raw[: len(raw) - 20])
    with pytest.raises(DataError, match=r"x\.nii\.gz"):
        read_volume(path)


def test_shape_mismatch(tmp_path):
    _fails(tmp_path, {"data/000_mask.nii": nifti_bytes(GOOD_MASK[:, :, :6], AFFINE)},
           r"data/000_mask\.nii: shape")


def test_affine_mismatch(tmp_path):
    moved = AFFINE.copy()
    moved[0, 3] += 5.0
    _fails(tmp_path, {"data/000_mask.nii": nifti_bytes(GOOD_MASK, moved)},
           r"data/000_mask\.nii: affine")


def test_label_value_not_in_class_list(tmp_path):
    bad = GOOD_MASK.copy()
    bad[0, 0, 0] = 9
    _fails(tmp_path, {"data/001_mask.nii": nifti_bytes(bad, AFFINE)},
           r"data/001_mask\.nii: label values \[9\]")


def test_nan_voxels(tmp_path):
    image = np.ones((20, 20, 8), np.float32)
    image[3, 3, 3] = np.nan
    image[4, 4, 4] = np.inf
    _fails(tmp_path, {"data/002_img.nii": nifti_bytes(image, AFFINE)},
           r"data/002_img\.nii: 2 NaN/inf voxels")


def test_case_listed_but_missing_in_source(tmp_path):
    text = "".join(f"{u} A\n" for u, _ in ROWS) + "999 A\n"
    _fails(tmp_path, {"institution.txt": text.encode()}, r"'999'.*data/999_img\.nii")


@pytest.fixture
def phantom_root(tmp_path):
    return make_phantom(tmp_path / "ph", PhantomSpec(cases=4, shape=(16, 16, 8)))


def _edit_meta(root, edit):
    meta = json.loads((root / "dataset.json").read_text())
    edit(meta)
    (root / "dataset.json").write_text(json.dumps(meta))


def test_case_listed_in_dataset_json_but_missing(phantom_root):
    (phantom_root / "labelsTr" / "phantom_001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labelsTr/phantom_001\.nii\.gz: case 'phantom_001'"):
        PreparedDataset.load(phantom_root, verify="none")


def test_path_outside_root(phantom_root, tmp_path):
    shutil.copy(phantom_root / "imagesTr" / "phantom_000.nii.gz", tmp_path / "outside.nii.gz")

    def edit(meta):
        meta["cases"]["phantom_000"]["image"] = "../outside.nii.gz"
    _edit_meta(phantom_root, edit)
    with pytest.raises(DataError, match=r"cases\.phantom_000\.image = '\.\./outside\.nii\.gz' "
                                        r"points outside"):
        PreparedDataset.load(phantom_root)


def test_dataset_json_missing_key_and_bad_labels_in_prepared_folder(phantom_root):
    label_path = phantom_root / "labelsTr" / "phantom_002.nii.gz"
    label = read_volume(label_path, is_label=True)
    bad = label.array.copy()
    bad[0, 0, 0] = 42
    write_nii(label_path, bad.astype(np.uint8), label.affine)
    PreparedDataset.load(phantom_root, verify="headers")  # headers are fine
    with pytest.raises(DataError, match=r"phantom_002\.nii\.gz: label values \[42\]"):
        PreparedDataset.load(phantom_root, verify="full")
    _edit_meta(phantom_root, lambda meta: meta.pop("spacing"))
    with pytest.raises(DataError, match=r"dataset\.json: missing key 'spacing'"):
        PreparedDataset.load(phantom_root)


def test_prepared_shape_mismatch_detected_from_headers(phantom_root):
    image = read_volume(phantom_root / "imagesTr" / "phantom_003.nii.gz")
    write_nii(phantom_root / "imagesTr" / "phantom_003.nii.gz", image.array[:, :, :4],
              image.affine)
    with pytest.raises(DataError, match=r"labelsTr/phantom_003\.nii\.gz: shape"):
        PreparedDataset.load(phantom_root)


def test_output_folder_with_a_different_preparation(phantom_root, capsys):
    before = (phantom_root / "dataset.json").read_text()
    with pytest.raises(DataError, match="different preparation"):
        make_phantom(phantom_root, PhantomSpec(cases=4, shape=(16, 16, 8), seed=1))
    assert (phantom_root / "dataset.json").read_text() == before
    rc = main(["data", "phantom", "--out", str(phantom_root), "--cases", "5"])
    assert rc == 2 and "different preparation" in capsys.readouterr().err
    # --overwrite replaces it atomically; no temporary siblings are left behind.
    rc = main(["data", "phantom", "--out", str(phantom_root), "--cases", "5", "--shape", "16",
               "16", "8", "--overwrite"])
    assert rc == 0 and len(PreparedDataset.load(phantom_root).all_case_ids()) == 5
    assert [p.name for p in phantom_root.parent.iterdir() if p.name.startswith(".")] == []


def test_non_prepared_folder_is_never_overwritten(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="no dataset.json"):
        make_phantom(tmp_path / "mine", PhantomSpec(cases=3, shape=(16, 16, 8)), overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_parallel_workers_same_output_and_errors_name_the_file(tmp_path):
    zpath, _ = make_prostate_zip(tmp_path / "data.zip", ROWS)
    serial = prepare_prostate_mr(zpath, tmp_path / "serial", **KW)
    parallel = prepare_prostate_mr(zpath, tmp_path / "parallel", workers=2, **KW)
    for split in ("valid", "test"):
        for a, b in zip(PreparedDataset.load(serial).arrays(split),
                        PreparedDataset.load(parallel).arrays(split), strict=True):
            np.testing.assert_array_equal(a, b)
    bad = GOOD_MASK.copy()
    bad[1, 1, 1] = 12
    (tmp_path / "b").mkdir()
    zbad, _ = make_prostate_zip(tmp_path / "b" / "data.zip", ROWS,
                                overrides={"data/002_mask.nii": nifti_bytes(bad, AFFINE)})
    with pytest.raises(DataError, match=r"data/002_mask\.nii: label values \[12\]"):
        prepare_prostate_mr(zbad, tmp_path / "b" / "out", workers=2, **KW)
    _assert_nothing_written(tmp_path / "b", tmp_path / "b" / "out")


def test_interrupted_preparation_leaves_nothing_and_stale_partials_are_removed(tmp_path):
    from diffseg3d.core.data.phantom import _prepared_case
    from diffseg3d.core.data.preparation import write_prepared

    spec = PhantomSpec(cases=3, shape=(16, 16, 8))

    def produce(case_id):
        if case_id == "phantom_001":
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-way
        return _prepared_case(case_id, spec=spec)

    kwargs = {"name": "phantom", "class_names": ["a"] * 8, "spacing": spec.spacing,
              "shape": spec.shape, "source": {}, "preprocessing": {},
              "splits": {"train": ["phantom_000"], "valid": ["phantom_001"],
                         "test": ["phantom_002"]}}
    with pytest.raises(KeyboardInterrupt):
        write_prepared(tmp_path / "out", cases=produce, **kwargs)
    _assert_nothing_written(tmp_path, tmp_path / "out")
    # A folder left by a SIGKILLed run (pid gone) is cleaned; a live process's one is kept.
    dead = tmp_path / ".out.partial-999999999-deadbeef"
    live = tmp_path / f".out.partial-{os.getpid()}-cafe0000"
    dead.mkdir()
    live.mkdir()
    write_prepared(tmp_path / "out", cases=functools.partial(_prepared_case, spec=spec), **kwargs)
    assert not dead.exists() and live.exists()
    assert PreparedDataset.load(tmp_path / "out").all_case_ids() == [f"phantom_00{i}"
                                                                     for i in range(3)]
