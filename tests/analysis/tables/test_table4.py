"""Table 4 (sampling variance): the same default model's per-case rows under three sampling
variants, paired per case with the statistics of Tables 1-3 (raw and Holm rows), in the report,
in summary.md, from a CSV folder, and compiled with pdflatex."""

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from diffseg3d.analysis.collect import SAMPLING_COLUMNS, Collection, collect_csv_folder
from diffseg3d.analysis.comparisons import SAMPLING_TABLE
from diffseg3d.analysis.report import write_report
from diffseg3d.analysis.table_data import compute_table
from diffseg3d.analysis.tables.latex import MINIMAL_DOCUMENT
from diffseg3d.analysis.tables.main_table import display_frame, main_table_latex
from scipy import stats
from statsmodels.stats.multitest import multipletests

from ..synthetic_runs import synthetic_frame

# variant -> Dice offset against fixed_large (the default sampler, the reference row).
OFFSETS = {"ddpm_fixed_large": 0.0, "ddpm_fixed_small": 0.04, "ddim": -0.01}


def sampling_frame(data_sets=("prostate-mr", "amos-ct"), n_cases=8):
    """The default model's rows once per variant (Dice + offset + noise), tagged for Table 4."""
    base = synthetic_frame(data_sets=data_sets, n_cases=n_cases, settings=("default",))
    rng = np.random.default_rng(4)
    frames = []
    for variant, offset in OFFSETS.items():
        dice = np.clip(base["dice"] + offset + rng.normal(0, 0.01, len(base)), 0, 1)
        frames.append(base.assign(dice=dice, hd95=20 * (1 - dice), sampling=variant,
                                  tables="1,2,3a,3b,3c,4"))
    return pd.concat(frames, ignore_index=True).loc[:, list(SAMPLING_COLUMNS)]


def _case_means(frame, data_set, variant):
    rows = frame[(frame["data_set"] == data_set) & (frame["sampling"] == variant)]
    return rows.groupby("case")["dice"].mean().sort_index().to_numpy()


def test_three_rows_and_raw_and_holm_p_rows_against_fixed_large():
    frame = sampling_frame()
    data = compute_table(frame, SAMPLING_TABLE)
    text, _ = display_frame(data, pm="±")
    assert list(text.index[:3]) == ["DDPM fixed_large", "DDPM fixed_small", "DDIM"]
    assert "p (t-test), DDPM fixed_small vs DDPM fixed_large" in text.index
    assert "p (t-test, Holm), DDIM vs DDPM fixed_large" in text.index
    # Independent statistics: per-case means, paired t-tests, Holm over the 4 comparisons.
    raw, keys = [], []
    for data_set in ("prostate-mr", "amos-ct"):
        ref = _case_means(frame, data_set, "ddpm_fixed_large")
        for variant, label in (("ddpm_fixed_small", "DDPM fixed_small"), ("ddim", "DDIM")):
            raw.append(stats.ttest_rel(ref, _case_means(frame, data_set, variant)).pvalue)
            keys.append((data_set, label))
    holm = multipletests(raw, method="holm")[1]
    for (data_set, label), p, p_holm in zip(keys, raw, holm, strict=True):
        comp = data.comparison(data_set, label)
        assert comp.test.t_pvalue == pytest.approx(p, rel=1e-9)
        assert comp.t_pvalue_holm == pytest.approx(p_holm, rel=1e-9)
    small = data.cells[("DDPM fixed_small", "prostate-mr", "dice")]
    cases = _case_means(frame, "prostate-mr", "ddpm_fixed_small")
    assert small.mean == pytest.approx(cases.mean()) and small.std == pytest.approx(
        cases.std(ddof=1))
    assert "fixed\\_large" in main_table_latex(data)  # the default, named in the caption
    assert "the default and the released code" in main_table_latex(data)


def _collection(sampling):
    frame = synthetic_frame(data_sets=("prostate-mr",), n_cases=6)
    runs = frame.drop_duplicates("run_id").assign(
        status="FINISHED", problem=None, n_rows=0, data_root=None, start_time=0,
        test_checkpoint="7500 (best_val)", samplers=None)
    return Collection(frame=frame, runs=runs, source="synthetic", sampling=sampling)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed "
                    "(make tex installs texlive-latex-recommended)")
@pytest.mark.slow
def test_report_writes_table4_that_compiles_and_summary_shows_it(tmp_path):
    report = write_report(_collection(sampling_frame(data_sets=("prostate-mr",))), tmp_path,
                          n_resamples=99)
    tex = tmp_path / "table4_sampling_variance.tex"
    assert tex in report.written
    summary = (tmp_path / "summary.md").read_text()
    assert "## table4_sampling_variance" in summary
    assert "| DDPM fixed_small |" in summary and "| DDIM |" in summary
    assert "7500 (best_val)" in summary  # the test-time checkpoint per trial
    # Every table of the report mentions the default sampler.
    for name in ("table1_recycling", "table3a_output", "table4_sampling_variance"):
        assert "fixed\\_large" in (tmp_path / f"{name}.tex").read_text()
    (tmp_path / "doc.tex").write_text(MINIMAL_DOCUMENT % "table4_sampling_variance")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]


@pytest.mark.slow
def test_report_without_variant_rows_still_writes_an_empty_table4(tmp_path):
    empty = pd.DataFrame(columns=list(SAMPLING_COLUMNS))
    write_report(_collection(empty), tmp_path, n_resamples=99)
    assert "No finished runs feed this table." in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "table4_sampling_variance.tex").is_file()


def test_csv_folder_reads_variants_and_checkpoint(tmp_path):
    rows = pd.DataFrame({"case": ["c1", "c1", "c2", "c2"], "class": ["a", "b", "a", "b"],
                         "dice": [0.8, 0.6, 0.5, 0.7], "hd95": [1.0, 2.0, 3.0, 4.0],
                         "roi_voxels": [10, 20, 10, 20], "roi_mm3": [10.0, 20.0, 10.0, 20.0]})
    rows.to_csv(tmp_path / "run1.csv", index=False)
    (tmp_path / "run1.json").write_text(json.dumps({
        "trial": "default-s0", "tables": ["1", "4"], "test_checkpoint": "40 (best_val)",
        "params": {"data.name": "phantom", "method": "diffusion"}}))
    (tmp_path / "run1.sampling").mkdir()
    for variant, shift in (("ddpm_fixed_large", 0.0), ("ddim", -0.1)):
        rows.assign(dice=rows["dice"] + shift).to_csv(
            tmp_path / "run1.sampling" / f"{variant}.csv", index=False)
    collection = collect_csv_folder(tmp_path)
    assert collection.problems == []  # the variant folder is not taken for a run
    assert len(collection.frame) == 4
    run = collection.runs.iloc[0]
    assert run["test_checkpoint"] == "40 (best_val)"
    assert run["samplers"] == "ddim, ddpm_fixed_large"
    sampling = collection.sampling
    assert sorted(sampling["sampling"].unique()) == ["ddim", "ddpm_fixed_large"]
    ddim = sampling[sampling["sampling"] == "ddim"].sort_values(["case", "class"])
    assert ddim["dice"].tolist() == pytest.approx([0.7, 0.5, 0.4, 0.6])
    data = compute_table(sampling, SAMPLING_TABLE)
    assert data.cells[("DDIM", "phantom", "dice")].mean == pytest.approx(np.mean([0.6, 0.5]))
    assert "no finished runs for DDPM fixed_small on phantom" in data.notes
