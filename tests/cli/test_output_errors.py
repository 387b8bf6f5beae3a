"""Output paths of the wrong kind through the real command line: one `error:` line naming the
path, exit 2, no traceback, nothing changed; and `evaluate` naming the prediction values that no
label holds while scoring them as before."""

import csv

import nibabel as nib
import numpy as np
import pytest
import yaml
from diffseg3d.cli.main import main


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("keep me")
    return path


@pytest.fixture
def phantom(tmp_path):
    from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

    return make_phantom(tmp_path / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8)))


def test_predict_out_naming_an_existing_file(tmp_path, capsys, a_file):
    (tmp_path / "in.nii.gz").write_bytes(b"")
    assert main(["predict", "--model", str(tmp_path / "no_model"), "--input",
                 str(tmp_path / "in.nii.gz"), "--out", str(a_file), "--quiet"]) == 2
    assert _one_line(capsys) == (f"error: --out {a_file} is a file, not a folder; nothing was "
                                 "written (give a folder, or move the file away)")
    assert a_file.read_text() == "keep me"


def test_tables_out_below_an_existing_file(tmp_path, capsys, a_file):
    out = a_file / "paper"
    assert main(["tables", "--csv-dir", str(tmp_path), "--out", str(out)]) == 2
    assert _one_line(capsys) == (f"error: --out {out}: {a_file} is a file, not a folder; "
                                 "nothing was written")
    assert a_file.read_text() == "keep me"


def test_evaluate_out_naming_a_folder(tmp_path, capsys):
    (tmp_path / "scores.csv").mkdir()
    assert main(["evaluate", "--pred", str(tmp_path), "--labels", str(tmp_path), "--out",
                 str(tmp_path / "scores.csv")]) == 2
    assert _one_line(capsys) == (f"error: --out {tmp_path / 'scores.csv'} is a folder, not a "
                                 "file; nothing was written")
    assert list((tmp_path / "scores.csv").iterdir()) == []


def test_ablate_with_a_folder_where_its_store_file_goes(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "runs"
    (out / "mlflow.db").mkdir(parents=True)
    assert main(["ablate", "paper", "--profile", "smoke", "--out", str(out)]) == 2
    assert _one_line(capsys) == (f"error: --out {out / 'mlflow.db'} is a folder, not a file; "
                                 "nothing was written")
    assert sorted(p.name for p in out.iterdir()) == ["mlflow.db"]


@pytest.mark.parametrize("command", ["train", "ablate"])
def test_train_and_ablate_out_naming_a_file(tmp_path, capsys, a_file, phantom, command):
    target = tmp_path / "target.yaml"
    if command == "train":
        target.write_text(yaml.safe_dump({"data": {"root": str(phantom)}}))
    else:
        target.write_text(yaml.safe_dump({
            "name": "g", "seeds": [0], "data_sets": {"phantom": str(phantom)},
            "base": {"method": "unet"},
            "comparisons": [{"table": "1", "axes": {"method": ["unet"]}}]}))
    assert main([command, str(target), "--profile", "smoke", "--out", str(a_file)]) == 2
    assert _one_line(capsys).startswith(f"error: --out {a_file} is a file, not a folder")
    assert a_file.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom", "results.txt",
                                                           "target.yaml"]


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.eye(4)), str(path))


def test_evaluate_names_prediction_values_no_label_holds_and_scores_them(tmp_path, capsys):
    label = np.zeros((8, 8, 4), np.uint8)
    label[0:2, 0:2, 0:2] = 1
    label[4:6, 4:6, 0:2] = 2
    stray = label.copy()
    stray[7, 7, 3] = 3  # a value no label uses
    for case in ("c1", "c2", "c3"):
        _save(tmp_path / "labels" / f"{case}.nii.gz", label)
        _save(tmp_path / "pred" / f"{case}.nii.gz", label if case == "c2" else stray)
    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--labels",
                 str(tmp_path / "labels"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert ("note: label value 3 (class_3) is in no label file but in the predictions of 2 "
            "case(s): c1, c3; scored as that class (Dice 0 where predicted)") in printed
    with open(out, newline="") as handle:
        rows = {(r["case"], r["class"]): r for r in csv.DictReader(handle)}
    # Scored as before the note existed: an extra class, Dice 0 where predicted, NaN elsewhere.
    assert float(rows["c1", "class_3"]["dice"]) == 0.0
    assert rows["c2", "class_3"]["dice"] == "nan"
    assert float(rows["c1", "class_1"]["dice"]) == 1.0
