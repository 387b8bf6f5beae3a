"""`diffseg3d evaluate` on NIfTI files with known Dice, and one-line errors for bad input."""

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest
from diffseg3d.cli.main import main


def save(path, array, zooms=(1.0, 2.0, 3.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.diag([*zooms, 1.0])), str(path))


@pytest.fixture
def folders(tmp_path):
    """Two cases, classes a (1) and b (2) on an 8x8x4 grid:
    case1: a = 8 voxels, prediction a shifted to overlap 4 -> Dice 2*4/(8+8) = 0.5; b exact -> 1.
    case2: a absent in both -> NaN Dice; b predicted nowhere -> Dice 0, HD95 NaN."""
    label1 = np.zeros((8, 8, 4), np.uint8)
    label1[0:2, 0:2, 0:2] = 1
    label1[5:7, 5:7, 1:3] = 2
    pred1 = np.zeros_like(label1)
    pred1[1:3, 0:2, 0:2] = 1
    pred1[5:7, 5:7, 1:3] = 2
    label2 = np.zeros_like(label1)
    label2[3:5, 3:5, 0:2] = 2
    pred2 = np.zeros_like(label1)
    root = tmp_path / "dataset"
    save(root / "labelsTr" / "case1.nii.gz", label1)
    save(root / "labelsTr" / "case2.nii.gz", label2)
    save(tmp_path / "pred" / "case1.nii.gz", pred1)
    save(tmp_path / "pred" / "case2.nii", pred2)
    (root / "dataset.json").write_text(
        json.dumps({"name": "toy", "class_names": ["a", "b"], "spacing": [1.0, 2.0, 3.0]})
    )
    return tmp_path, root / "labelsTr", tmp_path / "pred"


def read(path):
    with open(path, newline="") as handle:
        return {(r["case"], r["class"]): r for r in csv.DictReader(handle)}


def test_evaluate_known_dice(folders, capsys):
    tmp, labels, pred = folders
    out = tmp / "scores.csv"
    assert main(["evaluate", "--pred", str(pred), "--labels", str(labels), "--out", str(out)]) == 0
    rows = read(out)
    assert float(rows["case1", "a"]["dice"]) == pytest.approx(0.5)
    assert float(rows["case1", "b"]["dice"]) == pytest.approx(1.0)
    assert float(rows["case1", "b"]["hd95"]) == pytest.approx(0.0)
    # Shift by one voxel along x (1 mm): every surface voxel is within 1 mm of the other mask.
    assert float(rows["case1", "a"]["hd95"]) == pytest.approx(1.0)
    assert math.isnan(float(rows["case2", "a"]["dice"]))
    assert float(rows["case2", "b"]["dice"]) == 0.0
    assert math.isnan(float(rows["case2", "b"]["hd95"]))
    assert int(rows["case1", "a"]["roi_voxels"]) == 8
    assert float(rows["case1", "a"]["roi_mm3"]) == pytest.approx(8 * 1.0 * 2.0 * 3.0)
    # case1 mean (0.5 + 1) / 2, case2 mean 0 (a is NaN) -> 0.375
    assert "mean Dice 0.3750" in capsys.readouterr().out


def test_evaluate_spacing_and_classes_options(folders):
    tmp, labels, pred = folders
    (labels.parent / "dataset.json").unlink()
    out = tmp / "s.csv"
    args = ["evaluate", "--pred", str(pred), "--labels", str(labels), "--out", str(out)]
    assert main(args) == 0  # classes = labels present (class_<k>), spacing from the headers
    assert set(read(out)) == {(c, f"class_{k}") for c in ("case1", "case2") for k in (1, 2)}
    assert float(read(out)["case1", "class_1"]["roi_mm3"]) == pytest.approx(48.0)
    assert main([*args, "--classes", "a,b", "--spacing-from-labels"]) == 0
    assert float(read(out)["case1", "a"]["roi_mm3"]) == pytest.approx(48.0)


def test_evaluate_missing_and_mismatched_cases(folders, capsys):
    tmp, labels, pred = folders
    (pred / "case2.nii").unlink()
    args = ["evaluate", "--pred", str(pred), "--labels", str(labels), "--out", str(tmp / "x.csv")]
    assert main(args) == 2
    assert "no prediction for ['case2']" in capsys.readouterr().err
    save(pred / "case2.nii.gz", np.zeros((8, 8, 2)))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "case2" in err and "(8, 8, 2)" in err and "(8, 8, 4)" in err
    save(pred / "case2.nii.gz", np.zeros((8, 8, 4)), zooms=(1.0, 1.0, 1.0))
    assert main(args) == 2
    assert "voxel size" in capsys.readouterr().err
    save(pred / "case2.nii.gz", np.full((8, 8, 4), 5))
    assert main(args) == 2
    assert "case2" in capsys.readouterr().err


def test_evaluate_nsd_column_and_tolerance(folders, capsys):
    tmp, labels, pred = folders
    out = tmp / "n.csv"
    args = ["evaluate", "--pred", str(pred), "--labels", str(labels), "--out", str(out)]
    assert main(args) == 0
    assert "NSD at 2 mm" in capsys.readouterr().out
    # case1 a: shifted one 1 mm voxel along x, so every surface voxel is within 2 mm.
    assert float(read(out)["case1", "a"]["nsd"]) == 1.0
    assert math.isnan(float(read(out)["case2", "a"]["nsd"]))  # empty in both
    assert float(read(out)["case2", "b"]["nsd"]) == 0.0  # empty prediction
    assert main([*args, "--nsd-tolerance", "0"]) == 0
    assert 0.0 < float(read(out)["case1", "a"]["nsd"]) < 1.0
    with pytest.raises(SystemExit):
        main([*args, "--nsd-tolerance", "-1"])
    assert "--nsd-tolerance" in capsys.readouterr().err


def test_cli_default_tolerance_is_the_library_default():
    from diffseg3d.cli.evaluate import DEFAULT_TOLERANCE_MM
    from diffseg3d.core.metrics.nsd import DEFAULT_TOLERANCE_MM as LIBRARY_DEFAULT

    assert DEFAULT_TOLERANCE_MM == LIBRARY_DEFAULT


def test_evaluate_refuses_a_shifted_prediction_and_resamples_on_request(folders, capsys):
    tmp, labels, pred = folders
    out = tmp / "g.csv"
    args = ["evaluate", "--pred", str(pred), "--labels", str(labels), "--out", str(out)]
    assert main(args) == 0
    before = read(out)
    image = nib.load(str(pred / "case1.nii.gz"))
    array = np.asarray(image.dataobj)
    shifted = image.affine.copy()
    shifted[:3, 3] += (100.0, 0.0, 0.0)
    nib.save(nib.Nifti1Image(array, shifted), str(pred / "case1.nii.gz"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "case1" in err and "origin 100 mm apart" in err
    # Flipped along y, stored with the matching affine: the same world content.
    flip = np.diag([1.0, -1.0, 1.0, 1.0])
    flip[1, 3] = array.shape[1] - 1
    nib.save(nib.Nifti1Image(array[:, ::-1], image.affine @ flip), str(pred / "case1.nii.gz"))
    assert main(args) == 2
    assert "axis directions: prediction RPS, label RAS" in capsys.readouterr().err
    assert main([*args, "--resample"]) == 0
    assert "case1: prediction case1.nii.gz resampled" in capsys.readouterr().out
    assert read(out) == before
