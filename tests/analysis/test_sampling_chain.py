"""Dice per sampling step and ensembles: the numbers per setting, the figure, the LaTeX tables,
and `diffseg3d tables` writing them (with the NSD supplement) from synthetic runs."""

import json

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from diffseg3d.analysis.comparisons import add_setting_column
from diffseg3d.analysis.figures.curves import dice_by_sampling_step
from diffseg3d.analysis.figures.saving import DPI
from diffseg3d.analysis.sampling_chain import ensemble_dice, step_dice
from diffseg3d.analysis.tables.sampling import ensemble_latex, sampling_steps_latex
from diffseg3d.cli.main import main

from .synthetic_runs import SETTINGS, synthetic_frame

K = 5


def _step_value(name, seed, k):
    """Synthetic step Dice: rising to the setting's level, recycling rising faster."""
    level = 0.8 + SETTINGS[name][2]
    rate = 0.3 if SETTINGS[name][0]["recycling"] else 0.1
    return level - (K - k) * rate / K + 0.01 * seed


def _run_metrics(frame, samples=4):
    rows = []
    for run_id, run in frame.groupby("run_id"):
        name = run_id.split("-", 2)[2].rsplit("-s", 1)[0]
        seed = int(run["seed"].iloc[0])
        if SETTINGS[name][0]["method"] != "diffusion":
            continue  # a U-Net has no sampling chain
        rows += [(run_id, f"test_dice_step_{k}", _step_value(name, seed, k))
                 for k in range(1, K + 1)]
        rows.append((run_id, "test_dice", _step_value(name, seed, K)))
        if name == "default":
            rows += [(run_id, "test_dice_ensemble", _step_value(name, seed, K) + 0.02),
                     (run_id, "test_ensemble_samples", float(samples)),
                     (run_id, "test_uncertainty_dice_spearman", -0.5 - 0.1 * seed)]
    return pd.DataFrame(rows, columns=["run_id", "metric", "value"])


@pytest.fixture(scope="module")
def synthetic():
    frame = synthetic_frame(data_sets=("prostate-mr", "amos-ct"), n_cases=6, seeds=(0, 1))
    runs = add_setting_column(frame.drop_duplicates("run_id").assign(**{"class": None}))
    return frame, runs[["run_id", "data_set", "setting"]], _run_metrics(frame)


def test_step_dice_means_over_seeds(synthetic):
    _, runs, metrics = synthetic
    steps = step_dice(metrics, runs)
    # 5 diffusion settings x 2 data sets x K steps; prostate first (paper order).
    assert len(steps) == 5 * 2 * K and steps["data_set"].iloc[0] == "prostate-mr"
    row = steps[(steps["data_set"] == "amos-ct") & (steps["step"] == 2)
                & (steps["setting"].str.contains("no recycling"))].iloc[0]
    by_hand = [_step_value("no-recycling", s, 2) for s in (0, 1)]
    assert row["mean"] == pytest.approx(np.mean(by_hand))
    assert row["std"] == pytest.approx(np.std(by_hand, ddof=1)) and row["n_runs"] == 2


def test_ensemble_dice_side_by_side(synthetic):
    _, runs, metrics = synthetic
    table = ensemble_dice(metrics, runs)
    assert len(table) == 2 and set(table["samples"]) == {4}  # the default setting, 2 data sets
    row = table.iloc[0]
    assert row["dice_single"] == pytest.approx(np.mean([_step_value("default", s, K)
                                                        for s in (0, 1)]))
    assert row["dice_ensemble"] == pytest.approx(row["dice_single"] + 0.02)
    assert row["spearman_r"] == pytest.approx(-0.55) and row["n_runs"] == 2
    latex = ensemble_latex(table)
    assert "Dice (1 sample) & Dice (N samples)" in latex and "-0.550" in latex
    assert ensemble_dice(metrics[~metrics["metric"].str.contains("ensemble")], runs).empty


