"""Table 3c by time input (beyond the paper): 1000 vs 5 training steps under the index and the
fraction time input, statistics against scipy/statsmodels, the summary row's verdict, and a
LaTeX table that compiles."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from diffseg3d.analysis.tables.latex import MINIMAL_DOCUMENT
from diffseg3d.analysis.tables.time_input import (
    HOLDS,
    NOT_SHOWN,
    TABLE_ID,
    compute_time_input_table,
    summary_section,
    time_input_latex,
    write_time_input_table,
)
from scipy import stats
from statsmodels.stats.multitest import multipletests

from ..synthetic_runs import synthetic_frame

# (time input, training steps) -> Dice offset: under index the 5-step model is clearly better;
# under fraction the two are equal up to noise.
OFFSETS = {("index", 1000): -0.10, ("index", 5): 0.0, ("fraction", 1000): 0.0,
           ("fraction", 5): 0.0}


def time_input_frame(n_cases=12):
    base = synthetic_frame(n_cases=n_cases, settings=("default",))
    rng = np.random.default_rng(9)
    frames = []
    for (time_input, steps), offset in OFFSETS.items():
        dice = np.clip(base["dice"] + offset + rng.normal(0, 0.01, len(base)), 0, 1)
        frames.append(base.assign(
            dice=dice, hd95=20 * (1 - dice), train_steps=steps,
            run_id=f"{time_input}-{steps}", trial=f"{time_input}-{steps}",
            tables=f"3c-{time_input}"))
    return pd.concat(frames, ignore_index=True)


def _case_means(frame, run_id):
    rows = frame[frame["run_id"] == run_id]
    return rows.groupby("case")["dice"].mean().sort_index().to_numpy()


def test_statistics_match_scipy_and_holm_is_over_both_time_inputs():
    frame = time_input_frame()
    result = compute_time_input_table(frame, 0.01)
    raw = [stats.ttest_rel(_case_means(frame, f"{t}-1000"), _case_means(frame, f"{t}-5")).pvalue
           for t in ("index", "fraction")]
    adjusted = multipletests(raw, method="holm")[1]
    for t, p, p_holm in zip(("index", "fraction"), raw, adjusted, strict=True):
        comp = result.comparison(t, "prostate-mr")
        assert comp.test.t_pvalue == pytest.approx(p, rel=1e-9)
        assert result.holm[(t, "prostate-mr")] == pytest.approx(p_holm, rel=1e-9)
    index = result.comparison("index", "prostate-mr")
    assert index.test.mean_diff == pytest.approx(
        (_case_means(frame, "index-5") - _case_means(frame, "index-1000")).mean())


def test_summary_row_says_where_the_effect_holds():
    result = compute_time_input_table(time_input_frame(), 0.01)
    section = summary_section(result)
    rows = {line.split("|")[1].strip(): line for line in section.splitlines()
            if line.startswith("| index") or line.startswith("| fraction")}
    assert rows["index"].rstrip(" |").endswith(HOLDS)
    assert rows["fraction"].rstrip(" |").endswith(NOT_SHOWN)
    assert f"## {TABLE_ID}" in section


def test_nothing_is_written_without_tagged_runs(tmp_path):
    frame = synthetic_frame(n_cases=4)
    assert write_time_input_table(frame, tmp_path, 0.01) == ([], "")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_table_compiles(tmp_path):
    written, _ = write_time_input_table(time_input_frame(), tmp_path, 0.01)
    assert written == [tmp_path / f"{TABLE_ID}.tex"]
    tex = written[0].read_text()
    assert "fraction" in tex and "index" in tex and "$^{*}$" in tex
    assert time_input_latex(compute_time_input_table(time_input_frame(), 0.01)) == tex
    (tmp_path / "doc.tex").write_text(MINIMAL_DOCUMENT % TABLE_ID)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_the_report_writes_the_table_and_its_summary_row(tmp_path):
    from diffseg3d.analysis.collect import Collection
    from diffseg3d.analysis.report import write_report

    frame = time_input_frame(n_cases=6)
    runs = frame.drop_duplicates("run_id").assign(
        status="FINISHED", problem=None, n_rows=0, data_root=None, start_time=0,
        test_checkpoint="20 (last)", samplers=None)
    report = write_report(Collection(frame=frame, runs=runs, source="synthetic"), tmp_path,
                          n_resamples=99)
    assert tmp_path / f"{TABLE_ID}.tex" in report.written
    summary = (tmp_path / "summary.md").read_text()
    assert f"## {TABLE_ID}" in summary and "| index | Prostate MR |" in summary
