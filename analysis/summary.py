"""`summary.md`: the tables in Markdown, one sentence per comparison with its p-value, the run ids
behind every number, and everything that is missing (failed runs, empty levels, skipped figures).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from diffseg3d.analysis.comparisons import axis_header
from diffseg3d.analysis.stats.paired import format_pvalue
from diffseg3d.analysis.table_data import Comparison, TableData
from diffseg3d.analysis.tables.latex import EMPTY, data_set_name, format_cell
from diffseg3d.analysis.tables.main_table import display_frame


def markdown_table(text: pd.DataFrame, bold: pd.DataFrame | None = None) -> str:
    """A GitHub pipe table of a string frame; MultiIndex columns are joined with a space."""
    def header(col) -> str:
        parts = col if isinstance(col, tuple) else (col,)
        return " ".join(str(p) for p in parts if p not in (None, ""))

    index_name = text.columns.names[-1] or text.index.name or ""
    lines = ["| " + " | ".join([str(index_name)] + [header(c) for c in text.columns]) + " |",
             "|" + "---|" * (text.shape[1] + 1)]
    for i, (label, row) in enumerate(text.iterrows()):
        cells = [f"**{v}**" if bold is not None and bool(bold.iat[i, j]) else str(v)
                 for j, v in enumerate(row)]
        lines.append("| " + " | ".join([str(label)] + cells) + " |")
    return "\n".join(lines)


def _p_markdown(p: float, significant: bool) -> str:
    return format_pvalue(p) + ("*" if significant else "")


def _p_phrase(p: float) -> str:
    """`p < 0.001` / `p = 0.042` / `p n/a`."""
    text = format_pvalue(p)
    return f"p < {text[1:]}" if text.startswith("<") else f"p = {text}" if text != "n/a" else \
        "p n/a"


def comparison_sentence(data: TableData, comp: Comparison) -> str:
    """One sentence stating the finding of a comparison with its p-values and run ids."""
    axis = axis_header(data.spec)
    t = comp.test
    if t.n < 2:
        return (f"- {data_set_name(comp.data_set)}: {axis} {comp.compared} vs {comp.reference}: "
                f"only {t.n} paired case(s), no test.")
    direction = "higher" if t.mean_diff > 0 else "lower" if t.mean_diff < 0 else "equal"
    verdict = ("significant" if comp.significant else "not significant")
    holm_verdict = "significant" if comp.significant_holm else "not significant"
    return (
        f"- {data_set_name(comp.data_set)}: {axis} = {comp.compared} gave a {direction} Dice "
        f"than {comp.reference} ({t.mean_b:.3f} vs {t.mean_a:.3f}; difference "
        f"{t.mean_diff:+.3f}, {100 * t.confidence:.0f} % t interval [{t.ci_low:+.3f}, "
        f"{t.ci_high:+.3f}], "
        f"n = {t.n} paired cases); paired t-test {_p_phrase(t.t_pvalue)} (unadjusted, as the "
        f"paper reports it): {verdict} at alpha = {comp.alpha:g}; Holm-adjusted over the "
        f"table's comparisons: t-test {_p_phrase(comp.t_pvalue_holm)} ({holm_verdict}), "
        f"Wilcoxon {_p_phrase(comp.wilcoxon_pvalue_holm)}. Runs: {comp.reference}: "
        f"{', '.join(comp.run_ids_reference)}; {comp.compared}: "
        f"{', '.join(comp.run_ids_compared)}."
    )


def mixed_clause(comp: Comparison) -> str:
    """The mixed model's estimate and p, or why there is none (one seed)."""
    mixed = comp.mixed
    if mixed is None:
        return "mixed model: not computed"
    if not np.isfinite(mixed.pvalue):
        return f"mixed model: none ({mixed.note})"
    return (f"mixed model over {mixed.n_seeds} seeds: difference {mixed.estimate:+.3f} "
            f"(SE {mixed.std_error:.3f}), {_p_phrase(mixed.pvalue)}; SD between cases "
            f"{mixed.sd_case:.3f}, between seeds {mixed.sd_seed:.3f}, residual "
            f"{mixed.sd_residual:.3f}")


def verdict_line(data: TableData, comp: Comparison) -> str:
    """`- Prostate MR, Recycling Y vs N: <verdict with its numbers>; <mixed model>.`"""
    axis = axis_header(data.spec)
    return (f"- {data_set_name(comp.data_set)}, {axis} {comp.compared} vs {comp.reference} "
            f"(n = {comp.test.n} cases): {comp.verdict_text}; {mixed_clause(comp)}.")


def verdicts_section() -> str:
    """How to read the verdicts (once, before the tables)."""
    return (
        "## How to read the comparisons\n\n"
        "Every comparison (each row against the table's first row, per data set) is in "
        "`comparisons.csv` with its paired t-test (raw and Holm-adjusted), Wilcoxon test, the "
        "BCa bootstrap interval of the mean paired Dice difference over cases, the mixed model "
        "(random intercept per case, variance component per seed; only with two or more "
        "seeds) and mde80, the smallest mean difference a paired t-test on these cases "
        "detects with 80% power at alpha. Each gets one verdict:\n\n"
        "- significant: paired t-test p < alpha (the paper's criterion);\n"
        "- not significant, but could have seen an effect of size mde80: the interval lies "
        "inside +-mde80, so effects the study had the power to detect are ruled out;\n"
        "- too small to tell: not significant, the difference is below mde80 and the interval "
        "reaches past +-mde80, so the study can neither show nor rule out such an effect.\n\n"
        "The interval resamples cases, not training runs: with one seed per setting, training "
        "noise is inside neither the t-test nor the interval.\n"
    )


