"""Each bad input of data preparation and loading gives a DataError naming the file, key or
argument, and no partial output."""

import functools
import gzip
import json
import os
import shutil

import numpy as np
import pytest
from diffseg3d.cli.main import main
from diffseg3d.core.data import DataError, PreparedDataset
from diffseg3d.core.data.nifti.io import nifti_bytes, read_volume
from diffseg3d.core.data.sources.amos import prepare_amos_ct
from diffseg3d.core.data.sources.nifti import prepare_nifti, random_split
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom
from diffseg3d.core.data.sources.prostate import prepare_prostate_mr

from .nifti_builders import (
    make_amos_folder,
    make_prostate_zip,
    oblique_affine,
    octant_label,
    write_nii,
)

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
    # The error names each setting that differs, old -> new.
    with pytest.raises(DataError, match=r"different preparation \(source.seed: 0 -> 1\); pass "
                                        r"--overwrite"):
        make_phantom(phantom_root, PhantomSpec(cases=4, shape=(16, 16, 8), seed=1))
    assert (phantom_root / "dataset.json").read_text() == before
    rc = main(["data", "phantom", "--out", str(phantom_root), "--cases", "5"])
    err = capsys.readouterr().err
    assert rc == 2 and "different preparation" in err and err.count("\n") == 1
    for change in ("shape: [16, 16, 8] -> [32, 32, 16]", "source.cases: 4 -> 5",
                   "splits.train: 2 -> 3 cases, 1 ids differ"):
        assert change in err
    # --overwrite replaces it atomically; no temporary siblings are left behind.
    rc = main(["data", "phantom", "--out", str(phantom_root), "--cases", "5", "--shape", "16",
               "16", "8", "--overwrite"])
    assert rc == 0 and len(PreparedDataset.load(phantom_root).all_case_ids()) == 5
    assert [p.name for p in phantom_root.parent.iterdir() if p.name.startswith(".")] == []


def test_non_prepared_folder_is_never_overwritten(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError) as err:
        make_phantom(tmp_path / "mine", PhantomSpec(cases=3, shape=(16, 16, 8)), overwrite=True)
    # The refusal says why: not a prepared data set, so --overwrite will not delete it.
    assert str(err.value) == (
        f"{tmp_path / 'mine'}: exists with 1 entries but no dataset.json, so it is not a prepared "
        "data set folder; it is never replaced or deleted (not even with --overwrite): choose a "
        "new or empty folder")
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
    from diffseg3d.core.data.preparation import write_prepared
    from diffseg3d.core.data.sources.phantom import _prepared_case

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


# ---------------------------------------------------------------------------------------------
# Nonsense preparation arguments: DataError from the core functions (the
# API), before anything is read or written.


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"shape": (0, 16, 8)}, r"shape must be 3 whole numbers >= 1 \(voxels\), got \[0, 16, 8\]"),
    ({"shape": (16, -16, 8)}, r"shape must be 3 whole numbers >= 1"),
    ({"shape": (16, 16)}, r"shape must be 3 whole numbers"),
    ({"spacing": (1.0, 0.0, 2.0)}, r"spacing must be 3 finite numbers > 0 \(mm per voxel\)"),
    ({"spacing": (1.0, -1.0, 2.0)}, r"spacing must be 3 finite numbers > 0"),
    ({"spacing": (float("nan"), 1.0, 2.0)},
     r"spacing must be 3 finite numbers > 0 \(mm per voxel\), got \[nan"),
    ({"spacing": (float("inf"), 1.0, 2.0)}, r"spacing must be 3 finite numbers > 0"),
])
def test_bad_geometry_is_refused_by_every_preparation(tmp_path, kwargs, match):
    zpath, _ = make_prostate_zip(tmp_path / "data.zip", ROWS)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=match):
        prepare_prostate_mr(zpath, out, **{**KW, **kwargs})
    _assert_nothing_written(tmp_path, out)
    spec = PhantomSpec(cases=3, **{"shape": (16, 16, 8), "spacing": (1.0, 1.0, 2.0), **kwargs})
    with pytest.raises(DataError, match=match):
        make_phantom(out, spec)
    _assert_nothing_written(tmp_path, out)


