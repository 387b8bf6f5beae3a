"""`evaluate_folder` on plain NIfTI folders: classes from the labels present, spacing from the
label headers, and dataset.json taking over where it exists."""

import json
import math

import nibabel as nib
import numpy as np
import pytest
from diffseg3d.experiments.evaluate_folder import EvaluateError, evaluate_folder

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
