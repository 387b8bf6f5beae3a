"""Table 3c by time input (beyond the paper): 1000 vs 5 training steps under each time input.

The grid `experiments/grids/table3c_time_input.yaml` trains the default diffusion model with
K = 1000 and K = 5 training steps under `diffusion.time_input: index` (the released code's step
index k) and `fraction` (t_k / T), all sampled with K = 5; its comparisons feed the table labels
`3c-index` and `3c-fraction`. Each is a `TableSpec` with axis `train_steps` (1000 the reference,
as in Table 3c) computed by `table_data.compute_table`; this module puts both in one LaTeX table
(`table3c_time_input.tex`) and one summary.md section whose table has a row per time input
saying whether the paper's effect (5 training steps better than 1000, raw paired t-test p below
alpha, the paper's criterion) holds. Holm-adjusted p here is over all the table's comparisons
(both time inputs, every data set). Nothing is written when no run carries those labels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from diffseg3d.analysis.comparisons import DEFAULT_SAMPLING_NOTE, TableSpec
from diffseg3d.analysis.stats.paired import format_pvalue, holm
from diffseg3d.analysis.table_data import Comparison, TableData, compute_table
from diffseg3d.analysis.tables.latex import (
    EMPTY,
    METRIC_HEADERS,
    SMALL,
    data_set_name,
    escape_latex,
    format_cell,
    signed,
    write_text,
)

TABLE_ID = "table3c_time_input"
TIME_INPUTS = ("index", "fraction")
_WHERE = (("method", "diffusion"), ("output", "x0"), ("recycling", True), ("dice_loss", True))

#: One spec per time input; labels are the grid's comparison labels.
SPECS: dict[str, TableSpec] = {
    time_input: TableSpec(
        f"{TABLE_ID}_{time_input}", f"3c-{time_input}",
        f"Training steps 1000 vs 5 with time input {time_input} (beyond the paper).",
        "train_steps", ((1000, "1000"), (5, "5")), _WHERE, ("prostate-mr",),
        DEFAULT_SAMPLING_NOTE)
    for time_input in TIME_INPUTS
}

#: Verdict on the paper's Table 3c effect (5 training steps better than 1000).
HOLDS, REVERSED, NOT_SHOWN = "holds", "reversed", "not shown"


@dataclasses.dataclass(frozen=True)
class TimeInputTable:
    """The two tables and the Holm-adjusted t-test p over all their comparisons, keyed by
    (time input, data set)."""

    tables: dict[str, TableData]
    holm: dict[tuple[str, str], float]
    alpha: float

    @property
    def data_sets(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for data in self.tables.values():
            seen.update(dict.fromkeys(data.data_sets))
        return tuple(seen)

    def comparison(self, time_input: str, data_set: str) -> Comparison | None:
        return self.tables[time_input].comparison(data_set, "5")


def _tagged(frame: pd.DataFrame) -> bool:
    """Whether some run names one of this table's labels or ids in its table tags."""
    wanted = {s.label for s in SPECS.values()} | {s.table_id for s in SPECS.values()}
    tags = frame["tables"].fillna("").astype(str).str.split(",")
    return bool(tags.apply(lambda ids: bool(wanted.intersection(ids))).any())


def compute_time_input_table(frame: pd.DataFrame, alpha: float) -> TimeInputTable | None:
    """Both tables from the tidy frame, None when no run is tagged for them."""
    if frame.empty or not _tagged(frame):
        return None
    tables = {t: compute_table(frame, SPECS[t], alpha) for t in TIME_INPUTS}
    keys = [(t, c.data_set) for t in TIME_INPUTS for c in tables[t].comparisons]
    raw = [tables[t].comparison(d, "5").test.t_pvalue for t, d in keys]
    adjusted = holm(raw) if raw else np.array([])
    return TimeInputTable(tables, dict(zip(keys, (float(p) for p in adjusted), strict=True)),
                          alpha)


def verdict(comp: Comparison | None, alpha: float) -> str:
    """`HOLDS` when 5 steps has the higher mean Dice with raw t-test p < alpha, `REVERSED`
    when 1000 steps does, `NOT_SHOWN` otherwise (also without a comparison)."""
    if comp is None or not np.isfinite(comp.test.t_pvalue) or comp.test.t_pvalue >= alpha:
        return NOT_SHOWN
    return HOLDS if comp.test.mean_diff > 0 else REVERSED