def _own_folders(root, ids=("c0", "c1", "c2"), labels_only=()):
    affine = oblique_affine((1.0, 1.0, 2.0))
    for case in (*ids, *labels_only):
        label = octant_label((12, 12, 6), 3, margin=1).astype(np.uint8)
        if case not in labels_only:
            write_nii(root / "imgs" / f"{case}_0000.nii.gz", label * 10.0, affine)
        write_nii(root / "lbls" / f"{case}.nii.gz", label, affine)
    return {"images": root / "imgs", "labels": root / "lbls", "class_names": ["a", "b", "c"],
            "spacing": (1.0, 1.0, 2.0), "shape": (8, 8, 4)}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"clip": (100.0, 0.0)}, r"--clip LO HI must be two finite numbers with LO < HI, got "
                             r"\[100.0, 0.0\]"),
    ({"clip": (5.0, 5.0)}, r"--clip LO HI must be two finite numbers with LO < HI"),
    ({"clip": (float("nan"), 5.0)}, r"--clip LO HI must be two finite numbers"),
    ({"test_fraction": -0.5}, r"test fraction must be a number strictly between 0 and 1, got -0.5"),
    ({"test_fraction": 1.5}, r"test fraction must be a number strictly between 0 and 1, got 1.5"),
    ({"valid_fraction": 0.0}, r"valid fraction must be a number strictly between 0 and 1"),
    ({"valid_fraction": 0.5, "test_fraction": 0.5}, r"leave nothing for training"),
])
def test_nonsense_nifti_arguments_are_refused_not_clamped(tmp_path, kwargs, match):
    out = tmp_path / "out"
    with pytest.raises(DataError, match=match):
        prepare_nifti(out, **{**_own_folders(tmp_path), **kwargs})
    _assert_nothing_written(tmp_path, out)


def test_random_split_refuses_fractions_outside_0_1():
    ids = [f"c{i}" for i in range(10)]
    with pytest.raises(DataError, match="test fraction .* got -0.5"):
        random_split(ids, test_fraction=-0.5)
    assert [len(v) for v in random_split(ids, valid_fraction=0.1, test_fraction=0.2).values()
            ] == [2, 1, 7]


def test_intensity_window_low_must_be_below_high():
    from diffseg3d.core.data.preparation import check_intensity
    from diffseg3d.core.data.preprocess import Intensity

    check_intensity(Intensity(kind="range", low=-1000.0, high=400.0))
    with pytest.raises(DataError, match=r"intensity window \[100, 0\]: low must be < high"):
        check_intensity(Intensity(kind="range", low=100.0, high=0.0))
    with pytest.raises(DataError, match=r"percentiles \[-1, 99.5\] must lie in \[0, 100\]"):
        check_intensity(Intensity(kind="percentile", low=-1.0, high=99.5))


# ---------------------------------------------------------------------------------------------
# Source dataset.json and folders


def _msd(root, training, extra_files=()):
    """An MSD folder: three NIfTI cases, `training` written as given, plus `extra_files`."""
    affine = oblique_affine((1.0, 1.0, 2.0))
    for case in ("c0", "c1", "c2"):
        label = octant_label((12, 12, 6), 2, margin=1).astype(np.uint8)
        write_nii(root / "imagesTr" / f"{case}.nii.gz", label * 10.0, affine)
        write_nii(root / "labelsTr" / f"{case}.nii.gz", label, affine)
    for name in extra_files:
        (root / name).write_bytes(b"not read")
    (root / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "a", "2": "b"}, "training": training}))
    return root


def _entry(case, label=None):
    return {"image": f"imagesTr/{case}.nii.gz", "label": label or f"labelsTr/{case}.nii.gz"}


