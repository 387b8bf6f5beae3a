"""`diffseg3d predict` end to end on the tiny phantom model: a folder run (run id from the
store), a folder with a bad file (the rest predicted, exit 1 listing it), and one-line errors."""

import json

import nibabel as nib
import numpy as np
import pytest
from diffseg3d.cli.main import main
from diffseg3d.core.data.resample import resample_to_grid

from tests.predict.trained_phantom import TEST_CASES, trained_trial, write_reoriented

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    return trained_trial(tmp_path_factory)


@pytest.fixture(scope="module")
def inputs(trial, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_inputs")
    write_reoriented(trial["data"], folder)
    return folder


def test_predict_a_folder_from_an_mlflow_run(trial, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["predict", "--model", f"runs:/{trial['run_id']}", "--input", str(inputs),
                   "--out", str(out), "--samples", "2", "--steps", "2", "--sampler", "ddim",
                   "--seed", "1", "--tracking-uri", trial["uri"], "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "compiled once" in printed and all(case in printed for case in TEST_CASES)
    for case in TEST_CASES:
        source = nib.load(str(inputs / f"{case}_0000.nii.gz"))
        for suffix in ("", "_entropy", "_disagreement"):
            image = nib.load(str(out / f"{case}{suffix}.nii.gz"))
            assert image.shape == source.shape
            np.testing.assert_array_equal(image.affine, source.affine)


def test_labels_score_the_samples_and_print_one_line(trial, inputs, tmp_path, capsys):
    case = TEST_CASES[0]
    image = inputs / f"{case}_0000.nii.gz"
    label = np.asarray(nib.load(str(trial["data"] / "labelsTr" / f"{case}.nii.gz")).dataobj)
    source = trial["data"] / "imagesTr" / f"{case}.nii.gz"
    # The label on the input's grid: the prepared label resampled like the image was.
    on_input = resample_to_grid(label, nib.load(str(source)).affine, nib.load(str(image)).affine,
                                nib.load(str(image)).shape, order=0)
    nib.save(nib.Nifti1Image(on_input.astype(np.uint8), nib.load(str(image)).affine),
             str(tmp_path / "ref.nii.gz"))
    out = tmp_path / "out"
    status = main(["predict", "--model", str(trial["workdir"]), "--input", str(image),
                   "--out", str(out), "--samples", "2", "--steps", "2",
                   "--labels", str(tmp_path / "ref.nii.gz"), "--quiet"])
    assert status == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("scored ")]
    assert len(lines) == 1 and "scored 1 case(s) against --labels: Dice (ensemble) " in lines[0]
    assert str(out / "uncertainty_per_case.csv") in lines[0]
    classes = len(json.loads((out / "labels.json").read_text())["labels"]) - 1
    assert (out / "uncertainty_per_case.csv").read_text().count(f"\n{case},") == classes > 0


def test_a_bad_file_in_a_folder_fails_alone_and_exits_1(trial, inputs, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    good = nib.load(str(inputs / f"{TEST_CASES[0]}_0000.nii.gz"))
    nib.save(good, str(folder / "good.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), good.affine),
             str(folder / "fourd.nii.gz"))
    status = main(["predict", "--model", str(trial["workdir"]), "--input", str(folder),
                   "--out", str(tmp_path / "out"), "--quiet"])
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: 1 of 2 cases failed: fourd:")
    assert "fourd.nii.gz" in err[0]
    assert (tmp_path / "out" / "good.nii.gz").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--model", "nowhere"], "--model nowhere: no such folder"),
    (["--steps", "0"], "--steps 0"),
    (["--input", "absent.nii.gz"], "--input absent.nii.gz: no such file"),
    (["--labels", "labels"], "--labels needs --samples N >= 2"),
])
def test_bad_arguments_print_one_error_line(trial, inputs, tmp_path, capsys, extra, message):
    args = {"--model": str(trial["workdir"]), "--input": str(inputs),
            "--out": str(tmp_path / "out")}
    args.update(zip(extra[::2], extra[1::2], strict=True))
    status = main(["predict", *[x for pair in args.items() for x in pair], "--quiet"])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
