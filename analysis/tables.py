"""LaTeX tables shaped like the paper's, built with pandas `Styler.to_latex` (booktabs).

Main tables: rows = settings (the table's axis), then per compared setting three p rows: the
raw paired t-test p as the paper reports it (`$^{*}$` when below alpha, the paper's criterion),
the same p Holm-adjusted over the table's comparisons, and the Holm-adjusted Wilcoxon p; columns =
data set x {Dice, HD95 (mm)}; cells `mean $\\pm$ std`; best mean per column in bold. Every user
string (data set, class, setting names; notes in captions) goes through pandas' LaTeX escaping.
Each file is a complete `table` float that compiles in a minimal document needing only
`booktabs`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from diffseg3d.analysis.comparisons import AXIS_HEADERS, DEFAULT_SAMPLING_NOTE
from diffseg3d.analysis.stats import format_pvalue
from diffseg3d.analysis.table_data import HIGHER_IS_BETTER, TableData

# Display names of known data sets (others are shown as they are, LaTeX-escaped).
DATA_SET_NAMES: dict[str, str] = {
    "prostate-mr": "Prostate MR", "amos-ct": "Abdominal CT", "phantom": "Phantom",
}
METRIC_HEADERS: dict[str, str] = {"dice": "Dice", "hd95": "HD95 (mm)", "nsd": "NSD"}
BOLD = "textbf: --rwrap;"  # Styler LaTeX css: wraps the cell as \textbf{...}
# Styler table style that emits `\small` after `\begin{table}`, so two data sets fit a page.
SMALL = [{"selector": "small", "props": ":;"}]
# Supplements have one column per setting (up to 6): smaller type and column gaps.
FOOTNOTESIZE = [{"selector": "footnotesize", "props": ":;"},
                {"selector": "setlength", "props": ":{\\tabcolsep}{3pt};"}]
EMPTY = "--"
HD95_DEFINITION = (
    "HD95: 95th-percentile Hausdorff distance in mm (MONAI definition: surface voxels are the "
    "mask XOR its erosion, distances with the voxel spacing, maximum of the two directed 95th "
    "percentiles)"
)


def escape_latex(text: str) -> str:
    """Free text (names from data, not our own markup) with every LaTeX special escaped.

    The same escaping as `Styler.format(escape="latex")` (`\\ ~ ^ & % $ # _ { }`), reached
    through pandas' public Styler API rather than its private helper.
    """
    styler = pd.DataFrame([[str(text)]]).style.format(escape="latex")
    rendered = styler.hide(axis="index").hide(axis="columns").to_string()
    return rendered.removesuffix("\n")


def data_set_name(name: str) -> str:
    return DATA_SET_NAMES.get(name, name)


def format_cell(mean: float, std: float, *, pm: str = "$\\pm$") -> str:
    """`0.830 $\\pm$ 0.094`; three decimals like the paper; std `n/a` for a single case."""
    if not np.isfinite(mean):
        return EMPTY
    std_text = f"{std:.3f}" if np.isfinite(std) else "n/a"
    return f"{mean:.3f} {pm} {std_text}"


def format_p_latex(p: float, significant: bool) -> str:
    text = format_pvalue(p).replace("<", "$<$")
    return text + ("$^{*}$" if significant else "")


#: p rows of each compared level: (row name, Comparison attribute, whether it carries the mark).
#: The mark follows the raw t-test p, as in the paper; the Holm rows are labelled as such.
P_ROWS: tuple[tuple[str, str, bool], ...] = (
    ("p (t-test)", "t_pvalue", True),
    ("p (t-test, Holm)", "t_pvalue_holm", False),
    ("p (Wilcoxon, Holm)", "wilcoxon_pvalue_holm", False),
)


def p_row_labels(data: TableData, label: str) -> tuple[str, ...]:
    """Row labels of the p rows (`P_ROWS` order) of a compared level."""
    if len(data.levels) == 2:
        return tuple(name for name, _, _ in P_ROWS)
    ref = data.levels[0][1]
    return tuple(f"{name}, {label} vs {ref}" for name, _, _ in P_ROWS)


def _pvalue(comp, attr: str) -> float:
    return comp.test.t_pvalue if attr == "t_pvalue" else getattr(comp, attr)


def display_frame(data: TableData, *, pm: str = "$\\pm$", p_format=format_p_latex
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(strings, bold mask) of one main table, shaped like the paper's.

    Rows: one per level, then per compared level the `P_ROWS` (raw t-test p with the mark,
    Holm-adjusted t-test p, Holm-adjusted Wilcoxon p; the tests are on Dice, so the p sits in the
    Dice column). Columns: MultiIndex (data set display name, Dice | HD95 (mm)).
    """
    labels = [label for _, label in data.levels]
    p_rows = {label: p_row_labels(data, label) for label in labels[1:]}
    row_names = labels + [name for pair in p_rows.values() for name in pair]
    columns, strings, bold = [], {}, {}
    for data_set in data.data_sets:
        name = data_set_name(data_set)
        for metric in ("dice", "hd95"):
            col = (name, METRIC_HEADERS[metric])
            columns.append(col)
            best = data.best(data_set, metric)
            for label in labels:
                cell = data.cells.get((label, data_set, metric))
                strings[(label, col)] = format_cell(cell.mean, cell.std, pm=pm) if cell else EMPTY
                bold[(label, col)] = label in best
            for label, rows in p_rows.items():
                comp = data.comparison(data_set, label)
                for row, (_, attr, marked) in zip(rows, P_ROWS, strict=True):
                    text = ""
                    if metric == "dice":
                        text = (p_format(_pvalue(comp, attr), marked and comp.significant)
                                if comp else EMPTY)
                    strings[(row, col)] = text
                    bold[(row, col)] = False
    # The axis header sits in the top-left cell of the second header row, as in the paper.
    cols = pd.MultiIndex.from_tuples(
        columns, names=[None, AXIS_HEADERS.get(data.spec.axis, data.spec.axis)])
    index = pd.Index(row_names)
    text = pd.DataFrame([[strings[(r, c)] for c in columns] for r in row_names], index=index,
                        columns=cols)
    mask = pd.DataFrame([[bold[(r, c)] for c in columns] for r in row_names], index=index,
                        columns=cols)
    return text, mask


