"""The test split sampled once with its trajectory: per-step Dice whose last step is the
prediction, ensembles (N = 1 is the single sample), and a real smoke trial that logs them."""

import math
from pathlib import Path

import jax
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.loader import batch_iterator, eval_batches
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom
from diffseg3d.core.metrics import evaluate, nsd_per_class
from diffseg3d.core.train.state import create_train_state
from diffseg3d.experiments.config.layering import deep_merge, load_profile
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.tracking import mlflow_runs as tracking
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.trial import build
from diffseg3d.experiments.trial.run import run_trial
from diffseg3d.experiments.trial.sampling_eval import batch_sampler, chain_metrics, sample_split
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 6 cases -> 3 train / 1 valid / 2 test (phantom splits); a batch of 4 pads the test split.
    return Path(make_phantom(tmp_path_factory.mktemp("chain") / "phantom",
                             PhantomSpec(cases=6, shape=(16, 16, 8))))


def _config(data, **over):
    raw = deep_merge(load_profile("smoke"), {"data": {"root": str(data)}})
    return validate_config(deep_merge(raw, over))


@pytest.fixture(scope="module")
def model_and_params(data):
    """The smoke U-Net after 3 training steps (enough to move off the initial parameters)."""
    config = _config(data)
    dataset = PreparedDataset.load(data)
    net = build.model(config, dataset.num_classes)
    tx, lr = build.optimizer(config)
    state = create_train_state(net, tx, jax.random.PRNGKey(0), (2, *dataset.shape, 1), True)
    step = jax.jit(build.train_step(config, net, tx, lr, dataset.spacing))
    batches = batch_iterator(dataset, "train", 2, 0)
    for s in range(3):
        state, _ = step(state, next(batches), jax.random.PRNGKey(s))
    batches.close()
    return config, dataset, net, state.params


def test_last_step_is_the_prediction_of_the_plain_sampler(model_and_params):
    config, dataset, net, params = model_and_params
    key = jax.random.PRNGKey(3)
    chain = batch_sampler(build.sampler(config, net, dataset.num_classes))
    sampled = sample_split(chain, params, dataset, "test", 4, key)
    k = config.diffusion.sample_steps
    assert sampled.step_preds.shape == (k, 2, *dataset.shape) and sampled.ensemble is None
    np.testing.assert_array_equal(sampled.step_preds[-1], sampled.preds)
    # The validation/test predictor (no trajectory), batch j keyed fold_in(key, j): same labels.
    predict = build.predictor(config, net, dataset.num_classes)
    for j, batch in enumerate(eval_batches(dataset, "test", 4)):
        plain = np.asarray(predict(params, batch["image"], jax.random.fold_in(key, j)))
        np.testing.assert_array_equal(plain[batch["valid"]], sampled.preds)
    metrics = chain_metrics(sampled, dataset.num_classes)
    assert sorted(metrics) == [f"test_dice_step_{i}" for i in range(1, k + 1)]
    rows = evaluate.evaluate_cases(dataset.case_ids("test"), sampled.preds, sampled.labels,
                                   dataset.class_names, dataset.spacing)
    assert metrics[f"test_dice_step_{k}"] == evaluate.summarise(rows)["mean_case_dice"]
    # The trial validates through the same BatchSampler: another split of the same padded
    # batch shape reuses the one compiled program.
    valid = sample_split(chain, params, dataset, "valid", 4, key)
    assert valid.preds.shape[0] == len(dataset.case_ids("valid"))
    assert chain.run._cache_size() == 1


def test_ensemble_of_one_is_the_sample_and_more_samples_are_reproducible(model_and_params):
    config, dataset, net, params = model_and_params
    sample = build.sampler(config, net, dataset.num_classes)
    key = jax.random.PRNGKey(5)
    single = sample_split(batch_sampler(sample, samples=1), params, dataset, "test", 2, key)
    np.testing.assert_array_equal(single.ensemble, single.preds)
    three = sample_split(batch_sampler(sample, samples=3), params, dataset, "test", 2, key)
    np.testing.assert_array_equal(three.preds, single.preds)  # sample 0 is the same pass
    np.testing.assert_array_equal(three.step_preds, single.step_preds)
    again = sample_split(batch_sampler(sample, samples=3), params, dataset, "test", 2, key)
    np.testing.assert_array_equal(three.ensemble, again.ensemble)
    assert three.entropy.shape == (2,) and np.all(three.entropy >= 0)
    assert np.all(three.entropy <= np.log(dataset.num_classes) + 1e-6)
    assert np.all(three.entropy > single.entropy)  # three untrained samples disagree somewhere
    metrics = chain_metrics(three, dataset.num_classes)
    assert metrics["test_ensemble_samples"] == 3.0
    assert metrics["test_dice_ensemble"] == evaluate.mean_case_dice(
        three.ensemble, three.labels, dataset.num_classes)
    assert math.isnan(metrics["test_uncertainty_dice_spearman"])  # 2 cases: no correlation


