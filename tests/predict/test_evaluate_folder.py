"""`evaluate_folder` on plain NIfTI folders: classes from the labels present, spacing from the
label headers, and dataset.json taking over where it exists."""

import json
import math

import nibabel as nib
import numpy as np
import pytest
from diffseg3d.predict.evaluate_folder import EvaluateError, evaluate_folder

ZOOMS = (0.5, 2.0, 3.0)


def _save(path, array, zooms=ZOOMS):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, np.uint8), np.diag([*zooms, 1.0])), str(path))


@pytest.fixture
def plain(tmp_path):
    """No dataset.json. Labels use values {0, 1, 3}; the prediction also has a 4.
    case1: class 1 = 8 voxels predicted exactly; class 3 = 4 voxels, predicted as 4.
    case2: class 1 = 2 voxels, predicted nowhere."""
    label1 = np.zeros((6, 6, 4), np.uint8)
    label1[0:2, 0:2, 0:2] = 1
    label1[4:6, 4:6, 1:2] = 3
    pred1 = label1.copy()
    pred1[label1 == 3] = 4
    label2 = np.zeros_like(label1)
    label2[3, 3, 0:2] = 1
    _save(tmp_path / "labels" / "case1.nii.gz", label1)
    _save(tmp_path / "labels" / "case2.nii", label2)
    _save(tmp_path / "pred" / "case1.nii.gz", pred1)
    _save(tmp_path / "pred" / "case2.nii.gz", np.zeros_like(label1))
    return tmp_path


def _by_key(rows):
    return {(row["case"], row["class"]): row for row in rows}


def test_plain_folder_without_options(plain):
    rows = _by_key(evaluate_folder(plain / "pred", plain / "labels", plain / "out.csv"))
    assert {name for _, name in rows} == {"class_1", "class_2", "class_3", "class_4"}
    assert rows["case1", "class_1"]["dice"] == 1.0
    # Spacing from the headers: 8 voxels of 0.5 x 2 x 3 mm.
    assert rows["case1", "class_1"]["roi_mm3"] == pytest.approx(8 * 3.0)
    assert math.isnan(rows["case1", "class_2"]["dice"])  # absent everywhere: NaN, kept
    assert rows["case1", "class_3"]["dice"] == 0.0 and rows["case1", "class_3"]["pred_empty"]
    assert rows["case1", "class_4"]["label_empty"] and rows["case1", "class_4"]["dice"] == 0.0
    assert rows["case2", "class_1"]["dice"] == 0.0
    assert (plain / "out.csv").read_text().splitlines()[0].startswith("case,class,dice")


def test_dataset_json_classes_and_spacing(plain):
    (plain / "labels" / "dataset.json").write_text(
        json.dumps({"class_names": ["a", "b", "c", "d"], "spacing": [1.0, 1.0, 1.0]}))
    default = _by_key(evaluate_folder(plain / "pred", plain / "labels", plain / "a.csv"))
    assert default["case1", "a"]["roi_mm3"] == pytest.approx(8 * 3.0)  # headers by default
    from_json = _by_key(evaluate_folder(plain / "pred", plain / "labels", plain / "b.csv",
                                        spacing_from_labels=False))
    assert from_json["case1", "a"]["roi_mm3"] == pytest.approx(8.0)
    given = _by_key(evaluate_folder(plain / "pred", plain / "labels", plain / "c.csv",
                                    classes=["w", "x", "y", "z"]))
    assert ("case2", "w") in given


def test_header_spacing_when_dataset_json_has_none(plain):
    (plain / "dataset.json").write_text(json.dumps({"class_names": ["a", "b", "c", "d"]}))
    rows = _by_key(evaluate_folder(plain / "pred", plain / "labels", plain / "a.csv",
                                   spacing_from_labels=False))
    assert rows["case1", "a"]["roi_mm3"] == pytest.approx(8 * 3.0)


def test_only_background_cannot_infer_classes(tmp_path):
    _save(tmp_path / "labels" / "c.nii.gz", np.zeros((4, 4, 4)))
    _save(tmp_path / "pred" / "c.nii.gz", np.zeros((4, 4, 4)))
    with pytest.raises(EvaluateError, match="no foreground label"):
        evaluate_folder(tmp_path / "pred", tmp_path / "labels", tmp_path / "o.csv")