def caption(data: TableData) -> str:
    """Caption (LaTeX): title, what cells are, tests, HD95 definition, empty counts, gaps."""
    seeds = f", mean over {data.n_seeds} seeds" if data.n_seeds > 1 else ""
    reference = data.levels[0][1]
    parts = [
        escape_latex(data.spec.title),
        *([escape_latex(data.spec.note)] if data.spec.note else []),
        f"Cells: mean $\\pm$ std over test cases of the per-case mean over foreground "
        f"classes{seeds}; best in bold (Dice higher, HD95 lower is better).",
        f"p (t-test): paired Student's t-test on per-case Dice against row "
        f"{escape_latex(reference)}, unadjusted as in the paper; $^{{*}}$: significant at "
        f"$\\alpha = {data.comparisons[0].alpha if data.comparisons else 0.01:g}$ by this p. "
        f"p (t-test, Holm) and p (Wilcoxon, Holm): the t-test and the Wilcoxon signed-rank "
        f"test, Holm-adjusted over the {len(data.comparisons)} comparison(s) of this table.",
        f"{HD95_DEFINITION}; {data.n_empty('hd95')} (case, class) values with an empty "
        f"prediction or ground truth are excluded from HD95 and {data.n_empty('dice')} with "
        f"both empty from Dice.",
    ]
    if len(data.data_sets) == 0:
        parts.append("No finished runs feed this table.")
    else:
        shown = ", ".join(escape_latex(data_set_name(d)) for d in data.data_sets)
        absent = ", ".join(escape_latex(data_set_name(d)) for d in data.absent_paper_data_sets)
        parts.append(f"Data sets with runs: {shown}"
                     + (f" (none for the paper's {absent})." if absent else "."))
    if data.notes:
        parts.append("Missing: " + "; ".join(escape_latex(n) for n in data.notes) + ".")
    return " ".join(parts)


def main_table_latex(data: TableData) -> str:
    """The complete `table` float of one paper table (booktabs, via Styler.to_latex)."""
    if not data.data_sets:
        text = pd.DataFrame({"Result": ["no runs"]},
                            index=pd.Index([label for _, label in data.levels[:1]],
                                           name=AXIS_HEADERS.get(data.spec.axis)))
        mask = pd.DataFrame(False, index=text.index, columns=text.columns)
    else:
        text, mask = display_frame(data)
    styler = text.style.apply(lambda _: np.where(mask, BOLD, ""), axis=None)
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    styler = styler.set_table_styles(SMALL, overwrite=False)
    return styler.to_latex(
        caption=caption(data), label=f"tab:{data.spec.table_id}", hrules=True,
        position_float="centering", multicol_align="c", environment="table",
        column_format="l" + "c" * text.shape[1],
    )