def test_trial_logs_step_dice_ensemble_and_nsd(data, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.ensure_experiment("chain", tracking.default_artifact_location(tmp_path, uri),
                               tracking_uri=uri)
    config = _config(data, name="chain", eval={"samples": 2, "nsd_tolerance_mm": 3.0,
                                                "save_predictions": 2})
    result = run_trial(config, workdir=tmp_path / "trial", tracking_uri=uri, experiment="chain")
    metrics = MlflowClient(uri).get_run(result["run_id"]).data.metrics
    k = config.diffusion.sample_steps
    assert {f"test_dice_step_{i}" for i in range(1, k + 1)} <= set(metrics)
    assert metrics[f"test_dice_step_{k}"] == metrics["test_dice"]  # exactly
    assert 0.0 <= metrics["test_dice_ensemble"] <= 1.0
    assert "test_uncertainty_dice_spearman" in metrics
    # The ensemble's sample-set, calibration and error-detection scores, per case and pooled.
    uncertainty = pd.read_csv(tmp_path / "trial" / record.ARTIFACT_UNCERTAINTY)
    assert tuple(uncertainty.columns) == record.UNCERTAINTY_COLUMNS
    assert len(uncertainty) == 2 * (PreparedDataset.load(data).num_classes - 1)
    assert (uncertainty["samples"] == 2).all()
    assert metrics["test_ged"] == pytest.approx(
        uncertainty.groupby("case")["ged"].mean().mean())
    assert 0.0 <= metrics["test_ece"] <= 1.0 and 0.0 <= metrics["test_diversity"] <= 1.0
    assert metrics["test_dice_ensemble_n2"] == metrics["test_dice_ensemble"]
    assert metrics["test_dice_ensemble_n1"] == metrics["test_dice"]  # sample 0 is the pass
    bins = pd.read_csv(tmp_path / "trial" / record.ARTIFACT_RELIABILITY)
    assert bins["count"].sum() == uncertainty.groupby("case")["region_voxels"].first().sum()
    assert set(np.load(tmp_path / "trial" / record.ARTIFACT_UNCERTAINTY_SLICE)) == {
        "image", "label", "pred", "entropy"}
    # Cost: K forward passes per sample, 2 samples; the step's FLOPs times the steps trained.
    assert set(record.COST_METRICS) <= set(metrics)
    assert metrics["cost_train_flops"] == pytest.approx(
        metrics["cost_train_step_flops"] * config.train.steps)
    assert metrics["cost_train_step_flops"] > 3 * metrics["cost_forward_flops"] > 0
    assert metrics["cost_inference_flops_ensemble"] == pytest.approx(
        2 * k * metrics["cost_forward_flops"])
    assert metrics["cost_inference_seconds_1"] > 0 and metrics["cost_eval_seconds"] > 0
    assert MlflowClient(uri).get_run(result["run_id"]).data.tags[record.TAG_DEVICE_KIND]
    rows = evaluate.read_per_case_csv(result["per_case_csv"])
    summary = evaluate.summarise(rows)
    assert metrics["test_nsd"] == pytest.approx(summary["mean_case_nsd"], abs=1e-12)
    assert metrics["test_n_nan_nsd"] == summary["n_nan_nsd"]
    for name in PreparedDataset.load(data).class_names:
        got, want = metrics[f"test_nsd/{name}"], summary[f"nsd/{name}"]
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)
    # The tolerance reached the rows: NSD at 3 mm of the saved predictions, by nsd_per_class.
    dataset = PreparedDataset.load(data)
    labels = dataset.arrays("test")[1]
    for case_id, label in zip(dataset.case_ids("test"), labels, strict=True):
        pred = np.asarray(nib.load(str(tmp_path / "trial" / "predictions" / f"{case_id}.nii.gz"))
                          .dataobj).astype(np.int64)
        expected = nsd_per_class(pred, label, dataset.num_classes, dataset.spacing, 3.0)
        got = [r["nsd"] for r in rows if r["case"] == case_id]
        np.testing.assert_array_equal(got, expected)
