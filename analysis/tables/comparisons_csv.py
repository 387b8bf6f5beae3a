"""`comparisons.csv`: one row per comparison of every table (each level against the table's
reference level, per data set), with every statistic behind the tables and the verdicts.

Columns (`columns(alpha)`; the interval columns are named after its level, `ci99_*` at the
paper's alpha = 0.01):
- table, data_set, axis, a, b: the table id, data set, the axis that varies and the two row
  labels (a = reference, b = compared);
- n_cases (paired cases), n_seeds (seeds of the setting with fewer), mean_a, mean_b,
  mean_diff (b - a), sd_diff (ddof 1 of the per-case paired differences);
- ci99_low, ci99_high: BCa bootstrap interval of mean_diff over cases (`stats.bootstrap`),
  ci_note when undefined;
- p_ttest (paired t-test on seed-averaged cases, unadjusted as in the paper), p_holm (the same,
  Holm-adjusted within the table), p_wilcoxon, p_wilcoxon_holm;
- mixed_diff, mixed_se, p_mixed, mixed_sd_case, mixed_sd_seed, mixed_sd_residual: the mixed
  model (`stats.mixed_model`), empty with one seed and mixed_note saying why;
- mde80: the smallest mean paired difference detectable with 80% power at alpha
  (`stats.power`); verdict: `stats.verdict.VERDICTS`.
Undefined numbers are empty cells.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from diffseg3d.analysis.stats import ALPHA
from diffseg3d.analysis.table_data import Comparison, TableData


def interval_prefix(alpha: float = ALPHA) -> str:
    """`ci99` at alpha = 0.01 (`ci95` at 0.05): the interval columns' name."""
    return f"ci{100 * (1 - alpha):g}"


def columns(alpha: float = ALPHA) -> tuple[str, ...]:
    ci = interval_prefix(alpha)
    return ("table", "data_set", "axis", "a", "b", "n_cases", "n_seeds", "mean_a", "mean_b",
            "mean_diff", "sd_diff", f"{ci}_low", f"{ci}_high", "ci_note", "p_ttest", "p_holm",
            "p_wilcoxon", "p_wilcoxon_holm", "mixed_diff", "mixed_se", "p_mixed",
            "mixed_sd_case", "mixed_sd_seed", "mixed_sd_residual", "mixed_note", "mde80",
            "verdict")


def comparison_row(data: TableData, comp: Comparison) -> dict:
    """The `columns` of one comparison of table `data`."""
    nan = math.nan
    mixed = comp.mixed
    ci = interval_prefix(comp.alpha)
    return {
        "table": data.spec.table_id, "data_set": comp.data_set, "axis": data.spec.axis,
        "a": comp.reference, "b": comp.compared, "n_cases": comp.test.n,
        "n_seeds": comp.n_seeds, "mean_a": comp.test.mean_a, "mean_b": comp.test.mean_b,
        "mean_diff": comp.test.mean_diff, "sd_diff": comp.sd_diff,
        f"{ci}_low": comp.interval.low, f"{ci}_high": comp.interval.high,
        "ci_note": comp.interval.note, "p_ttest": comp.test.t_pvalue, "p_holm": comp.t_pvalue_holm,
        "p_wilcoxon": comp.test.wilcoxon_pvalue, "p_wilcoxon_holm": comp.wilcoxon_pvalue_holm,
        "mixed_diff": mixed.estimate if mixed else nan,
        "mixed_se": mixed.std_error if mixed else nan,
        "p_mixed": mixed.pvalue if mixed else nan,
        "mixed_sd_case": mixed.sd_case if mixed else nan,
        "mixed_sd_seed": mixed.sd_seed if mixed else nan,
        "mixed_sd_residual": mixed.sd_residual if mixed else nan,
        "mixed_note": mixed.note if mixed else "no mixed model computed",
        "mde80": comp.mde80, "verdict": comp.verdict,
    }


def comparisons_frame(tables: list[TableData], alpha: float = ALPHA, *,
                      p_holm: dict[tuple[str, str, str], float] | None = None) -> pd.DataFrame:
    """One row per comparison of `tables`, in table order (`columns(alpha)`).

    p_holm: (table id, data set, compared label) -> Holm-adjusted p replacing the one over the
    `TableData`'s own comparisons, for a published table made of several (Table 3c by time
    input adjusts over both of its time inputs).
    """
    rows = []
    for data in tables:
        for comp in data.comparisons:
            row = comparison_row(data, comp)
            row["p_holm"] = (p_holm or {}).get((data.spec.table_id, comp.data_set,
                                                comp.compared), row["p_holm"])
            rows.append(row)
    return pd.DataFrame(rows, columns=list(columns(alpha)))


def write_comparisons_csv(tables: list[TableData], path: Path, alpha: float = ALPHA, *,
                          p_holm: dict[tuple[str, str, str], float] | None = None) -> Path:
    """Write `comparisons_frame` to `path` (undefined numbers as empty cells)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    comparisons_frame(tables, alpha, p_holm=p_holm).to_csv(path, index=False, na_rep="")
    return path
