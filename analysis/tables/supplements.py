"""Supplement tables: per-class results (rows classes, columns settings) and ROI size vs Dice
(Spearman), LaTeX via `Styler.to_latex`."""

from __future__ import annotations

import numpy as np
import pandas as pd
from diffseg3d.analysis.comparisons import DEFAULT_SAMPLING_NOTE
from diffseg3d.analysis.stats.paired import format_pvalue
from diffseg3d.analysis.table_data import HIGHER_IS_BETTER
from diffseg3d.analysis.tables.latex import (
    BOLD,
    EMPTY,
    FOOTNOTESIZE,
    HD95_DEFINITION,
    METRIC_HEADERS,
    NAME_COLUMNS,
    data_set_name,
    escape_latex,
    format_cell,
    plain_table_latex,
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
    exact = bool(table["exact"].all()) if len(table) else True
    cap = ("Spearman correlation between ROI size (mean ground-truth volume per class, mm$^3$) "
           "and mean Dice per class. p: asymptotic (scipy); p (perm.): permutation test "
           + ("over all pairings (exact)." if exact else
              "(exact up to 8 classes, else 9,999 random pairings with a fixed seed)."))
    return plain_table_latex(text, caption=f"{cap} {escape_latex(DEFAULT_SAMPLING_NOTE)}",
                             label="tab:roi-vs-dice", column_format="llcccc",
                             escape_columns=NAME_COLUMNS)