def setting_header(label: str) -> str:
    """Stacked header for a long setting label: `Diffusion (mask, recycling)` -> 3 lines."""
    if "(" not in label:
        return escape_latex(label)
    head, rest = label.split("(", 1)
    parts = [head.strip()] + [p.strip() for p in rest.rstrip(")").split(",")]
    return "\\shortstack{" + "\\\\".join(escape_latex(p) for p in parts) + "}"


def nsd_definition(tolerances_mm) -> str:
    """Caption sentence defining NSD at the tolerance(s) of the runs shown (mm)."""
    values = sorted({float(t) for t in tolerances_mm if np.isfinite(t)})
    stated = " / ".join(f"{t:g}" for t in values) or "an unrecorded"
    return (f"NSD: normalised surface Dice at a tolerance of {stated} mm (MONAI definition: the "
            "fraction of both surfaces, mask XOR its erosion, within the tolerance of the other, "
            "distances with the voxel spacing)")


def per_class_latex(stats: pd.DataFrame, data_set: str, metric: str,
                    nsd_tolerances_mm=()) -> str:
    """Supplement table: rows = classes, columns = settings; cells mean $\\pm$ std over cases.

    stats: output of `table_data.per_class_stats` for one data set and metric (dice, hd95 or
    nsd); nsd_tolerances_mm: the NSD tolerances of its runs, stated in the caption.
    """
    settings = list(dict.fromkeys(stats.columns.get_level_values(0)))
    text = pd.DataFrame({setting_header(s): [format_cell(m, sd) for m, sd in
                                            zip(stats[(s, "mean")], stats[(s, "std")],
                                                strict=True)]
                         for s in settings}, index=pd.Index(stats.index, name="Class"))
    means = stats.xs("mean", axis=1, level=1)[settings].to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        best = (np.nanmax(means, axis=1, keepdims=True) if HIGHER_IS_BETTER[metric]
                else np.nanmin(means, axis=1, keepdims=True))
    mask = np.isclose(means, best, rtol=0, atol=1e-12) & (len(settings) > 1)
    styler = text.style.apply(lambda _: np.where(mask, BOLD, ""), axis=None)
    styler = styler.format_index(escape="latex", axis=0)
    styler = styler.set_table_styles(FOOTNOTESIZE, overwrite=False)
    n_empty = int(stats.xs("empty", axis=1, level=1).sum().sum())
    definition = {"hd95": f" {HD95_DEFINITION};",
                  "nsd": f" {nsd_definition(nsd_tolerances_mm)};"}.get(metric, "")
    cap = (f"Per-class {METRIC_HEADERS[metric]} on {escape_latex(data_set_name(data_set))}: "
           f"mean $\\pm$ std over test cases (mean over seeds first); best per class in bold."
           + (f"{definition} {n_empty} (run, case, class) values with an empty mask "
              "are excluded." if metric == "hd95" else
              f"{definition} {n_empty} (run, case, class) values where both masks are empty "
              "are excluded."))
    safe_id = "".join(c if c.isalnum() else "-" for c in data_set)
    return styler.to_latex(
        caption=f"{cap} {escape_latex(DEFAULT_SAMPLING_NOTE)}",
        label=f"tab:per-class-{metric}-{safe_id}", hrules=True,
        position_float="centering", environment="table",
        column_format="l" + "c" * text.shape[1],
    )


