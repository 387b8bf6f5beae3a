"""`predictor`: a tiny trained diffusion model on NIfTI files in other grids than its training
data (LPS, stored axes permuted, 1.2x spacing, 1.3x field of view): labels come back in each
input's exact grid and agree with the truth as well as the trial's own test score; samples,
seeds, the MLflow model and bad inputs."""

import csv
import json
import math
import shutil

import jax
import mlflow
import nibabel as nib
import numpy as np
import pytest
from diffseg3d.core.data.inference import prepare_volume, restore_label
from diffseg3d.core.infer.ensemble import ensemble_maps
from diffseg3d.core.metrics.evaluate import mean_case_dice
from diffseg3d.core.train.checkpoint import params_digest
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.tracking.store_check import TrackingStoreError
from diffseg3d.predict.model_source import PredictError, load_model
from diffseg3d.predict.predictor import CasePredictor, predict_volumes, resolve_settings

from .trained_phantom import (
    TEST_CASES,
    lps_permuted,
    write_lps_permuted,
    write_reoriented,
)

pytestmark = pytest.mark.slow

#: How much lower than the trial's own test Dice (same cases, prepared grid) the Dice in the
#: input grid may be: the inputs were resampled once (linear), the prediction goes through
#: prepare (linear) and restore (nearest), which moves boundary voxels, and it samples other
#: noise than the trial's test key. The 20-step model is weak (Dice about 0.05 on these cases),
#: so the exact geometry check is `test_a_reoriented_copy_gives_the_same_prediction_reoriented`.
DICE_MARGIN = 0.05


