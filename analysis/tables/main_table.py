"""The main paper tables (1-4), shaped like the paper's, with a footnote on what the study can
detect.

Rows = settings (the table's axis), then the spec's variant rows (the same runs sampled another
way, e.g. Table 3a's noise model with fixed_small; `not logged` for runs without it), then per
compared setting three p rows: the raw paired t-test p as the paper reports it (`$^{*}$` when
below alpha, the paper's criterion), the same p Holm-adjusted over the table's comparisons, and
the Holm-adjusted Wilcoxon p; columns = data set x
{Dice, HD95 (mm)}; cells `mean $\\pm$ std`; best mean per column in bold. Below the tabular, a
footnote gives per comparison the BCa bootstrap interval of the mean Dice difference and mde80,
the smallest mean difference the study detects with 80% power (the paper's columns unchanged).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from diffseg3d.analysis.comparisons import NOT_LOGGED, axis_header
from diffseg3d.analysis.stats.paired import format_pvalue
from diffseg3d.analysis.table_data import Comparison, TableData
from diffseg3d.analysis.tables.latex import (
    BOLD,
    EMPTY,
    HD95_DEFINITION,
    METRIC_HEADERS,
    SMALL,
    data_set_name,
    escape_latex,
    format_cell,
    format_p_latex,
    number,
    signed,
)

#: p rows of each compared level: (row name, Comparison attribute, whether it carries the mark).
#: The mark follows the raw t-test p, as in the paper; the Holm rows are labelled as such.
P_ROWS: tuple[tuple[str, str, bool], ...] = (
    ("p (t-test)", "t_pvalue", True),
    ("p (t-test, Holm)", "t_pvalue_holm", False),
    ("p (Wilcoxon, Holm)", "wilcoxon_pvalue_holm", False),
)


def p_row_labels(data: TableData, label: str) -> tuple[str, ...]:
    """Row labels of the p rows (`P_ROWS` order) of a compared level."""
    if len(data.levels) == 2 and not data.variant_labels:
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
    shown = labels + list(data.variant_labels)
    row_names = shown + [name for pair in p_rows.values() for name in pair]
    columns, strings, bold = [], {}, {}
    for data_set in data.data_sets:
        name = data_set_name(data_set)
        for metric in ("dice", "hd95"):
            col = (name, METRIC_HEADERS[metric])
            columns.append(col)
            best = data.best(data_set, metric)
            for label in shown:
                cell = data.cells.get((label, data_set, metric))
                strings[(label, col)] = (
                    format_cell(cell.mean, cell.std, pm=pm) if cell
                    else NOT_LOGGED if (label, data_set) in data.not_logged else EMPTY)
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
        columns, names=[None, axis_header(data.spec)])
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
        *([escape_latex(data.spec.variant_note)] if data.spec.variant_note
          and data.variant_labels else []),
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
                                           name=axis_header(data.spec)))
        mask = pd.DataFrame(False, index=text.index, columns=text.columns)
    else:
        text, mask = display_frame(data)
    styler = text.style.apply(lambda _: np.where(mask, BOLD, ""), axis=None)
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    styler = styler.set_table_styles(SMALL, overwrite=False)
    latex = styler.to_latex(
        caption=caption(data), label=f"tab:{data.spec.table_id}", hrules=True,
        position_float="centering", multicol_align="c", environment="table",
        column_format="l" + "c" * text.shape[1],
    )
    note = footnote(data)
    if not note:
        return latex
    end = "\\end{table}"
    head, _, tail = latex.rpartition(end)
    return f"{head}\\par\\smallskip\n{{\\footnotesize {note}\\par}}\n{end}{tail}"


def comparison_note(data: TableData, comp: Comparison) -> str:
    """One comparison's interval and mde80 (LaTeX), e.g. `Prostate MR, Y vs N: difference
    +0.020, 99\\% interval [+0.010, +0.031], mde80 0.018`."""
    level = f"{100 * comp.interval.confidence:g}\\%"
    name = escape_latex(data_set_name(comp.data_set))
    pair = f"{escape_latex(comp.compared)} vs {escape_latex(comp.reference)}"
    text = (f"{name}, {pair}: difference {signed(comp.test.mean_diff)}, {level} interval "
            f"[{signed(comp.interval.low)}, {signed(comp.interval.high)}], mde80 "
            f"{number(comp.mde80)}")
    if comp.mixed is not None and np.isfinite(comp.mixed.pvalue):
        text += (f", mixed model ({comp.n_seeds} seeds) difference "
                 f"{signed(comp.mixed.estimate)}, p {format_pvalue(comp.mixed.pvalue)}")
    return text.replace("<", "$<$")


def footnote(data: TableData) -> str:
    """What the study can detect, per comparison (LaTeX; empty without comparisons): the mean
    paired Dice difference, its BCa bootstrap interval over cases and mde80, the smallest mean
    difference detected with 80% power at alpha by a paired t-test on these cases (two-sided,
    from the observed standard deviation of the differences); with seeds, the mixed model's."""
    if not data.comparisons:
        return ""
    alpha = data.comparisons[0].alpha
    head = (f"Dice differences (compared $-$ reference) with their BCa bootstrap interval over "
            f"cases and mde80, the smallest mean difference a paired t-test on these cases "
            f"detects with 80\\% power at $\\alpha = {alpha:g}$: ")
    return head + "; ".join(comparison_note(data, c) for c in data.comparisons) + "."