def test_non_nifti_label_in_source_dataset_json_names_the_file(tmp_path):
    root = _msd(tmp_path / "msd", [_entry("c0"), _entry("c1", "labelsTr/c1.mha"), _entry("c2")],
                extra_files=["labelsTr/c1.mha"])
    with pytest.raises(DataError, match=r"dataset.json: training\[1\].label: 'c1.mha' is not a "
                                        r"NIfTI file \(.nii or .nii.gz\)"):
        prepare_nifti(tmp_path / "out", source=root, **KW)
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_non_nifti_nnunet_file_ending_is_refused(tmp_path):
    root = tmp_path / "nn"
    (root / "imagesTr").mkdir(parents=True)
    (root / "imagesTr" / "c0_0000.mha").write_bytes(b"x")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1},
                                                   "file_ending": ".mha"}))
    with pytest.raises(DataError, match=r"file_ending '.mha' is not NIfTI"):
        prepare_nifti(tmp_path / "out", source=root, **KW)


def test_duplicate_entries_in_source_dataset_json_name_the_duplicate(tmp_path):
    root = _msd(tmp_path / "msd", [_entry("c0"), _entry("c1"), _entry("c2"), _entry("c1")])
    with pytest.raises(DataError, match=r"dataset.json: training\[3\] repeats case 'c1' of "
                                        r"training\[1\]"):
        prepare_nifti(tmp_path / "out", source=root, **KW)
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_duplicate_amos_entries_name_the_duplicate(tmp_path):
    base, _ = make_amos_folder(tmp_path / "src", [1, 2], [3, 4, 5])
    meta = json.loads((base / "dataset.json").read_text())
    meta["validation"].append(meta["validation"][0])
    (base / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"validation\[3\] repeats case 'amos_0003'"):
        prepare_amos_ct(tmp_path / "src", tmp_path / "out", spacing=(2.0, 2.0, 4.0),
                        shape=(8, 8, 4))
    meta["validation"].pop()
    meta["training"].append(meta["validation"][0])
    (base / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"cases in both training and validation: \['amos_0003'\]"):
        prepare_amos_ct(tmp_path / "src", tmp_path / "out", spacing=(2.0, 2.0, 4.0),
                        shape=(8, 8, 4))
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_label_without_image_is_an_error_naming_it(tmp_path):
    kwargs = _own_folders(tmp_path, labels_only=("lonely",))
    with pytest.raises(DataError, match=r"lbls/lonely.nii.gz: label with no image "
                                        r"lonely\[_0000\].nii\(.gz\)"):
        prepare_nifti(tmp_path / "out", **kwargs)
    _assert_nothing_written(tmp_path, tmp_path / "out")
    # nnU-Net layout (no training list): the same rule.
    root = _msd(tmp_path / "nn", [])
    for case in ("c0", "c1", "c2"):
        (root / "imagesTr" / f"{case}.nii.gz").rename(root / "imagesTr" / f"{case}_0000.nii.gz")
    shutil.copy(root / "labelsTr" / "c0.nii.gz", root / "labelsTr" / "extra.nii.gz")
    with pytest.raises(DataError, match=r"labelsTr/extra.nii.gz: label with no image"):
        prepare_nifti(tmp_path / "out", source=root, **KW)
    (root / "labelsTr" / "extra.nii.gz").unlink()
    assert prepare_nifti(tmp_path / "out", source=root, **KW) == tmp_path / "out"


def test_unsafe_data_set_name_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"data set name '../../EVIL' must not start with"):
        prepare_nifti(tmp_path / "out", name="../../EVIL", **_own_folders(tmp_path))
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_prepared_dataset_refuses_an_escaping_name(phantom_root):
    _edit_meta(phantom_root, lambda meta: meta.__setitem__("name", "../../EVILNAME"))
    with pytest.raises(DataError, match=r"dataset\.json: key 'name' '\.\./\.\./EVILNAME'"):
        PreparedDataset.load(phantom_root, verify="none")


def test_prepared_dataset_refuses_an_escaping_case_id(phantom_root):
    def edit(meta):
        old = meta["splits"]["test"][0]
        meta["splits"]["test"][0] = "../../../EVILCASE"
        meta["cases"]["../../../EVILCASE"] = meta["cases"].pop(old)
    _edit_meta(phantom_root, edit)
    with pytest.raises(DataError, match=r"case id '\.\./\.\./\.\./EVILCASE'"):
        PreparedDataset.load(phantom_root, verify="none")
