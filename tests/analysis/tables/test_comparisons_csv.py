"""comparisons.csv: one row per comparison, every number equal to scipy / statsmodels called
independently on per-case means computed here from the tidy rows; one seed leaves p_mixed
empty and says why; the report writes the CSV, the verdicts, the footnotes and the figures."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from diffseg3d.analysis.collect import Collection
from diffseg3d.analysis.comparisons import TABLES, TABLES_BY_ID
from diffseg3d.analysis.report import write_report
from diffseg3d.analysis.table_data import compute_table
from diffseg3d.analysis.tables.comparisons_csv import columns, comparisons_frame
from diffseg3d.analysis.tables.latex import MINIMAL_DOCUMENT
from diffseg3d.analysis.tables.main_table import footnote, main_table_latex
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from ..synthetic_runs import synthetic_frame

REQUIRED = ("table", "data_set", "a", "b", "n_cases", "n_seeds", "mean_a", "mean_b",
            "mean_diff", "sd_diff", "ci99_low", "ci99_high", "p_ttest", "p_holm", "p_wilcoxon",
            "p_mixed", "mde80")


def _frame(seeds=(0, 1)):
    return synthetic_frame(data_sets=("prostate-mr", "amos-ct"), n_cases=10, seeds=seeds,
                           settings=("default", "no-recycling", "unet"), noise=0.03)


def _seed_case(frame, data_set, recycling):
    """(seed, case) -> class mean, computed here without the analysis code."""
    rows = frame[(frame["data_set"] == data_set) & (frame["method"] == "diffusion")
                 & (frame["recycling"] == recycling)]
    return rows.groupby(["seed", "case"])["dice"].mean()


def test_every_number_equals_scipy_and_statsmodels_called_directly():
    frame = _frame()
    data = compute_table(frame, TABLES_BY_ID["table1_recycling"])
    table = comparisons_frame([data])
    assert set(REQUIRED) <= set(table.columns) and list(table.columns) == list(columns())
    assert len(table) == 2  # Y vs N on two data sets
    raw_t, raw_w = [], []
    for row in table.itertuples():
        ref, new = _seed_case(frame, row.data_set, False), _seed_case(frame, row.data_set, True)
        a = ref.groupby(level="case").mean().to_numpy()
        b = new.groupby(level="case").mean().to_numpy()
        d = b - a
        assert (row.table, row.a, row.b, row.n_cases, row.n_seeds) == (
            "table1_recycling", "N", "Y", 10, 2)
        assert (row.mean_a, row.mean_b, row.mean_diff) == pytest.approx(
            (a.mean(), b.mean(), d.mean()), rel=1e-12)
        assert row.sd_diff == pytest.approx(d.std(ddof=1), rel=1e-12)
        t, w = stats.ttest_rel(b, a), stats.wilcoxon(b, a)
        raw_t.append(t.pvalue)
        raw_w.append(w.pvalue)
        assert row.p_ttest == pytest.approx(t.pvalue, rel=1e-10)
        assert row.p_wilcoxon == pytest.approx(w.pvalue, rel=1e-10)
        boot = stats.bootstrap((d,), np.mean, method="BCa", confidence_level=0.99,
                               n_resamples=9999, rng=np.random.default_rng(0))
        # Resampling the differences draws the same case indices as resampling the pairs.
        assert (row.ci99_low, row.ci99_high) == pytest.approx(
            (boot.confidence_interval.low, boot.confidence_interval.high), rel=1e-9)
        effect = TTestPower().solve_power(effect_size=None, nobs=10, alpha=0.01, power=0.8,
                                          alternative="two-sided")
        assert row.mde80 == pytest.approx(effect * d.std(ddof=1), rel=1e-4)
        long = pd.concat([ref.rename("y").reset_index().assign(b=0.0, side="N"),
                          new.rename("y").reset_index().assign(b=1.0, side="Y")],
                         ignore_index=True)
        long["run"] = long["side"] + long["seed"].astype(str)
        fit = smf.mixedlm("y ~ b", long.assign(g=1), groups="g", re_formula="0",
                          vc_formula={"c": "0 + C(case)", "r": "0 + C(run)"}).fit(
                              reml=True, method=["lbfgs", "powell"])
        assert row.mixed_diff == pytest.approx(fit.fe_params["b"], abs=1e-8)
        assert row.p_mixed == pytest.approx(fit.pvalues["b"], rel=1e-3)
        assert row.mixed_note == ""
    np.testing.assert_allclose(table["p_holm"], multipletests(raw_t, method="holm")[1])
    np.testing.assert_allclose(table["p_wilcoxon_holm"], multipletests(raw_w, method="holm")[1])


def test_one_seed_leaves_p_mixed_empty_and_says_why(tmp_path):
    data = compute_table(_frame(seeds=(0,)), TABLES_BY_ID["table1_recycling"])
    path = tmp_path / "comparisons.csv"
    comparisons_frame([data]).to_csv(path, index=False, na_rep="")
    raw = pd.read_csv(path, keep_default_na=False)
    assert (raw["p_mixed"] == "").all() and (raw["mixed_diff"] == "").all()
    assert raw["mixed_note"].str.contains("one seed per setting").all()
    assert (raw["n_seeds"] == 1).all() and (raw["ci99_low"] != "").all()


def test_footnote_gives_each_comparisons_interval_and_mde80():
    data = compute_table(_frame(), TABLES_BY_ID["table1_recycling"])
    note = footnote(data)
    for comp in data.comparisons:
        assert (f"{comp.interval.low:+.3f}, {comp.interval.high:+.3f}]" in note
                and f"mde80 {comp.mde80:.3f}" in note)
    assert "Prostate MR, Y vs N" in note and "Abdominal CT, Y vs N" in note
    assert "99\\% interval" in note and "mixed model (2 seeds)" in note
    latex = main_table_latex(data)
    assert latex.index("\\end{tabular}") < latex.index(note) < latex.index("\\end{table}")
    assert footnote(compute_table(_frame().iloc[:0], TABLES_BY_ID["table1_recycling"])) == ""


def _collection(frame):
    runs = frame.drop_duplicates("run_id").assign(
        status="FINISHED", problem=None, n_rows=0, data_root=None, start_time=0,
        test_checkpoint=None, samplers=None)
    return Collection(frame=frame, runs=runs, source="synthetic")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed "
                    "(make tex installs texlive-latex-recommended)")
@pytest.mark.slow
def test_report_writes_csv_verdicts_figures_and_compiling_footnotes(tmp_path):
    frame = synthetic_frame(data_sets=("prostate-mr",), n_cases=8, seeds=(0,))
    report = write_report(_collection(frame), tmp_path, n_resamples=99)
    table = pd.read_csv(tmp_path / "comparisons.csv")
    expected = sum(len(compute_table(frame, spec).comparisons) for spec in TABLES)
    assert len(table) == expected == 5  # Tables 1, 2, 3a-c on one data set (4: no variants)
    summary = (tmp_path / "summary.md").read_text()
    verdicts = [line for line in summary.splitlines() if line.startswith("- Prostate MR, ")]
    assert len(verdicts) == 5
    for line, verdict in zip(verdicts, table["verdict"], strict=True):
        assert line.split("cases): ", 1)[1].startswith(verdict.split(",")[0])
        assert "mixed model: none (one seed per setting" in line
    for spec in TABLES:
        assert tmp_path / "figures" / f"paired_differences_{spec.table_id}.png" in report.written
        tex = (tmp_path / f"{spec.table_id}.tex").read_text()
        assert "mde80" in tex
        (tmp_path / f"doc_{spec.table_id}.tex").write_text(MINIMAL_DOCUMENT % spec.table_id)
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                               f"doc_{spec.table_id}.tex"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:]
    assert any("paired differences table4_sampling_variance" in s for s in report.skipped)


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
def test_time_input_rows_take_the_holm_over_both_time_inputs(tmp_path):
    from .test_time_input_table import time_input_frame

    frame = time_input_frame(n_cases=6)
    write_report(_collection(frame), tmp_path, n_resamples=99)
    table = pd.read_csv(tmp_path / "comparisons.csv").set_index("table")
    rows = table.loc[["table3c_time_input_index", "table3c_time_input_fraction"]]
    assert list(rows["a"].astype(str)) == ["1000", "1000"]
    assert list(rows["b"].astype(str)) == ["5", "5"]
    np.testing.assert_allclose(rows["p_holm"], multipletests(rows["p_ttest"], method="holm")[1])