def _frame(result: TimeInputTable, pm: str, p_row) -> pd.DataFrame:
    """Rows (time input, 1000 | 5 | p (t-test) | p (t-test, Holm)); columns (data set, metric)."""
    columns = [(data_set_name(d), METRIC_HEADERS[m]) for d in result.data_sets
               for m in ("dice", "hd95")]
    rows, index = [], []
    for time_input in TIME_INPUTS:
        data = result.tables[time_input]
        for label in ("1000", "5"):
            index.append((time_input, label))
            rows.append([format_cell(c.mean, c.std, pm=pm) if (c := data.cells.get(
                (label, d, m))) else EMPTY for d in result.data_sets for m in ("dice", "hd95")])
        for name in ("p (t-test)", "p (t-test, Holm)"):
            index.append((time_input, name))
            row = []
            for d in result.data_sets:
                comp = result.comparison(time_input, d)
                holm_p = result.holm.get((time_input, d), float("nan"))
                row += [p_row(comp, holm_p, name == "p (t-test)"), ""]
            rows.append(row)
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["Time input",
                                                                             "Steps"]),
                        columns=pd.MultiIndex.from_tuples(columns))


def _p_latex(comp, holm_p, raw):
    if comp is None:
        return EMPTY
    p = comp.test.t_pvalue if raw else holm_p
    text = format_pvalue(p).replace("<", "$<$")
    return text + ("$^{*}$" if raw and comp.significant else "")


def caption(result: TimeInputTable) -> str:
    parts = [
        "Training steps (K = 1000 vs 5, Table 3c) under each time input of the network "
        "(beyond the paper): index = the step index k in [0, K) as the released code feeds it, "
        "fraction = t$_k$ / T. All models sampled with K = 5 steps.",
        escape_latex(DEFAULT_SAMPLING_NOTE),
        "Cells: mean $\\pm$ std over test cases of the per-case mean over foreground classes. "
        f"p (t-test): paired t-test on per-case Dice, 5 vs 1000, unadjusted as in the paper; "
        f"$^{{*}}$: below $\\alpha = {result.alpha:g}$. p (t-test, Holm): Holm-adjusted over "
        f"the {len(result.holm)} comparison(s) of this table.",
    ]
    for time_input in TIME_INPUTS:
        for d in result.data_sets:
            comp = result.comparison(time_input, d)
            if comp is not None:
                parts.append(f"{escape_latex(data_set_name(d))}, {time_input}: 5 $-$ 1000 "
                             f"difference {signed(comp.test.mean_diff)}, effect "
                             f"{verdict(comp, result.alpha)}.")
    return " ".join(parts)


def time_input_latex(result: TimeInputTable) -> str:
    """The complete `table` float (booktabs)."""
    text = _frame(result, "$\\pm$", _p_latex)
    styler = text.style.format_index(escape="latex", axis=1).set_table_styles(
        SMALL, overwrite=False)
    return styler.to_latex(caption=caption(result), label=f"tab:{TABLE_ID}", hrules=True,
                           position_float="centering", multicol_align="c",
                           sparse_index=False, environment="table",
                           column_format="ll" + "c" * text.shape[1])


def summary_section(result: TimeInputTable) -> str:
    """summary.md: one row per time input and data set saying whether the effect holds."""
    lines = [f"## {TABLE_ID}: Table 3c by time input (beyond the paper)", "",
             "1000 vs 5 training steps, all sampled with 5 steps; time input index = the "
             "released code's step index k, fraction = t_k / T. Effect: the paper's Table 3c "
             "finding (5 training steps better than 1000) at raw paired t-test p < "
             f"{result.alpha:g}; Holm over the table's {len(result.holm)} comparison(s).", "",
             "| time input | data set | Dice 1000 | Dice 5 | difference | p (t-test) | "
             "p (Holm) | 5-vs-1000 effect |", "|---|---|---|---|---|---|---|---|"]
    for time_input in TIME_INPUTS:
        for d in result.data_sets:
            comp = result.comparison(time_input, d)
            if comp is None:
                lines.append(f"| {time_input} | {data_set_name(d)} | | | | | | no pair |")
                continue
            t = comp.test
            lines.append(
                f"| {time_input} | {data_set_name(d)} | {t.mean_a:.3f} | {t.mean_b:.3f} | "
                f"{t.mean_diff:+.3f} | {format_pvalue(t.t_pvalue)} | "
                f"{format_pvalue(result.holm[(time_input, d)])} | "
                f"{verdict(comp, result.alpha)} |")
    return "\n".join(lines) + "\n"


def write_time_input_table(frame: pd.DataFrame, out: Path, alpha: float
                           ) -> tuple[list[Path], str]:
    """Write `table3c_time_input.tex`; return (paths written, summary.md section), or
    ([], "") when no run feeds the table."""
    result = compute_time_input_table(frame, alpha)
    if result is None:
        return [], ""
    path = write_text(Path(out) / f"{TABLE_ID}.tex", time_input_latex(result))
    return [path], summary_section(result)