@pytest.fixture(scope="module")
def inputs(trial, tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    return folder, write_reoriented(trial["data"], folder)


def _trial_case_dice(trial) -> dict[str, float]:
    per_case: dict[str, list[float]] = {}
    with open(trial["result"]["per_case_csv"], newline="") as handle:
        for row in csv.DictReader(handle):
            per_case.setdefault(row["case"], []).append(float(row["dice"]))
    return {case: float(np.nanmean(v)) for case, v in per_case.items()}


def test_labels_in_the_input_grid_agree_with_the_truth(trial, model, inputs, tmp_path):
    folder, truth = inputs
    report = predict_volumes(model, folder, tmp_path, progress=False)
    assert report.failures == [] and [c.case for c in report.cases] == list(TEST_CASES)
    trial_dice = _trial_case_dice(trial)
    for case in TEST_CASES:
        source = nib.load(str(folder / f"{case}_0000.nii.gz"))
        out = nib.load(str(tmp_path / f"{case}.nii.gz"))
        assert out.shape == source.shape and source.shape != model.shape
        np.testing.assert_array_equal(out.affine, source.affine)
        assert np.issubdtype(out.get_data_dtype(), np.integer)
        pred = np.asarray(out.dataobj).astype(np.int32)
        assert set(np.unique(pred)) <= set(range(model.num_classes))
        dice = mean_case_dice(pred[None], truth[case][None], model.num_classes)
        assert dice >= trial_dice[case] - DICE_MARGIN, (case, dice, trial_dice[case])
    assert not (tmp_path / f"{TEST_CASES[0]}_entropy.nii.gz").exists()  # one sample: no maps
    labels = json.loads((tmp_path / "labels.json").read_text())["labels"]
    assert labels == {"0": "background", **{str(i + 1): n for i, n in
                                            enumerate(model.class_names)}}
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_a_reoriented_copy_gives_the_same_prediction_reoriented(trial, model, tmp_path):
    """Independent of how well the tiny model segments: the same voxels stored in another axis
    order prepare to the same array, so with the same seed every output is the original's,
    stored in the copy's axis order."""
    original = trial["data"] / "imagesTr" / f"{TEST_CASES[0]}.nii.gz"
    copy = write_lps_permuted(original, tmp_path / "lps" / "copy.nii.gz")
    for name, source in (("a", original), ("b", copy)):
        report = predict_volumes(model, source, tmp_path / name, samples=2, seed=2,
                                 progress=False)
        assert report.failures == []
    for suffix in ("", "_entropy", "_disagreement"):
        a = np.asarray(nib.load(str(tmp_path / "a" / f"{TEST_CASES[0]}{suffix}.nii.gz")).dataobj)
        b = nib.load(str(tmp_path / "b" / f"copy{suffix}.nii.gz"))
        np.testing.assert_array_equal(b.affine, nib.load(str(copy)).affine)
        np.testing.assert_allclose(np.asarray(b.dataobj), lps_permuted(a), atol=1e-6)


def test_samples_write_entropy_and_disagreement_maps(model, inputs, tmp_path):
    folder, _ = inputs
    report = predict_volumes(model, folder / f"{TEST_CASES[0]}_0000.nii.gz", tmp_path,
                             samples=3, batch=2, steps=3, sampler="ddpm", progress=False)
    assert report.failures == [] and report.settings.samples == 3
    source = nib.load(str(folder / f"{TEST_CASES[0]}_0000.nii.gz"))
    entropy = nib.load(str(tmp_path / f"{TEST_CASES[0]}_entropy.nii.gz"))
    disagreement = nib.load(str(tmp_path / f"{TEST_CASES[0]}_disagreement.nii.gz"))
    for image in (entropy, disagreement):
        assert image.shape == source.shape
        np.testing.assert_array_equal(image.affine, source.affine)
    e, d = np.asarray(entropy.dataobj), np.asarray(disagreement.dataobj)
    assert e.min() >= -1e-6 and e.max() <= math.log(model.num_classes) + 1e-5
    assert d.min() >= 0.0 and d.max() <= 1.0 and e.max() > 0.0


def test_ensemble_of_identical_samples_is_the_single_sample(model, inputs):
    folder, _ = inputs
    image, _ = prepare_volume(folder / f"{TEST_CASES[0]}_0000.nii.gz",
                              model.preparation["preprocessing"])
    single = CasePredictor(model, resolve_settings(model, samples=1, steps=2))
    key = jax.random.PRNGKey(7)
    x0 = single.final_x0(image, key)  # (1, 1, *S, C)
    label, entropy, disagreement = (np.asarray(a) for a in
                                    ensemble_maps(np.repeat(np.asarray(x0), 4, axis=0)))
    one_label, one_entropy, _ = (np.asarray(a) for a in ensemble_maps(x0))
    np.testing.assert_array_equal(label[0], single.predict(image, key).label)
    np.testing.assert_array_equal(label, one_label)
    np.testing.assert_allclose(entropy, one_entropy, atol=1e-6)
    assert not disagreement.any()


def test_a_seed_reproduces_the_output_bit_for_bit(model, inputs, tmp_path):
    folder, _ = inputs
    file = folder / f"{TEST_CASES[1]}_0000.nii.gz"
    outs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        predict_volumes(model, file, tmp_path / name, samples=2, seed=seed, progress=False)
        outs[name] = [np.asarray(nib.load(str(tmp_path / name / f"{TEST_CASES[1]}{s}.nii.gz"))
                                 .dataobj) for s in ("", "_entropy", "_disagreement")]
    for a, b in zip(outs["a"], outs["b"], strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert any(a.tobytes() != c.tobytes() for a, c in zip(outs["a"], outs["c"], strict=True))


def test_mlflow_run_registered_model_and_pyfunc_give_predicts_labels(trial, model, inputs,
                                                                      tmp_path):
    folder, _ = inputs
    file = folder / f"{TEST_CASES[0]}_0000.nii.gz"
    from_run = load_model(f"runs:/{trial['run_id']}", trial["uri"])
    assert params_digest(from_run.params) == params_digest(model.params)
    assert from_run.preparation == model.preparation
    predict_volumes(from_run, file, tmp_path, samples=2, seed=5, progress=False)
    expected = np.asarray(nib.load(str(tmp_path / f"{TEST_CASES[0]}.nii.gz")).dataobj)

    client = mlflow.MlflowClient(trial["uri"])
    logged = {f.path for f in client.list_artifacts(trial["run_id"])}
    assert {record.ARTIFACT_PREPARATION, record.ARTIFACT_CONFIG} <= logged
    # The model is an MLflow logged model of the run, its output, with the run's test metrics.
    run = client.get_run(trial["run_id"])
    (output,) = run.outputs.model_outputs
    logged_model = client.get_logged_model(output.model_id)
    assert logged_model.name == record.ARTIFACT_MODEL
    assert logged_model.source_run_id == trial["run_id"] and logged_model.status == "READY"
    assert {m.key: m.value for m in logged_model.metrics}["test_dice"] == \
        run.data.metrics["test_dice"]
    by_id = load_model(f"models:/{output.model_id}", trial["uri"])
    assert params_digest(by_id.params) == params_digest(model.params)
    assert json.loads((trial["workdir"] / record.ARTIFACT_PREPARATION).read_text()) == {
        "name": "phantom", "class_names": model.class_names, "spacing": [1.5, 1.5, 3.0],
        "shape": [16, 16, 8], "channels": 1,
        "preprocessing": json.loads((trial["data"] / "dataset.json").read_text())[
            "preprocessing"]}

    mlflow.set_tracking_uri(trial["uri"])  # MLflow resolves a run's logged model through it
    listed = mlflow.artifacts.list_artifacts(f"runs:/{trial['run_id']}/model/artifacts")
    assert {f.path for f in listed} == {f"model/artifacts/{name}" for name in (
        record.ARTIFACT_CHECKPOINT, record.ARTIFACT_CONFIG, record.ARTIFACT_PREPARATION)}
    version = mlflow.register_model(f"runs:/{trial['run_id']}/model", "tiny-phantom")
    registered = load_model(f"models:/tiny-phantom/{version.version}", trial["uri"])
    assert params_digest(registered.params) == params_digest(model.params)

    pyfunc = mlflow.pyfunc.load_model(f"runs:/{trial['run_id']}/model")
    preparation = pyfunc.metadata.metadata["preparation"]
    image, geometry = prepare_volume(file, preparation["preprocessing"])
    labels = pyfunc.predict(image[None, ..., None], params={"seed": 5, "samples": 2})
    assert labels.shape == (1, *model.shape) and labels.dtype == np.int32
    restored = np.asarray(restore_label(labels[0], geometry).dataobj)
    np.testing.assert_array_equal(restored, expected)


def test_bad_files_fail_alone_naming_the_file(model, inputs, tmp_path):
    folder, _ = inputs
    mixed = tmp_path / "in"
    mixed.mkdir()
    good = nib.load(str(folder / f"{TEST_CASES[0]}_0000.nii.gz"))
    nib.save(good, str(mixed / "good.nii.gz"))
    nan = np.asarray(good.dataobj).copy()
    nan[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, good.affine), str(mixed / "nan.nii.gz"))
    two = np.stack([np.asarray(good.dataobj)] * 2, axis=-1)
    nib.save(nib.Nifti1Image(two, good.affine), str(mixed / "fourd.nii.gz"))
    (mixed / "text.nii.gz").write_text("not a NIfTI file")
    for channel in ("0000", "0001"):
        nib.save(good, str(mixed / f"multi_{channel}.nii.gz"))
    report = predict_volumes(model, mixed, tmp_path / "out", progress=False)
    errors = {c.case: c.error for c in report.failures}
    assert sorted(errors) == ["fourd", "multi", "nan", "text"]
    assert "nan.nii.gz" in errors["nan"] and "NaN" in errors["nan"]
    assert "fourd.nii.gz" in errors["fourd"] and "2 channels" in errors["fourd"]
    assert "text.nii.gz" in errors["text"]
    assert "multi_0001.nii.gz" in errors["multi"]
    assert all("\n" not in e for e in errors.values())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.nii.gz", "labels.json"]


def test_bad_models_and_options_are_one_line_errors(trial, model, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cases = {
        str(tmp_path / "absent"): (PredictError, "no such folder"),
        str(tmp_path): (PredictError, "not a trial folder"),
        f"runs:/{'0' * 32}": (PredictError, "no run"),
        "runs:/xyz": (PredictError, "expected runs:/<run_id>"),
        "models:/nothing/1": (PredictError, "no registered model"),
    }
    for name, (kind, text) in cases.items():
        with pytest.raises(kind, match=text) as err:
            load_model(name, trial["uri"])
        assert "\n" not in str(err.value)
    with pytest.raises(TrackingStoreError, match="does not exist"):
        load_model(f"runs:/{trial['run_id']}", f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(PredictError, match="--tracking-uri"):
        load_model(trial["run_id"], None)
    with pytest.raises(PredictError, match="--steps 0"):
        resolve_settings(model, steps=0)
    with pytest.raises(PredictError, match="--samples 0"):
        resolve_settings(model, samples=0)
    assert resolve_settings(model, samples=3, batch=8).batch == 3
    with pytest.raises(PredictError, match="no .nii"):
        predict_volumes(model, tmp_path, tmp_path / "out", progress=False)


def test_a_best_validation_checkpoint_gives_the_best_parameters(trial, model, tmp_path):
    """`eval.checkpoint: best_val` tests the parameters of the best validation step, saved
    beside the last state; predict loads those (here: the last ones halved, as step 10)."""
    folder = tmp_path / "trial"
    shutil.copytree(trial["workdir"], folder)
    checkpoint = sorted((folder / "checkpoints").glob("step_*"))[-1]
    best = jax.tree_util.tree_map(lambda x: np.asarray(x) * 0.5, model.params)
    np.savez(checkpoint / record.BEST_PARAMS,
             **{f"leaf_{i}": leaf for i, leaf in enumerate(jax.tree_util.tree_leaves(best))})
    meta = json.loads((checkpoint / record.TRIAL_JSON).read_text())
    assert meta["step"] == 20
    (checkpoint / record.TRIAL_JSON).write_text(json.dumps({**meta, "best_step": 10}))
    assert params_digest(load_model(folder).params) == params_digest(best)
    assert params_digest(load_model(trial["workdir"]).params) == params_digest(model.params)
