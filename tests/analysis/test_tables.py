"""From a runs table with known values: exact cells, bold on the best, p-values, pdflatex."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from diffseg3d.analysis.comparisons import TABLES_BY_ID, add_setting_column
from diffseg3d.analysis.spearman import roi_dice_spearman
from diffseg3d.analysis.table_data import compute_table, per_class_stats
from diffseg3d.analysis.tables import (
    MINIMAL_DOCUMENT,
    caption,
    display_frame,
    main_table_latex,
    per_class_latex,
    spearman_latex,
)
from scipy import stats

from .synthetic_runs import synthetic_frame

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
         [f"{p:.3f}", ""], [f"{p_w:.3f}", ""]],
        index=["N", "Y", "p (t-test)", "p (Wilcoxon)"],
        columns=pd.MultiIndex.from_tuples([("Prostate MR", "Dice"),
                                           ("Prostate MR", "HD95 (mm)")]))
    assert text.values.tolist() == expected.values.tolist()
    assert text.index.tolist() == expected.index.tolist()
    assert text.values[0, 0] == "0.700 $\\pm$ 0.100"  # hand value
    # Y is better in both Dice (higher) and HD95 (lower); only those cells are bold.
    assert bold.values.tolist() == [[False, False], [True, True], [False, False],
                                    [False, False]]
    assert p > 0.01  # three cases cannot reach alpha: no significance mark
    latex = main_table_latex(data)
    assert f"\\textbf{{{y_case.mean():.3f} $\\pm$ {y_case.std(ddof=1):.3f}}}" in latex
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex
    assert "\\multicolumn{2}{c}{Prostate MR}" in latex
    assert "$^{*}$" not in latex.split("\\begin{tabular}")[1]


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
