"""A trial's per-case uncertainty rows: the core metrics on the ensemble, per-case values on
every class row, NaN sample-set columns without samples (the U-Net), and the written files."""

import math

import numpy as np
import pandas as pd
import pytest
from diffseg3d.core.metrics.calibration import expected_calibration_error, reliability_bins
from diffseg3d.core.metrics.error_detection import evaluation_region
from diffseg3d.core.metrics.sample_set import sample_set_metrics
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.trial.uncertainty import UncertaintyScores, write_scores

NAMES = ["a", "b"]  # classes 1, 2; class 2 is in no sample and not in the label
LABEL = np.array([[0, 1, 1, 0, 0, 0]])  # (1, 6)
SAMPLES = np.array([[[0, 1, 1, 0, 0, 0]], [[0, 1, 0, 0, 0, 0]]])  # (2, 1, 6)


def _probs(samples):
    onehot = np.eye(3)[samples]  # (N, 1, 6, 3)
    return onehot.mean(axis=0)


def test_ensemble_case_rows_use_the_core_metrics():
    scores = UncertaintyScores()
    probs = _probs(SAMPLES)
    entropy = -(probs * np.log(np.where(probs > 0, probs, 1))).sum(-1)
    scores.add("c0", NAMES, probs, LABEL, entropy, entropy / np.log(2), SAMPLES,
               image=np.ones((1, 6)))
    rows = pd.DataFrame(scores.rows, columns=list(record.UNCERTAINTY_COLUMNS))
    want = sample_set_metrics(SAMPLES, LABEL, 3)
    np.testing.assert_allclose(rows["ged"], want["ged"])
    np.testing.assert_allclose(rows["diversity"], want["diversity"])
    region = evaluation_region(probs.argmax(-1), LABEL)
    ece = expected_calibration_error(reliability_bins(probs, LABEL, region))
    assert (rows["ece"] == ece).all()  # per case, on every class row
    assert rows["auroc_entropy"].iloc[0] == 1.0  # the one error voxel is the uncertain one
    assert math.isnan(rows["dice_ensemble"].iloc[1])  # class b empty everywhere
    summary = scores.summary()
    assert summary["test_ged"] == pytest.approx(np.nanmean(want["ged"]))
    assert summary["test_ece_pooled"] == pytest.approx(ece)


def test_without_samples_the_sample_set_is_nan_and_files_are_written(tmp_path):
    scores = UncertaintyScores()
    probs = _probs(SAMPLES[:1]) * 0.8 + 0.2 / 3
    scores.add("c0", NAMES, probs, LABEL, np.zeros((1, 6)), image=np.ones((1, 6, 1)))
    rows = pd.DataFrame(scores.rows)
    assert rows[["ged", "diversity", "sample_dice_std", "auroc_disagreement"]].isna().all().all()
    assert math.isnan(scores.summary()["test_ged"])
    paths = write_scores(scores, tmp_path)
    assert [p.name for p in paths] == [record.ARTIFACT_UNCERTAINTY, record.ARTIFACT_RELIABILITY,
                                       record.ARTIFACT_UNCERTAINTY_SLICE]
    bins = pd.read_csv(paths[1])
    assert tuple(bins.columns) == record.RELIABILITY_COLUMNS and len(bins) == 15
    assert bins["count"].sum() == rows["region_voxels"].iloc[0]
    assert np.load(paths[2])["entropy"].shape == (1,)  # one slice of a (1, 6) case: (H,) here
