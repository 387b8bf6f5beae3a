"""From a runs table with known values: exact cells, bold on the best, p-values, pdflatex."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from diffseg3d.analysis.comparisons import TABLES_BY_ID, add_setting_column
from diffseg3d.analysis.stats.spearman import roi_dice_spearman
from diffseg3d.analysis.table_data import compute_table, per_class_stats
from diffseg3d.analysis.tables.latex import MINIMAL_DOCUMENT
from diffseg3d.analysis.tables.main_table import caption, display_frame, main_table_latex
from diffseg3d.analysis.tables.supplements import per_class_latex, spearman_latex
from scipy import stats
from statsmodels.stats.multitest import multipletests

from ..synthetic_runs import synthetic_frame

# Dice per (case, class) for recycling N and Y on one data set; HD95 = 10 * (1 - Dice).
KNOWN = {
    False: {"c1": [0.6, 0.8], "c2": [0.5, 0.7], "c3": [0.7, 0.9]},   # per case 0.7, 0.6, 0.8
    True: {"c1": [0.8, 0.8], "c2": [0.7, 0.8], "c3": [0.9, 1.0]},    # 0.8, 0.75, 0.95
}


def _known_frame(hd95_nan_case=None):
    rows = []
    for recycling, cases in KNOWN.items():
        for case, dices in cases.items():
            for k, dice in enumerate(dices):
                hd95 = np.nan if (case == hd95_nan_case and not recycling and k == 0) else \
                    10 * (1 - dice)
                rows.append(dict(
                    run_id=f"run-{'Y' if recycling else 'N'}", trial="t", data_set="prostate-mr",
                    method="diffusion", output="x0", recycling=recycling, dice_loss=True,
                    train_steps=5, seed=0, case=case, **{"class": f"k{k}"}, dice=dice,
                    hd95=hd95, roi_voxels=100.0, roi_mm3=250.0, tables="1"))
    return pd.DataFrame(rows)


def test_table1_has_exactly_the_expected_cells_bold_and_p():
    data = compute_table(_known_frame(), TABLES_BY_ID["table1_recycling"])
    text, bold = display_frame(data)
    n_case = np.array([0.7, 0.6, 0.8])
    y_case = np.array([0.8, 0.75, 0.95])
    p = stats.ttest_rel(y_case, n_case).pvalue
    p_w = stats.wilcoxon(y_case, n_case).pvalue
    expected = pd.DataFrame(
        [[f"{n_case.mean():.3f} $\\pm$ {n_case.std(ddof=1):.3f}",
          f"{10 * (1 - n_case).mean():.3f} $\\pm$ {10 * n_case.std(ddof=1):.3f}"],
         [f"{y_case.mean():.3f} $\\pm$ {y_case.std(ddof=1):.3f}",
          f"{10 * (1 - y_case).mean():.3f} $\\pm$ {10 * y_case.std(ddof=1):.3f}"],
         # One comparison: the Holm-adjusted p equals the raw one.
         [f"{p:.3f}", ""], [f"{p:.3f}", ""], [f"{p_w:.3f}", ""]],
        index=["N", "Y", "p (t-test)", "p (t-test, Holm)", "p (Wilcoxon, Holm)"],
        columns=pd.MultiIndex.from_tuples([("Prostate MR", "Dice"),
                                           ("Prostate MR", "HD95 (mm)")]))
    assert text.values.tolist() == expected.values.tolist()
    assert text.index.tolist() == expected.index.tolist()
    assert text.values[0, 0] == "0.700 $\\pm$ 0.100"  # hand value
    # Y is better in both Dice (higher) and HD95 (lower); only those cells are bold.
    assert bold.values.tolist() == [[False, False], [True, True], [False, False],
                                    [False, False], [False, False]]
    assert p > 0.01  # three cases cannot reach alpha: no significance mark
    latex = main_table_latex(data)
    assert f"\\textbf{{{y_case.mean():.3f} $\\pm$ {y_case.std(ddof=1):.3f}}}" in latex
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex
    assert "\\multicolumn{2}{c}{Prostate MR}" in latex
    assert "$^{*}$" not in latex.split("\\begin{tabular}")[1]


# A second data set for Table 1 whose raw t-test p is below 0.01 and whose Holm-adjusted p (two
# comparisons) is not: per-case Dice of N and Y on six cases, one class each.
AMOS_N = np.array([0.60, 0.65, 0.70, 0.72, 0.68, 0.66])
AMOS_Y = AMOS_N + np.array([0.05, 0.09, 0.02, 0.06, 0.07, 0.01])


def _two_data_set_frame(names=("prostate-mr", "amos-ct")):
    rows = _known_frame().assign(data_set=names[0]).to_dict("records")
    for recycling, dices in ((False, AMOS_N), (True, AMOS_Y)):
        for i, dice in enumerate(dices):
            rows.append(dict(rows[0], run_id=f"amos-{recycling}", data_set=names[1],
                             recycling=recycling, case=f"a{i}", **{"class": "k0"}, dice=dice,
                             hd95=10 * (1 - dice)))
    return pd.DataFrame(rows)


def test_raw_and_holm_rows_equal_scipy_and_statsmodels_and_the_mark_follows_the_raw_p():
    data = compute_table(_two_data_set_frame(), TABLES_BY_ID["table1_recycling"])
    text, _ = display_frame(data)
    raw = [stats.ttest_rel([0.8, 0.75, 0.95], [0.7, 0.6, 0.8]).pvalue,
           stats.ttest_rel(AMOS_Y, AMOS_N).pvalue]
    holm = multipletests(raw, method="holm")[1]
    wilcoxon = multipletests([stats.wilcoxon([0.8, 0.75, 0.95], [0.7, 0.6, 0.8]).pvalue,
                              stats.wilcoxon(AMOS_Y, AMOS_N).pvalue], method="holm")[1]
    assert raw[1] < 0.01 <= holm[1] and holm[1] != raw[1]  # the rows can disagree
    for i, (data_set, name) in enumerate((("prostate-mr", "Prostate MR"),
                                         ("amos-ct", "Abdominal CT"))):
        comp = data.comparison(data_set, "Y")
        assert comp.test.t_pvalue == pytest.approx(raw[i], rel=1e-12)
        assert comp.t_pvalue_holm == pytest.approx(holm[i], rel=1e-12)
        assert comp.wilcoxon_pvalue_holm == pytest.approx(wilcoxon[i], rel=1e-12)
        mark = "$^{*}$" if raw[i] < 0.01 else ""
        assert text.loc["p (t-test)", (name, "Dice")] == f"{raw[i]:.3f}{mark}"
        assert text.loc["p (t-test, Holm)", (name, "Dice")] == f"{holm[i]:.3f}"
        assert text.loc["p (Wilcoxon, Holm)", (name, "Dice")] == f"{wilcoxon[i]:.3f}"
    amos = data.comparison("amos-ct", "Y")
    assert amos.significant and not amos.significant_holm
    latex = main_table_latex(data)
    assert "p (t-test, Holm)" in latex and "unadjusted as in the paper" in latex


def test_significant_p_gets_mark_and_less_than_format():
    frame = synthetic_frame(n_cases=25, settings=("default", "no-recycling"))
    data = compute_table(frame, TABLES_BY_ID["table1_recycling"])
    text, _ = display_frame(data)
    assert text.loc["p (t-test)", ("Prostate MR", "Dice")] == "$<$0.001$^{*}$"
    assert data.comparisons[0].significant


def test_caption_counts_empty_hd95_and_gives_the_definition():
    data = compute_table(_known_frame(hd95_nan_case="c2"), TABLES_BY_ID["table1_recycling"])
    cap = caption(data)
    assert "1 (case, class) values with an empty" in cap
    assert "MONAI definition" in cap and "95th" in cap
    # The NaN class is skipped: case c2 of N has HD95 = 10 * (1 - 0.7) = 3 from its other class.
    assert data.cells[("N", "prostate-mr", "hd95")].n_cases == 3


def test_missing_data_sets_and_levels_are_said_in_the_caption():
    frame = synthetic_frame(data_sets=("phantom",), settings=("default", "unet"), n_cases=4)
    data = compute_table(frame, TABLES_BY_ID["table1_recycling"])  # no "N" (no-recycling) run
    assert data.data_sets == ("phantom",)
    assert data.comparisons == ()
    cap = caption(data)
    assert "Data sets with runs: Phantom (none for the paper's Prostate MR, Abdominal CT)." in cap
    assert "no finished runs for N on phantom" in cap


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed "
                    "(make tex installs texlive-latex-recommended)")
@pytest.mark.slow
def test_every_table_compiles_alone_with_pdflatex(tmp_path):
    frame = add_setting_column(synthetic_frame(data_sets=("prostate-mr", "amos-ct"), n_cases=6))
    files = {}
    for table_id, spec in TABLES_BY_ID.items():
        files[table_id] = main_table_latex(compute_table(frame, spec))
    frame_under = frame.assign(data_set="my_data&set%")  # LaTeX specials must be escaped
    files["supplement"] = per_class_latex(per_class_stats(frame_under, "hd95"), "my_data&set%",
                                          "hd95")
    files["spearman"] = spearman_latex(roi_dice_spearman(frame))
    files["empty"] = main_table_latex(
        compute_table(frame.iloc[:0], TABLES_BY_ID["table2_diffusion_vs_unet"]))
    files["raw_and_holm"] = main_table_latex(
        compute_table(_two_data_set_frame(), TABLES_BY_ID["table1_recycling"]))
    # Every LaTeX special in data set, class and setting names (\\ ~ ^ & % $ # _ { }).
    nasty = "a\\b~c^d&e%f$g#h_i{j}k ~ ^ \\ end"
    files["specials_main"] = main_table_latex(
        compute_table(_two_data_set_frame((nasty, "x^2_{y}")),
                      TABLES_BY_ID["table1_recycling"]))
    frame_nasty = frame.assign(data_set=nasty, setting=frame["setting"] + " " + nasty,
                               **{"class": frame["class"] + "~^\\" + "&%$#_{}"})
    for metric in ("dice", "hd95"):
        files[f"specials_{metric}"] = per_class_latex(per_class_stats(frame_nasty, metric),
                                                      nasty, metric)
    files["specials_spearman"] = spearman_latex(roi_dice_spearman(frame_nasty))
    for name, tex in files.items():
        (tmp_path / f"{name}.tex").write_text(tex)
        (tmp_path / f"doc_{name}.tex").write_text(MINIMAL_DOCUMENT % name)
        proc = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"doc_{name}.tex"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{name}: {proc.stdout[-2000:]}"
        assert (tmp_path / f"doc_{name}.pdf").stat().st_size > 1000


def test_per_class_supplement_cells_and_empty_count():
    frame = add_setting_column(_known_frame(hd95_nan_case="c2"))
    stats_hd = per_class_stats(frame, "hd95")
    # Class k0 of N: HD95 10 * (1 - [0.6, NaN, 0.7]) -> 4 and 3 over two cases.
    n_label = "Diffusion (mask, no recycling, 5 steps)"
    assert stats_hd.loc["k0", (n_label, "mean")] == pytest.approx(3.5)
    assert stats_hd.loc["k0", (n_label, "n")] == 2
    latex = per_class_latex(stats_hd, "prostate-mr", "hd95")
    assert "3.500 $\\pm$ 0.707" in latex
    assert "1 (run, case, class) values with an empty mask are excluded" in latex
    assert "\\shortstack{Diffusion\\\\mask\\\\no recycling\\\\5 steps}" in latex
