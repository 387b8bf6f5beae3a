"""The samples-and-uncertainty and cost analysis on synthetic runs with known values: summary
means equal to per-case means computed here, paired comparisons equal to scipy's, the cost
table's arithmetic, "not logged" for runs without the artifacts; and (slow) the report's
tables compiling with pdflatex and its figures."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from diffseg3d.analysis.collect import Collection
from diffseg3d.analysis.comparisons import TABLES, add_setting_column
from diffseg3d.analysis.report import write_report
from diffseg3d.analysis.samples_uncertainty import (
    not_logged,
    uncertainty_comparisons,
    uncertainty_summary,
)
from diffseg3d.analysis.table_data import compute_table
from diffseg3d.analysis.tables.latex import MINIMAL_DOCUMENT
from diffseg3d.analysis.trial_cost import cost_summary, dice_by_inference_cost
from diffseg3d.analysis.uncertainty_runs import RUN_KEYS, UncertaintyRuns
from diffseg3d.experiments.tracking.record import RELIABILITY_COLUMNS, UNCERTAINTY_COLUMNS
from scipy import stats

from .synthetic_runs import synthetic_frame

SETTINGS = ("default", "no-recycling", "unet")


def _uncertainty(frame, with_runs=("default", "no-recycling", "unet")):
    """Per (run, case, class) rows: GED lower for the default model; the U-Net has no samples."""
    rng = np.random.default_rng(1)
    rows = frame[frame["trial"].str.rsplit("-s", n=1).str[0].isin(with_runs)].copy()
    unet = rows["method"] == "unet"
    rows["samples"] = np.where(unet, 0, 4)
    rows["dice_ensemble"] = rows["dice"]
    offset = np.where(rows["recycling"], 0.0, 0.05)
    for name in ("sample_dice_mean", "sample_dice_std", "diversity", "ged"):
        rows[name] = np.where(unet, np.nan, 0.2 + offset + rng.normal(0, 0.02, len(rows)))
    case_ece = rows.groupby(["run_id", "case"])["dice"].transform("mean") * 0.1
    rows["ece"] = case_ece  # one value per case, repeated on its class rows
    rows["ece_all"] = case_ece / 2
    rows["auroc_entropy"] = 0.8 - case_ece
    rows["ap_entropy"] = 0.5 - case_ece
    rows["auroc_disagreement"] = np.where(unet, np.nan, 0.7)
    rows["ap_disagreement"] = np.where(unet, np.nan, 0.4)
    rows["region_voxels"], rows["error_voxels"] = 100.0, 10.0
    return rows.loc[:, list(RUN_KEYS) + [c for c in UNCERTAINTY_COLUMNS if c not in RUN_KEYS]]


def _runs(frame):
    return add_setting_column(frame.drop_duplicates("run_id").assign(
        status="FINISHED", problem=None, n_rows=0, data_root=None, start_time=0,
        test_checkpoint=None, samplers=None, device_kind="cpu"))


def _cost_metrics(runs):
    rows = []
    for r in runs.itertuples():
        passes, n = (1, 1) if r.method == "unet" else (5, 4)
        values = {"cost_train_step_flops": 2e9, "cost_train_flops": 2e9 * 600,
                  "cost_forward_flops": 1e8, "cost_forward_passes": passes,
                  "cost_inference_flops_1": passes * 1e8, "cost_inference_samples": n,
                  "cost_inference_flops_ensemble": n * passes * 1e8,
                  "cost_inference_seconds_1": 0.01 * passes,
                  "cost_inference_seconds_ensemble": 0.01 * passes * n,
                  "cost_train_seconds": 100.0, "cost_eval_seconds": 5.0, "test_dice": 0.7}
        if r.method != "unet":
            values.update({"test_dice_ensemble": 0.75, "test_dice_ensemble_n1": 0.7,
                           "test_dice_ensemble_n2": 0.73, "test_dice_ensemble_n4": 0.75})
        rows += [(r.run_id, k, float(v)) for k, v in values.items()]
    return pd.DataFrame(rows, columns=["run_id", "metric", "value"])


@pytest.fixture(scope="module")
def frame():
    return synthetic_frame(data_sets=("prostate-mr",), n_cases=6, settings=SETTINGS)


def test_summary_means_are_case_means_and_unet_has_no_sample_metrics(frame):
    u = _uncertainty(frame)
    summary = uncertainty_summary(u).set_index("setting")
    default = u[u["trial"] == "default-s0"]
    want = default.groupby("case")["ged"].mean()
    assert summary.loc["Diffusion (mask, recycling, 5 steps)", "ged_mean"] == pytest.approx(
        want.mean())
    assert summary.loc["Diffusion (mask, recycling, 5 steps)", "ged_std"] == pytest.approx(
        want.std(ddof=1))
    assert np.isnan(summary.loc["U-Net", "ged_mean"])
    assert summary.loc["U-Net", "ece_mean"] == pytest.approx(
        u[u["method"] == "unet"].groupby("case")["ece"].first().mean())
    assert summary.loc["U-Net", "samples"] == 0


@pytest.mark.slow  # 8 BCa bootstraps of 9,999 resamples: 1.6 s
def test_comparisons_equal_scipy_and_skip_metrics_one_side_lacks(frame):
    u = _uncertainty(frame)
    table = uncertainty_comparisons(u).set_index("table")
    # Table 1: no recycling (a) vs recycling (b), every compared metric; Table 2: U-Net vs
    # diffusion, only the metrics the U-Net has (no GED, no diversity).
    assert {"table1_recycling/ged", "table1_recycling/ece"} <= set(table.index)
    assert "table2_diffusion_vs_unet/ged" not in table.index
    assert "table2_diffusion_vs_unet/ece" in table.index
    a = u[u["trial"] == "no-recycling-s0"].groupby("case")["ged"].mean()
    b = u[u["trial"] == "default-s0"].groupby("case")["ged"].mean()
    row = table.loc["table1_recycling/ged"]
    assert row["p_ttest"] == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert row["mean_diff"] == pytest.approx((b - a).mean()) and row["mean_diff"] < 0


def test_not_logged_and_empty_inputs(frame):
    u = _uncertainty(frame, with_runs=("default",))
    runs = _runs(frame)
    assert not_logged(runs, u) == ["prostate-mr: Diffusion (mask, no recycling, 5 steps)",
                                   "prostate-mr: U-Net"]
    assert uncertainty_summary(UncertaintyRuns().frame).empty
    assert uncertainty_comparisons(UncertaintyRuns().frame).empty
    assert cost_summary(pd.DataFrame(columns=["run_id", "metric", "value"]), runs).empty


def test_cost_table_arithmetic_and_dice_against_cost(frame):
    runs = _runs(frame)
    cost = cost_summary(_cost_metrics(runs), runs).set_index("setting")
    d = cost.loc["Diffusion (mask, recycling, 5 steps)"]
    assert d["train_tflop"] == pytest.approx(1.2) and d["steps"] == pytest.approx(600)
    assert d["inference_gflop_1"] == pytest.approx(0.5)
    assert d["inference_gflop_ensemble"] == pytest.approx(2.0)
    assert cost.loc["U-Net", "inference_gflop_ensemble"] == pytest.approx(0.1)
    assert cost.loc["U-Net", "dice_ensemble"] == pytest.approx(0.7)  # its one prediction
    points = dice_by_inference_cost(_cost_metrics(runs), runs)
    default = points[points["setting"] == "Diffusion (mask, recycling, 5 steps)"]
    assert default["samples"].tolist() == [1, 2, 4]
    np.testing.assert_allclose(default["inference_gflop"], [0.5, 1.0, 2.0])
    assert points[points["setting"] == "U-Net"]["samples"].tolist() == [1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed "
                    "(make tex installs texlive-latex-recommended)")
def test_report_writes_tables_that_compile_figures_and_comparisons(frame, tmp_path):
    runs = _runs(frame)
    u = _uncertainty(frame)
    bins = pd.DataFrame([(r, b, b / 15, (b + 1) / 15, 10, (b + 0.5) / 15, (b + 0.3) / 15)
                         for r in runs["run_id"] for b in range(15)],
                        columns=["run_id", *RELIABILITY_COLUMNS])
    piece = {"image": np.random.default_rng(0).random((8, 8)).astype(np.float32),
             "label": np.eye(8, dtype=np.int16), "pred": np.eye(8, dtype=np.int16)[::-1],
             "entropy": np.full((8, 8), 0.3, np.float32)}
    collection = Collection(
        frame=frame, runs=runs.drop(columns="setting"), source="synthetic",
        run_metrics=_cost_metrics(runs),
        uncertainty=UncertaintyRuns(frame=u, reliability=bins,
                                    slices={r: piece for r in runs["run_id"]}))
    report = write_report(collection, tmp_path, n_resamples=99)
    for stem in ("reliability_diagrams", "dice_vs_inference_cost", "uncertainty_vs_error"):
        assert tmp_path / "figures" / f"{stem}.png" in report.written
    summary = (tmp_path / "summary.md").read_text()
    assert "## Samples and uncertainty" in summary and "## Compute cost" in summary
    assert "table1_recycling/ged" in summary
    table = pd.read_csv(tmp_path / "comparisons.csv")
    paper = sum(len(compute_table(frame, spec).comparisons) for spec in TABLES)
    assert paper == 2  # Tables 1 and 2: the other tables' settings are not in this frame
    assert len(table) == paper + len(uncertainty_comparisons(u))  # the paper's, then these
    assert table["table"].iloc[paper:].str.contains("/").all()
    for name in ("samples_uncertainty", "cost"):
        (tmp_path / f"doc_{name}.tex").write_text(MINIMAL_DOCUMENT % name)
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                               f"doc_{name}.tex"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:]
