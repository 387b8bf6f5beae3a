"""Everything `diffseg3d tables` writes into one output folder, from one `Collection`.

Files: the five paper tables (`table1_recycling.tex`, ...) and Table 4 beyond the paper
(`table4_sampling_variance.tex`, from `Collection.sampling`), with nnU-Net runs both models
against nnU-Net (`table2_nnunet.tex`, `comparisons.NNUNET_TABLE`), Table 3c by time input beyond the
paper when runs feed it (`table3c_time_input.tex`, `tables.time_input`), per-class supplements
(`supplement_{dice,hd95,nsd}_<data set>.tex`; NSD when the runs scored it, its tolerance in the
caption), `roi_vs_dice_spearman.tex`, the diffusion sampling tables (`sampling_steps.tex`: Dice
per sampling step, with `figures/dice_per_sampling_step`; `ensemble.tex`: 1 vs N samples, when
runs logged an ensemble), the samples-and-uncertainty and cost tables with their figures
(`samples_uncertainty.tex`, `cost.tex`, `figures/reliability_diagrams`,
`figures/dice_vs_inference_cost`, `figures/uncertainty_vs_error`: `uncertainty_report`),
`summary.md` (with one verdict per comparison), `comparisons.csv`
(every comparison's statistics: `tables.comparisons_csv`), `tidy.csv`, `runs.csv` and
`run_metrics.csv` (the numbers and runs behind everything), and `figures/` (PNG + PDF; per table
with comparisons `paired_differences_<table id>`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from diffseg3d.analysis.collect import Collection
from diffseg3d.analysis.comparisons import (
    NNUNET_TABLE,
    SAMPLING_TABLE,
    TABLES,
    add_setting_column,
)
from diffseg3d.analysis.examples import Example
from diffseg3d.analysis.figures.curves import dice_by_sampling_step, training_curves
from diffseg3d.analysis.figures.montage import prediction_montage
from diffseg3d.analysis.figures.paired_differences import paired_differences_figure
from diffseg3d.analysis.figures.per_class import per_class_dice_boxplot, roi_dice_scatter
from diffseg3d.analysis.figures.saving import save
from diffseg3d.analysis.sampling_chain import ensemble_dice, step_dice, summary_section
from diffseg3d.analysis.stats import ALPHA
from diffseg3d.analysis.stats.spearman import roi_dice_spearman
from diffseg3d.analysis.summary import (
    collection_section,
    figures_section,
    per_class_section,
    spearman_section,
    table_section,
    verdicts_section,
)
from diffseg3d.analysis.table_data import compute_table, data_set_order, per_class_stats
from diffseg3d.analysis.tables import time_input as time_input_table
from diffseg3d.analysis.tables.comparisons_csv import write_comparisons_csv
from diffseg3d.analysis.tables.latex import write_text
from diffseg3d.analysis.tables.main_table import main_table_latex
from diffseg3d.analysis.tables.sampling import ensemble_latex, sampling_steps_latex
from diffseg3d.analysis.tables.supplements import per_class_latex, spearman_latex
from diffseg3d.analysis.uncertainty_report import write_uncertainty_outputs


@dataclasses.dataclass
class Report:
    """Paths written and figures skipped (with reasons)."""

    written: list[Path] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _supplement_metrics(rows: pd.DataFrame) -> tuple[str, ...]:
    """dice and hd95, and nsd when some run of these rows scored it (older runs did not)."""
    has_nsd = "nsd" in rows.columns and bool(rows["nsd"].notna().any())
    return ("dice", "hd95", "nsd") if has_nsd else ("dice", "hd95")


def write_report(
    collection: Collection,
    out: Path | str,
    *,
    history: pd.DataFrame | None = None,
    history_skip_reason: str = "no metric history source (CSV folder)",
    load_example: Callable[[str], Example | str] | None = None,
    missing: list[str] | None = None,
    alpha: float = ALPHA,
    n_resamples: int = 9999,
) -> Report:
    """Write tables, supplements, figures and summary.md for `collection` into `out`.

    history: `run_id, key, step, value` training curves (None: skipped with
      `history_skip_reason`). load_example: data set -> montage arrays or a skip reason (None:
      montage skipped). missing: expected trials without a usable run (`expected`), None when
      no grid was given.
    """
    out = Path(out)
    report = Report()
    frame = add_setting_column(collection.frame)
    runs = collection.runs.copy()
    ok_runs = runs[runs["problem"].isna()]
    runs["setting"] = None
    if len(ok_runs):
        runs.loc[ok_runs.index, "setting"] = add_setting_column(
            ok_runs.assign(**{"class": None}))["setting"]
    data_sets = sorted(frame["data_set"].unique(), key=data_set_order)

    sections = ["# diffseg3d results\n", collection_section(collection.source, runs,
                                                           collection.problems, missing),
                verdicts_section()]
    fig_dir = out / "figures"
    # Table 4 reads the runs' sampling-variant rows, not their one test evaluation each.
    tables = [(spec, frame) for spec in TABLES] + [(SAMPLING_TABLE, collection.sampling)]
    # Beyond the paper, only when nnU-Net runs exist: both models against nnU-Net.
    if (frame["method"] == "nnunet").any():
        tables.append((NNUNET_TABLE, frame))
    computed = []
    for spec, rows in tables:
        # Variant rows (Table 3a's noise model under fixed_small) also read the sampling rows.
        data = compute_table(rows, spec, alpha, sampling=collection.sampling)
        computed.append(data)
        report.written.append(write_text(out / f"{spec.table_id}.tex", main_table_latex(data)))
        sections.append(table_section(data))
        fig = paired_differences_figure(data)
        if fig is None:
            report.skipped.append(f"paired differences {spec.table_id}: no comparison")
        else:
            report.written += save(fig, fig_dir / f"paired_differences_{spec.table_id}")
    # Table 3c by time input (beyond the paper): only when runs carry its labels. Its Holm
    # adjustment spans both time inputs (one table), and so does comparisons.csv's p_holm.
    time_input = time_input_table.compute_time_input_table(frame, alpha)
    holm_override = {}
    if time_input is not None:
        report.written.append(write_text(out / f"{time_input_table.TABLE_ID}.tex",
                                         time_input_table.time_input_latex(time_input)))
        sections.append(time_input_table.summary_section(time_input))
        computed += [time_input.tables[t] for t in time_input_table.TIME_INPUTS]
        holm_override = {(time_input.tables[t].spec.table_id, d, "5"): p
                         for (t, d), p in time_input.holm.items()}
    report.written.append(write_comparisons_csv(computed, out / "comparisons.csv", alpha,
                                                p_holm=holm_override))

    sections.append("## Per-class results (supplement)\n")
    for data_set in data_sets:
        rows = frame[frame["data_set"] == data_set]
        for metric in _supplement_metrics(rows):
            stats = per_class_stats(rows, metric)
            path = out / f"supplement_{metric}_{_safe(data_set)}.tex"
            tolerances = rows.loc[rows["nsd"].notna(), "nsd_tolerance_mm"] if metric == "nsd" \
                else ()
            report.written.append(write_text(path, per_class_latex(stats, data_set, metric,
                                                                   tolerances)))
            sections.append(per_class_section(stats, data_set, metric))

    spearman = roi_dice_spearman(frame, n_resamples=n_resamples)
    sections.append(spearman_section(spearman))
    report.written.append(write_text(out / "roi_vs_dice_spearman.tex", spearman_latex(spearman)))

    steps = step_dice(collection.run_metrics, runs)
    ensembles = ensemble_dice(collection.run_metrics, runs)
    sections.append(summary_section(steps, ensembles))
    if steps.empty:
        report.skipped.append("Dice per sampling step: no run logged test_dice_step_<k>")
    else:
        report.written.append(write_text(out / "sampling_steps.tex", sampling_steps_latex(steps)))
        report.written += dice_by_sampling_step(steps, fig_dir / "dice_per_sampling_step")
    if not ensembles.empty:
        report.written.append(write_text(out / "ensemble.tex", ensemble_latex(ensembles)))
    extra = write_uncertainty_outputs(collection, runs, out, alpha)
    sections += extra.sections
    report.written += extra.written
    report.skipped += extra.skipped
    for data_set in data_sets:
        tag = _safe(data_set)
        report.written += per_class_dice_boxplot(frame, data_set,
                                                 fig_dir / f"dice_per_class_{tag}")
        report.written += roi_dice_scatter(frame, spearman, data_set,
                                           fig_dir / f"roi_vs_dice_{tag}")
        example = load_example(data_set) if load_example else "no prediction source"
        if isinstance(example, str):
            report.skipped.append(f"montage {data_set}: {example}")
        else:
            report.written += prediction_montage(
                example.image, example.panels, example.class_names,
                fig_dir / f"examples_{tag}", title=example.title)
    if history is None or history.empty:
        reason = history_skip_reason if history is None else "no loss/val_dice history logged"
        report.skipped.append(f"training curves: {reason}")
    else:
        report.written += training_curves(history, runs.dropna(subset=["setting"]),
                                          fig_dir / "training_curves")

    frame.to_csv(out / "tidy.csv", index=False)
    runs.to_csv(out / "runs.csv", index=False)
    collection.run_metrics.to_csv(out / "run_metrics.csv", index=False)
    report.written += [out / "tidy.csv", out / "runs.csv", out / "run_metrics.csv"]
    rel = [str(p.relative_to(out)) for p in report.written if p.parent == fig_dir]
    sections.append(figures_section(rel, report.skipped))
    report.written.append(write_text(out / "summary.md", "\n".join(sections)))
    return report