def table_section(data: TableData) -> str:
    """Markdown section of one main table."""
    lines = [f"## {data.spec.table_id}: {data.spec.title}", ""]
    if not data.data_sets:
        lines += ["No finished runs feed this table.", ""]
        return "\n".join(lines)
    text, bold = display_frame(data, pm="±", p_format=_p_markdown)
    if data.absent_paper_data_sets:
        absent = ", ".join(data_set_name(d) for d in data.absent_paper_data_sets)
        lines += [f"No runs for the paper's {absent}: the table shows the data sets that have "
                  "runs.", ""]
    lines += [markdown_table(text, bold), ""]
    if data.spec.note:
        lines += [data.spec.note, ""]
    if data.spec.variant_note and data.variant_labels:
        lines += [data.spec.variant_note, ""]
    lines += ["Cells: mean ± std over test cases of the per-case mean over foreground classes; "
              "p (t-test): paired t-test on per-case Dice vs the first row, unadjusted as in "
              "the paper, * significant at alpha by this p; p (t-test, Holm) and p (Wilcoxon, "
              "Holm): Holm-adjusted over the table's comparisons. HD95 empty (excluded) values: "
              f"{data.n_empty('hd95')}; Dice both-empty values: {data.n_empty('dice')}.", ""]
    lines += [comparison_sentence(data, c) for c in data.comparisons]
    if data.comparisons:
        lines += ["", "Verdicts (what this study can tell; see comparisons.csv):"]
        lines += [verdict_line(data, c) for c in data.comparisons]
    lines += ["", "Runs behind each cell:"]
    lines += [f"- {label} / {data_set_name(ds)}: {', '.join(ids)}"
              for (label, ds), ids in data.run_ids.items()]
    if data.notes:
        lines += ["", "Missing or excluded:"] + [f"- {n}" for n in data.notes]
    return "\n".join(lines) + "\n"


def per_class_section(stats: pd.DataFrame, data_set: str, metric: str) -> str:
    """Markdown per-class table (rows classes, columns settings) of one data set and metric."""
    settings = list(dict.fromkeys(stats.columns.get_level_values(0)))
    text = pd.DataFrame({s: [format_cell(m, sd, pm="±") for m, sd in
                             zip(stats[(s, "mean")], stats[(s, "std")], strict=True)]
                         for s in settings}, index=stats.index)
    text.columns.name = "Class"
    title = {"hd95": "HD95", "nsd": "NSD"}.get(metric, "Dice")
    return (f"### Per-class {title}: "
            f"{data_set_name(data_set)}\n\n{markdown_table(text)}\n")


def spearman_section(table: pd.DataFrame) -> str:
    """Markdown of the ROI size vs Dice Spearman correlations."""
    if table.empty:
        return "## ROI size vs Dice (Spearman)\n\nNo runs.\n"
    text = pd.DataFrame({
        "Data set": [data_set_name(d) for d in table["data_set"]],
        "Setting": table["setting"],
        "classes": table["n_classes"].astype(str),
        "r": [f"{r:.3f}" if np.isfinite(r) else EMPTY for r in table["r"]],
        "p (asymptotic)": [format_pvalue(p) for p in table["p"]],
        "p (permutation)": [format_pvalue(p) + (" (exact)" if e else "")
                            for p, e in zip(table["p_perm"], table["exact"], strict=True)],
    })
    text = text.set_index("Data set")
    return ("## ROI size vs Dice (Spearman)\n\nPer class: mean ground-truth volume (mm³) vs "
            "mean Dice; permutation p from all pairings when classes <= 8, else 9,999 random "
            "pairings.\n\n" + markdown_table(text) + "\n")


def collection_section(source: str, runs: pd.DataFrame, problems: list[str],
                       missing: list[str] | None = None) -> str:
    """Header: where the runs came from, how many were collected, every problem and (when the
    grid was given) every expected trial without a usable run."""
    ok = int(runs["problem"].isna().sum())
    lines = [f"Source: {source}", "",
             f"Runs collected: {ok} of {len(runs)} child runs."]
    if problems:
        lines += ["", "Runs not collected (listed, not silently skipped):"]
        lines += [f"- {p}" for p in problems]
    if missing is None:
        lines += ["", "Grid not given (--grid): trials that never logged a run cannot be listed."]
    elif missing:
        lines += ["", "Trials of the grid without a usable run:"] + [f"- {m}" for m in missing]
    else:
        lines += ["", "Every trial of the grid has a collected run."]
    return "\n".join(lines + checkpoint_lines(runs)) + "\n"


def checkpoint_lines(runs: pd.DataFrame) -> list[str]:
    """Per collected run, the parameters its test split was scored with (`eval.checkpoint`:
    `7500 (best_val)`, `12500 (last)`) and its sampling variants (Table 4); empty without
    collected runs. Runs logged before the tag existed show `not recorded`."""
    ok = runs[runs["problem"].isna()] if "problem" in runs else runs.iloc[:0]
    if ok.empty:
        return []
    lines = ["", "Test-time checkpoint per trial (step (eval.checkpoint)), and the sampling "
             "variants scored (Table 4):"]
    for r in ok.sort_values(["trial", "run_id"]).itertuples():
        step = getattr(r, "test_checkpoint", None)
        samplers = getattr(r, "samplers", None)
        lines.append(f"- {r.trial} ({r.run_id}): "
                     f"{step if isinstance(step, str) and step else 'not recorded'}"
                     + (f"; sampled as {samplers}" if isinstance(samplers, str) else ""))
    return lines


def figures_section(written: list[str], skipped: list[str]) -> str:
    lines = ["## Figures", ""] + [f"- {w}" for w in written]
    if skipped:
        lines += ["", "Skipped figures:"] + [f"- {s}" for s in skipped]
    return "\n".join(lines) + "\n"