def spearman_latex(table: pd.DataFrame) -> str:
    """ROI size vs Dice table: rows (data set, setting), columns classes, r, p, permutation p.

    table: output of `spearman.roi_dice_spearman`.
    """
    text = pd.DataFrame({
        "Data set": [data_set_name(d) for d in table["data_set"]],
        "Setting": list(table["setting"]),
        "Classes": table["n_classes"].astype(int).astype(str).tolist(),
        "Spearman r": [f"{r:.3f}" if np.isfinite(r) else EMPTY for r in table["r"]],
        "p": [format_pvalue(p).replace("<", "$<$") for p in table["p"]],
        "p (perm.)": [format_pvalue(p).replace("<", "$<$") for p in table["p_perm"]],
    })
    styler = text.style.hide(axis="index").format(escape="latex", subset=["Data set", "Setting"])
    styler = styler.set_table_styles(SMALL, overwrite=False)
    exact = bool(table["exact"].all()) if len(table) else True
    cap = ("Spearman correlation between ROI size (mean ground-truth volume per class, mm$^3$) "
           "and mean Dice per class. p: asymptotic (scipy); p (perm.): permutation test "
           + ("over all pairings (exact)." if exact else
              "(exact up to 8 classes, else 9,999 random pairings with a fixed seed)."))
    return styler.to_latex(caption=f"{cap} {escape_latex(DEFAULT_SAMPLING_NOTE)}",
                           label="tab:roi-vs-dice", hrules=True,
                           position_float="centering", environment="table",
                           column_format="llcccc")


def _number(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if np.isfinite(value) else EMPTY


def sampling_steps_frame(steps: pd.DataFrame) -> pd.DataFrame:
    """Plain-text cells of the Dice-per-sampling-step table: columns `Data set`, `Setting`, then
    one per step k (1..K, the union over settings; `--` where a setting has fewer steps).

    steps: output of `sampling_chain.step_dice`.
    """
    wide = steps.pivot_table(index=["data_set", "setting"], columns="step", values="mean",
                             sort=False)
    text = pd.DataFrame({
        "Data set": [data_set_name(d) for d, _ in wide.index],
        "Setting": [s for _, s in wide.index],
        **{f"step {int(k)}": [_number(v) for v in wide[k]] for k in sorted(wide.columns)},
    })
    return text


def sampling_steps_latex(steps: pd.DataFrame) -> str:
    """Mean test Dice of each sampling step's x0_hat (argmax) per data set and setting.

    steps: output of `sampling_chain.step_dice` (non-empty).
    """
    text = sampling_steps_frame(steps)
    n_runs = int(steps["n_runs"].max()) if len(steps) else 0
    styler = text.style.hide(axis="index").format(escape="latex", subset=["Data set", "Setting"])
    styler = styler.set_table_styles(SMALL, overwrite=False)
    cap = ("Quality along the sampling chain: mean test Dice (mean over cases of the per-case "
           "mean over foreground classes) of the label map of each sampling step's $\\hat{x}_0$"
           ", step 1 from pure noise, the last step being the prediction"
           + (f"; mean over up to {n_runs} seeds." if n_runs > 1 else "."))
    return styler.to_latex(caption=cap, label="tab:dice-per-sampling-step", hrules=True,
                           position_float="centering", environment="table",
                           column_format="ll" + "c" * (text.shape[1] - 2))


def ensemble_frame(ensembles: pd.DataFrame) -> pd.DataFrame:
    """Plain-text cells of the 1-sample vs N-sample table (`sampling_chain.ensemble_dice`)."""
    return pd.DataFrame({
        "Data set": [data_set_name(d) for d in ensembles["data_set"]],
        "Setting": list(ensembles["setting"]),
        "N": [str(int(n)) if n > 0 else EMPTY for n in ensembles["samples"]],
        "Dice (1 sample)": [_number(v) for v in ensembles["dice_single"]],
        "Dice (N samples)": [_number(v) for v in ensembles["dice_ensemble"]],
        "Spearman r": [_number(v) for v in ensembles["spearman_r"]],
    })


def ensemble_latex(ensembles: pd.DataFrame) -> str:
    """1-sample Dice next to the N-sample ensemble's, with the entropy-Dice Spearman r."""
    text = ensemble_frame(ensembles)
    styler = text.style.hide(axis="index").format(escape="latex", subset=["Data set", "Setting"])
    styler = styler.set_table_styles(SMALL, overwrite=False)
    cap = ("Ensembles of N independent diffusion samples: mean test Dice of one sample and of "
           "the N-sample ensemble (argmax of the mean class probabilities), the first sample "
           "being shared; Spearman r between each case's mean voxel entropy of the ensemble and "
           "its ensemble Dice (negative: the uncertainty flags the poor cases). Means over "
           "seeds.")
    return styler.to_latex(caption=cap, label="tab:ensemble", hrules=True,
                           position_float="centering", environment="table",
                           column_format="llcccc")


MINIMAL_DOCUMENT = (
    "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1.5cm]{geometry}\n"
    "\\begin{document}\n\\input{%s}\n\\end{document}\n"
)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