def test_figure_and_latex_table(synthetic, tmp_path):
    _, runs, metrics = synthetic
    steps = step_dice(metrics, runs)
    paths = dice_by_sampling_step(steps, tmp_path / "steps")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    height, width = mpimg.imread(paths[0]).shape[:2]
    assert (width, height) == (int(11.0 * DPI), int(4.5 * DPI))
    latex = sampling_steps_latex(steps)
    first = steps[(steps["data_set"] == "prostate-mr")].iloc[0]
    assert f"{first['mean']:.3f}" in latex
    assert latex.count("\\\\\n") == 2 * 5 + 1  # header row + one per (data set, setting)
    assert "mean over up to 2 seeds" in latex


def _write_csv_runs(folder, frame, metrics):
    """The synthetic runs as a `--csv-dir` folder: per-case CSV + sidecar with params and
    metrics; the default setting scored NSD at 3 mm, the others keep their 2 mm."""
    folder.mkdir()
    for run_id, rows in frame.groupby("run_id"):
        first = rows.iloc[0]
        params = {"data.name": first["data_set"], "method": first["method"],
                  "diffusion.output": first["output"], "diffusion.recycling": first["recycling"],
                  "loss.dice": first["dice_loss"], "diffusion.train_steps": first["train_steps"],
                  "seed": int(first["seed"])}
        if "-default-" in run_id:
            params["eval.nsd_tolerance_mm"] = 3.0
        own = metrics[metrics["run_id"] == run_id]
        (folder / f"{run_id}.json").write_text(json.dumps({
            "trial": run_id, "tables": first["tables"].split(","),
            "params": {k: v.item() if hasattr(v, "item") else v for k, v in params.items()},
            "metrics": dict(zip(own["metric"], own["value"], strict=True))}))
        columns = ["case", "class", "dice", "hd95", "roi_voxels", "roi_mm3", "nsd"]
        rows.loc[:, columns].to_csv(folder / f"{run_id}.csv", index=False)


@pytest.mark.slow
def test_tables_command_writes_sampling_outputs_and_nsd_supplement(synthetic, tmp_path, capsys):
    frame, _, metrics = synthetic
    _write_csv_runs(tmp_path / "runs", frame, metrics)
    out = tmp_path / "results"
    assert main(["tables", "--csv-dir", str(tmp_path / "runs"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert (out / "figures" / "dice_per_sampling_step.png").is_file()
    assert (out / "figures" / "dice_per_sampling_step.pdf").is_file()
    assert "tab:dice-per-sampling-step" in (out / "sampling_steps.tex").read_text()
    assert "tab:ensemble" in (out / "ensemble.tex").read_text()
    nsd = (out / "supplement_nsd_prostate-mr.tex").read_text()
    assert "NSD: normalised surface Dice at a tolerance of 2 / 3 mm" in nsd
    summary = (out / "summary.md").read_text()
    assert "## Diffusion sampling: Dice per step and ensembles" in summary
    assert "| Dice (1 sample) | Dice (N samples) |" in summary
    assert "### Per-class NSD: Prostate MR" in summary
    tidy = pd.read_csv(out / "tidy.csv")
    assert tidy["nsd"].notna().all() and set(tidy["nsd_tolerance_mm"]) == {2.0, 3.0}
    assert len(pd.read_csv(out / "run_metrics.csv")) == len(metrics)


@pytest.mark.slow
def test_runs_without_step_metrics_or_nsd_skip_those_outputs(synthetic, tmp_path, capsys):
    frame, _, metrics = synthetic
    _write_csv_runs(tmp_path / "runs", frame.assign(nsd=np.nan), metrics.iloc[:0])
    for csv_path in (tmp_path / "runs").glob("*.csv"):  # CSVs written before NSD existed
        pd.read_csv(csv_path).drop(columns="nsd").to_csv(csv_path, index=False)
    out = tmp_path / "results"
    assert main(["tables", "--csv-dir", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert "skipped Dice per sampling step" in capsys.readouterr().err
    assert not (out / "sampling_steps.tex").exists() and not (out / "ensemble.tex").exists()
    assert not list(out.glob("supplement_nsd_*")) and (out / "supplement_dice_amos-ct.tex").exists()
