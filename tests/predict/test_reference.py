"""`predict_volumes(labels=...)`: the N samples of each case scored against its reference label
on the prepared grid by the trial's scorer, checked against scores computed here by hand from
the same samples; and the errors of bad labels, each naming the file."""

import csv
import math

import jax
import nibabel as nib
import numpy as np
import pytest
from diffseg3d.core.data.inference import prepare_volume
from diffseg3d.core.data.resample import resample_to_grid
from diffseg3d.experiments.tracking import record
from diffseg3d.predict.model_source import PredictError
from diffseg3d.predict.predictor import CasePredictor, predict_volumes, resolve_settings
from diffseg3d.predict.reference import reference_on_grid

from .trained_phantom import TEST_CASES, write_reoriented

pytestmark = pytest.mark.slow

SAMPLES, STEPS, SEED = 3, 2, 5


@pytest.fixture(scope="module")
def inputs(trial, tmp_path_factory):
    """Images `<case>_0000.nii.gz` on the LPS grid and their labels `<case>.nii.gz` on it."""
    folder = tmp_path_factory.mktemp("ref_inputs")
    truth = write_reoriented(trial["data"], folder / "images")
    (folder / "labels").mkdir()
    for case, label in truth.items():
        affine = nib.load(str(folder / "images" / f"{case}_0000.nii.gz")).affine
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine),
                 str(folder / "labels" / f"{case}.nii.gz"))
    return folder


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _dice(a, b):
    total = a.sum() + b.sum()
    return math.nan if total == 0 else 2.0 * (a & b).sum() / total


def _distance(a, b):  # 1 - IoU, 0 for two empty masks
    union = (a | b).sum()
    return 0.0 if union == 0 else 1.0 - (a & b).sum() / union


def test_folder_scores_equal_hand_computed_ones_from_the_same_samples(model, inputs, tmp_path):
    report = predict_volumes(model, inputs / "images", tmp_path, samples=SAMPLES, steps=STEPS,
                             seed=SEED, progress=False, labels=inputs / "labels")
    assert report.failures == []
    csv_path = tmp_path / record.ARTIFACT_UNCERTAINTY
    assert report.score_files[0] == csv_path and (tmp_path / record.ARTIFACT_RELIABILITY).is_file()
    rows = _rows(csv_path)
    assert [(r["case"], r["class"]) for r in rows] == [
        (case, name) for case in TEST_CASES for name in model.class_names]
    # Independently: the same samples (same seed and settings), the reference resampled here.
    predictor = CasePredictor(model, resolve_settings(model, SAMPLES, STEPS))
    for case in TEST_CASES:
        image_path = inputs / "images" / f"{case}_0000.nii.gz"
        image, geometry = prepare_volume(image_path, model.preparation["preprocessing"])
        source = nib.load(str(inputs / "labels" / f"{case}.nii.gz"))
        truth = resample_to_grid(np.asarray(source.dataobj).astype(np.int32), source.affine,
                                 geometry.affine, geometry.shape, order=0)
        maps = predictor.predict(image, jax.random.PRNGKey(SEED), keep_samples=True)
        assert maps.sample_labels.shape == (SAMPLES, *model.shape)
        np.testing.assert_array_equal(maps.probs.argmax(-1), maps.label)
        for c, name in enumerate(model.class_names, start=1):
            row = next(r for r in rows if r["case"] == case and r["class"] == name)
            y, samples = truth == c, maps.sample_labels == c
            assert float(row["samples"]) == SAMPLES
            assert float(row["dice_ensemble"]) == pytest.approx(
                _dice(maps.label == c, y), nan_ok=True)
            dice = [_dice(s, y) for s in samples]
            finite = [d for d in dice if np.isfinite(d)]
            expected_std = float(np.std(finite)) if finite else math.nan
            assert float(row["sample_dice_std"]) == pytest.approx(expected_std, nan_ok=True)
            pairs = [_distance(samples[i], samples[j]) for i in range(SAMPLES)
                     for j in range(i + 1, SAMPLES)]
            ged = 2 * np.mean([_distance(s, y) for s in samples]) - np.mean(pairs)
            assert float(row["diversity"]) == pytest.approx(np.mean(pairs))
            assert float(row["ged"]) == pytest.approx(ged)
    line = report.scores_line
    assert line.startswith("scored 2 case(s) against --labels: Dice (ensemble) ")
    assert str(csv_path) in line and "GED" in line and "\n" not in line


def test_reference_on_the_prepared_grid_of_the_training_data_is_the_prepared_label(trial,
                                                                                    model):
    """A prepared case is already on the prepared grid: its reference is its label, voxel for
    voxel (nearest neighbour moves nothing)."""
    case = TEST_CASES[0]
    image = trial["data"] / "imagesTr" / f"{case}.nii.gz"
    label = trial["data"] / "labelsTr" / f"{case}.nii.gz"
    _, geometry = prepare_volume(image, model.preparation["preprocessing"])
    got = reference_on_grid(label, str(image), geometry, model.num_classes)
    np.testing.assert_array_equal(got, np.asarray(nib.load(str(label)).dataobj))


def test_bad_labels_are_errors_naming_the_file(model, inputs, tmp_path):
    image = inputs / "images" / f"{TEST_CASES[0]}_0000.nii.gz"
    source = nib.load(str(image))
    label = np.asarray(nib.load(str(inputs / "labels" / f"{TEST_CASES[0]}.nii.gz")).dataobj)
    with pytest.raises(PredictError, match="--labels needs --samples N >= 2.*--samples 1"):
        predict_volumes(model, image, tmp_path / "a", steps=STEPS, progress=False,
                        labels=inputs / "labels")
    bad = {
        "shape.nii.gz": nib.Nifti1Image(label[:-1].astype(np.uint8), source.affine),
        "affine.nii.gz": nib.Nifti1Image(label.astype(np.uint8), source.affine @ np.diag(
            [1.0, 1.0, 2.0, 1.0])),
        "values.nii.gz": nib.Nifti1Image(
            np.where(label > 0, model.num_classes, 0).astype(np.uint8), source.affine),
    }
    messages = {"shape.nii.gz": "differs from image", "affine.nii.gz": "affine",
                "values.nii.gz": f"not in the class list 0..{model.num_classes - 1}"}
    for name, nifti in bad.items():
        path = tmp_path / name
        nib.save(nifti, str(path))
        report = predict_volumes(model, image, tmp_path / name.split(".")[0], samples=2,
                                 steps=STEPS, progress=False, labels=path)
        [failure] = report.failures
        assert str(path) in failure.error and messages[name] in failure.error, failure.error
        assert report.scores_line == "scored against --labels: no case was predicted"
        assert not (tmp_path / name.split(".")[0] / record.ARTIFACT_UNCERTAINTY).exists()
    folder = tmp_path / "partial"
    folder.mkdir()
    nib.save(nib.load(str(inputs / "labels" / f"{TEST_CASES[0]}.nii.gz")),
             str(folder / f"{TEST_CASES[0]}.nii.gz"))
    with pytest.raises(PredictError, match=f"{folder}: no label .*{TEST_CASES[1]}"):
        predict_volumes(model, inputs / "images", tmp_path / "b", samples=2, steps=STEPS,
                        progress=False, labels=folder)
    with pytest.raises(PredictError, match="one label file for 2 input cases"):
        predict_volumes(model, inputs / "images", tmp_path / "c", samples=2, steps=STEPS,
                        progress=False, labels=folder / f"{TEST_CASES[0]}.nii.gz")