def _oblique_affine():
    """An oblique grid: 15 degrees about z, anisotropic voxels, a non-zero origin."""
    angle = np.deg2rad(15.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(ZOOMS)
    affine[:3, 3] = (-20.0, 35.0, 7.5)
    return affine


@pytest.fixture
def aligned(tmp_path):
    """One case on an oblique grid, class 1 a 3x3x2 block, predicted one voxel off along x."""
    label = np.zeros((8, 6, 4), np.uint8)
    label[1:4, 1:4, 1:3] = 1
    pred = np.zeros_like(label)
    pred[2:5, 1:4, 1:3] = 1
    affine = _oblique_affine()
    for folder, array in (("labels", label), ("pred", pred)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(array, affine), str(tmp_path / folder / "c1.nii.gz"))
    return tmp_path, pred, affine


def _save_affine(path, array, affine):
    nib.save(nib.Nifti1Image(np.asarray(array, np.uint8), affine), str(path))


def test_prediction_100_mm_away_is_refused(aligned):
    tmp, pred, affine = aligned
    shifted = affine.copy()
    shifted[:3, 3] += (100.0, 0.0, 0.0)
    _save_affine(tmp / "pred" / "c1.nii.gz", pred, shifted)
    with pytest.raises(EvaluateError) as err:
        evaluate_folder(tmp / "pred", tmp / "labels", tmp / "o.csv")
    text = str(err.value)
    assert "pred/c1.nii.gz" in text and "labels/c1.nii.gz" in text
    assert "origin 100 mm apart" in text and "--resample" in text
    assert not (tmp / "o.csv").exists()  # nothing written


def test_flipped_affine_is_refused_and_resampled_scores_as_unflipped(aligned):
    tmp, pred, affine = aligned
    reference = evaluate_folder(tmp / "pred", tmp / "labels", tmp / "ref.csv")
    assert reference[0]["dice"] == pytest.approx(2 * 12 / 36)  # 12 of 18 voxels overlap
    # The same world content stored with the x axis reversed: voxel i holds old voxel 7 - i.
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, pred.shape[0] - 1
    _save_affine(tmp / "pred" / "c1.nii.gz", pred[::-1], affine @ flip)
    with pytest.raises(EvaluateError, match="axis directions"):
        evaluate_folder(tmp / "pred", tmp / "labels", tmp / "o.csv")
    # The flipped array on the original affine: the same grid, but a different segmentation.
    _save_affine(tmp / "pred" / "c1.nii.gz", pred[::-1], affine)
    assert evaluate_folder(tmp / "pred", tmp / "labels", tmp / "w.csv")[0]["dice"] == (
        pytest.approx(2 * 6 / 36))
    _save_affine(tmp / "pred" / "c1.nii.gz", pred[::-1], affine @ flip)
    messages = []
    rows = evaluate_folder(tmp / "pred", tmp / "labels", tmp / "r.csv", resample=True,
                           echo=messages.append)
    assert rows == reference
    assert len(messages) == 1 and "resampled onto the grid" in messages[0]
    assert "nearest neighbour" in messages[0]


def test_a_sub_tolerance_difference_is_the_same_grid(aligned):
    tmp, pred, affine = aligned
    nudged = affine.copy()
    nudged[:3, 3] += 2e-4  # 0.35 micrometre: rounding, not a different grid
    _save_affine(tmp / "pred" / "c1.nii.gz", pred, nudged)
    rows = evaluate_folder(tmp / "pred", tmp / "labels", tmp / "o.csv")
    assert rows[0]["dice"] == pytest.approx(2 * 12 / 36)


def test_resample_handles_a_different_shape_and_spacing(aligned):
    tmp, _, affine = aligned
    label = np.asarray(nib.load(str(tmp / "labels" / "c1.nii.gz")).dataobj)
    # The label itself at half the voxel size along x: 16 voxels that resample back exactly.
    fine = np.repeat(label, 2, axis=0)
    half = affine.copy()
    half[:3, 0] /= 2.0
    half[:3, 3] -= affine[:3, 0] / 4.0  # voxel centres of the halves straddle the old centre
    _save_affine(tmp / "pred" / "c1.nii.gz", fine, half)
    with pytest.raises(EvaluateError, match=r"shape: prediction \(16, 6, 4\), label \(8, 6, 4\)"):
        evaluate_folder(tmp / "pred", tmp / "labels", tmp / "o.csv")
    rows = evaluate_folder(tmp / "pred", tmp / "labels", tmp / "o.csv", resample=True)
    assert rows[0]["dice"] == 1.0 and rows[0]["nsd"] == 1.0


def test_nsd_tolerance_is_passed_through(aligned):
    tmp, _, _ = aligned
    # The one-voxel shift along x is 0.5 mm: inside 0.5 mm every surface voxel counts, inside
    # 0.4 mm only those on the shared faces do.
    loose = evaluate_folder(tmp / "pred", tmp / "labels", tmp / "a.csv", nsd_tolerance_mm=0.5)
    tight = evaluate_folder(tmp / "pred", tmp / "labels", tmp / "b.csv", nsd_tolerance_mm=0.4)
    assert loose[0]["nsd"] == 1.0 and 0.0 < tight[0]["nsd"] < 1.0
