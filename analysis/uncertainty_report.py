"""The samples-and-uncertainty and compute-cost outputs of `diffseg3d tables`, in one call.

Writes `samples_uncertainty.tex`, `cost.tex`, `figures/reliability_diagrams`,
`figures/dice_vs_inference_cost` and `figures/uncertainty_vs_error`, appends the paired
uncertainty comparisons to `comparisons.csv` (table `<table id>/<metric>`), and returns the
summary.md sections "Samples and uncertainty" and "Compute cost". Settings whose runs did not
log these (older runs; diffusion with `eval.samples` 1) are named as "not logged".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
from diffseg3d.analysis.collect import Collection
from diffseg3d.analysis.figures.uncertainty import (
    dice_vs_inference_cost,
    reliability_diagrams,
    uncertainty_vs_error,
)
from diffseg3d.analysis.samples_uncertainty import (
    METRICS,
    not_logged,
    uncertainty_comparisons,
    uncertainty_summary,
)
from diffseg3d.analysis.stats import ALPHA
from diffseg3d.analysis.stats.paired import format_pvalue
from diffseg3d.analysis.summary import markdown_table
from diffseg3d.analysis.tables.comparisons_csv import interval_prefix
from diffseg3d.analysis.tables.latex import write_text
from diffseg3d.analysis.tables.uncertainty import (
    REGION_NOTE,
    cost_frame,
    cost_latex,
    uncertainty_frame,
    uncertainty_latex,
)
from diffseg3d.analysis.trial_cost import cost_summary, dice_by_inference_cost
from diffseg3d.analysis.trial_cost import not_logged as cost_not_logged

#: Most slices (runs) in the uncertainty-against-error figure.
MAX_SLICES = 6


@dataclasses.dataclass
class UncertaintyOutputs:
    written: list[Path] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    sections: list[str] = dataclasses.field(default_factory=list)


def write_uncertainty_outputs(collection: Collection, runs: pd.DataFrame, out: Path,
                              alpha: float = ALPHA) -> UncertaintyOutputs:
    """Everything in the module docstring; `runs` is `Collection.runs` with its `setting`."""
    result = UncertaintyOutputs()
    fig_dir = out / "figures"
    frame = collection.uncertainty.frame
    summary = uncertainty_summary(frame)
    comparisons = uncertainty_comparisons(frame, alpha)
    if len(comparisons):
        path = out / "comparisons.csv"
        comparisons.to_csv(path, mode="a", header=not path.exists(), index=False, na_rep="")
    missing = not_logged(runs, frame)
    unscored = _unscored_methods(runs, frame)
    if summary.empty:
        result.skipped.append("samples and uncertainty: no run logged uncertainty_per_case.csv")
    else:
        result.written.append(write_text(out / "samples_uncertainty.tex",
                                         uncertainty_latex(summary, unscored)))
    result.sections.append(_uncertainty_section(summary, comparisons, missing, alpha,
                                                unscored))

    labelled = runs[runs["problem"].isna()]
    figures = [
        ("reliability diagrams", reliability_diagrams(
            collection.uncertainty.reliability, labelled, fig_dir / "reliability_diagrams")),
        ("Dice against inference cost", dice_vs_inference_cost(
            dice_by_inference_cost(collection.run_metrics, labelled),
            fig_dir / "dice_vs_inference_cost")),
        ("uncertainty against error", uncertainty_vs_error(
            _slices(collection, labelled), fig_dir / "uncertainty_vs_error")),
    ]
    for name, paths in figures:
        if paths:
            result.written += paths
        else:
            result.skipped.append(f"{name}: not logged by any run")

    cost = cost_summary(collection.run_metrics, labelled)
    if cost.empty:
        result.skipped.append("cost table: no run logged cost_* metrics")
    else:
        result.written.append(write_text(out / "cost.tex", cost_latex(cost)))
    result.sections.append(_cost_section(cost, cost_not_logged(labelled, cost)))
    return result


#: Methods whose trials never log sample or uncertainty scores: a row reads "not logged".
UNSCORED_METHODS = ("nnunet",)


def _unscored_methods(runs: pd.DataFrame, frame: pd.DataFrame) -> tuple[tuple[str, str], ...]:
    """(data set, setting) of collected runs of `UNSCORED_METHODS` without uncertainty rows."""
    ok = runs[runs["problem"].isna() & runs["method"].isin(UNSCORED_METHODS)]
    have = set(frame["run_id"]) if len(frame) else set()
    ok = ok[~ok["run_id"].isin(have)]
    return tuple(sorted(set(zip(ok["data_set"], ok["setting"], strict=True))))


def _slices(collection: Collection, runs: pd.DataFrame) -> list[tuple[str, dict]]:
    named = runs.set_index("run_id")
    keep = [(f"{named.at[r, 'setting']} ({named.at[r, 'data_set']})", s)
            for r, s in collection.uncertainty.slices.items() if r in named.index]
    return sorted(keep, key=lambda item: item[0])[:MAX_SLICES]


def _uncertainty_section(summary: pd.DataFrame, comparisons: pd.DataFrame,
                         missing: list[str], alpha: float,
                         unscored: tuple[tuple[str, str], ...] = ()) -> str:
    parts = ["## Samples and uncertainty\n"]
    if summary.empty:
        parts.append("Not logged: no run wrote `uncertainty_per_case.csv` (runs from before it "
                     "existed, or diffusion trials with `eval.samples: 1` and no U-Net).\n")
    else:
        parts.append("Per model, mean (std) over test cases of each case's mean over foreground "
                     "classes; N samples per case (U-Net: its softmax). GED = 2 E[d(S, Y)] - "
                     "E[d(S, S')] with d = 1 - IoU (two empty masks: d = 0); diversity = mean "
                     "pairwise d between samples. " + REGION_NOTE + ".\n\n"
                     + markdown_table(uncertainty_frame(summary, tuple(METRICS), unscored)
                                      .set_index("Data set")) + "\n")
    if len(comparisons):
        ci = interval_prefix(alpha)
        parts.append("Paired comparisons per case (in `comparisons.csv`, table "
                     "`<table>/<metric>`; Holm over the metrics of each pair):\n")
        for r in comparisons.itertuples(index=False):
            row = r._asdict()
            parts.append(f"- {r.table}, {r.data_set}: {r.a} {r.mean_a:.3f} vs {r.b} "
                         f"{r.mean_b:.3f} (difference {r.mean_diff:+.3f}, {ci} "
                         f"[{row[f'{ci}_low']:+.3f}, {row[f'{ci}_high']:+.3f}], p = "
                         f"{format_pvalue(r.p_ttest)}, p_holm = {format_pvalue(r.p_holm)}, "
                         f"{r.n_cases} cases): {r.verdict}.")
        parts.append("")
    if missing:
        parts.append("Not logged (no uncertainty scores): " + "; ".join(missing) + ".\n")
    return "\n".join(parts)


def _cost_section(cost: pd.DataFrame, missing: list[str]) -> str:
    parts = ["## Compute cost\n"]
    if cost.empty:
        parts.append("Not logged: no run logged `cost_*` metrics (runs from before they "
                     "existed).\n")
    else:
        parts.append("Training TFLOP (one compiled train step x steps trained), training wall "
                     "time, inference GFLOP and measured seconds per case for one sample and "
                     "the N-sample ensemble, mean test Dice; means over seeds.\n\n"
                     + markdown_table(cost_frame(cost).set_index("Data set")) + "\n")
    if missing:
        parts.append("Not logged (no cost metrics): " + "; ".join(missing) + ".\n")
    return "\n".join(parts)
