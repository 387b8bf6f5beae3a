"""Per model: what its samples are worth and how good its uncertainty is, with paired tests.

From `Collection.uncertainty.frame` (one row per run, case and class; `uncertainty_runs`):

- `uncertainty_summary`: per data set and setting, the mean and std over cases (of each case's
  class mean, seeds averaged first, as the paired tables) of the ensemble Dice, the sample-Dice
  spread, diversity, GED, ECE (inside the evaluation region, and over all voxels), and the
  AUROC / AP of entropy and disagreement for the wrong voxels. U-Net rows score their softmax:
  no samples, so sample-set and disagreement columns are empty.
- `uncertainty_comparisons`: for each table of `comparisons.TABLES` whose two settings both
  logged these scores, each `COMPARED_METRICS` metric paired per case like the table's Dice
  (`pairing.pair_settings`, `stats.paired_test`, the bootstrap interval, mde80, the verdict),
  Holm across all comparisons of that table and data set. They go into `comparisons.csv` with
  table `<table id>/<metric>`.

Runs without these artifacts (older runs, diffusion with `eval.samples` 1) appear in neither;
`not_logged` names their settings.
"""

from __future__ import annotations

import math

import pandas as pd
from diffseg3d.analysis.comparisons import TABLES, add_setting_column, runs_for_table
from diffseg3d.analysis.pairing import pair_settings, per_case_scores
from diffseg3d.analysis.stats import ALPHA
from diffseg3d.analysis.stats.paired import holm, paired_test
from diffseg3d.analysis.stats.verdict import classify
from diffseg3d.analysis.table_data import data_set_order, small_study_stats
from diffseg3d.analysis.tables.comparisons_csv import columns as comparison_columns
from diffseg3d.analysis.tables.comparisons_csv import interval_prefix

#: Summary metrics, in table order: column -> (header, higher is better).
METRICS: dict[str, tuple[str, bool]] = {
    "dice_ensemble": ("Dice (ensemble)", True),
    "sample_dice_std": ("Dice spread", False),
    "diversity": ("Diversity", True),
    "ged": ("GED", False),
    "ece": ("ECE", False),
    "ece_all": ("ECE (all voxels)", False),
    "auroc_entropy": ("AUROC (entropy)", True),
    "ap_entropy": ("AP (entropy)", True),
    "auroc_disagreement": ("AUROC (disagr.)", True),
    "ap_disagreement": ("AP (disagr.)", True),
}
#: Metrics paired between two settings (`uncertainty_comparisons`).
COMPARED_METRICS: tuple[str, ...] = ("ged", "diversity", "ece", "auroc_entropy", "ap_entropy")
SUMMARY_COLUMNS: tuple[str, ...] = (
    "data_set", "setting", "samples", "n_runs", "n_cases",
    *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")))


def with_setting(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (uncertainty rows) with its `setting` column; an empty frame gets an empty one."""
    if frame.empty:
        return frame.assign(setting=pd.Series(dtype=object))
    return add_setting_column(frame)


def uncertainty_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """`SUMMARY_COLUMNS`, one row per (data set, setting) with uncertainty rows."""
    rows = with_setting(frame)
    out = []
    for (data_set, setting), sub in rows.groupby(["data_set", "setting"], sort=False):
        row = {"data_set": data_set, "setting": setting,
               "samples": int(pd.to_numeric(sub["samples"]).max()),
               "n_runs": int(sub["run_id"].nunique()), "n_cases": int(sub["case"].nunique())}
        for metric in METRICS:
            scores = per_case_scores(sub.assign(**{metric: pd.to_numeric(sub[metric])}), metric)
            row[f"{metric}_mean"] = float(scores.mean()) if len(scores) else math.nan
            row[f"{metric}_std"] = float(scores.std(ddof=1)) if len(scores) > 1 else math.nan
        out.append(row)
    table = pd.DataFrame(out, columns=list(SUMMARY_COLUMNS))
    order = table["data_set"].map(data_set_order)
    return (table.assign(_o=order).sort_values(["_o", "setting"]).drop(columns="_o")
            .reset_index(drop=True))


def uncertainty_comparisons(frame: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """`comparisons.csv` rows (`comparisons_csv.columns(alpha)`) of the paired uncertainty
    metrics, table `<table id>/<metric>`; empty when no two compared settings logged them."""
    rows = []
    if frame.empty:
        return pd.DataFrame(columns=list(comparison_columns(alpha)))
    ci = interval_prefix(alpha)
    for spec in TABLES:
        feeding = runs_for_table(frame, spec)
        ref_value, ref_label = spec.levels[0]
        for value, label in spec.levels[1:]:
            for data_set in sorted(feeding["data_set"].unique(), key=data_set_order):
                in_ds = feeding[feeding["data_set"] == data_set]
                a, b = in_ds[in_ds[spec.axis] == ref_value], in_ds[in_ds[spec.axis] == value]
                group = []
                for metric in COMPARED_METRICS:
                    pairing = pair_settings(_numeric(a, metric), _numeric(b, metric), metric)
                    if len(pairing.cases) < 2:
                        continue  # one side has no value (a U-Net has no GED)
                    test = paired_test(pairing.a, pairing.b, alpha)
                    extra = small_study_stats(pairing, alpha)
                    mixed = extra["mixed"]
                    group.append({
                        "table": f"{spec.table_id}/{metric}", "data_set": data_set,
                        "axis": spec.axis, "a": ref_label, "b": label, "n_cases": test.n,
                        "n_seeds": extra["n_seeds"], "mean_a": test.mean_a,
                        "mean_b": test.mean_b, "mean_diff": test.mean_diff,
                        "sd_diff": extra["sd_diff"], f"{ci}_low": extra["interval"].low,
                        f"{ci}_high": extra["interval"].high,
                        "ci_note": extra["interval"].note, "p_ttest": test.t_pvalue,
                        "p_wilcoxon": test.wilcoxon_pvalue,
                        "mixed_diff": mixed.estimate, "mixed_se": mixed.std_error,
                        "p_mixed": mixed.pvalue, "mixed_sd_case": mixed.sd_case,
                        "mixed_sd_seed": mixed.sd_seed, "mixed_sd_residual": mixed.sd_residual,
                        "mixed_note": mixed.note, "mde80": extra["mde80"],
                        "verdict": classify(test.mean_diff, test.t_pvalue, extra["mde80"],
                                            extra["interval"].low, extra["interval"].high,
                                            alpha),
                    })
                t_holm = holm([r["p_ttest"] for r in group])
                w_holm = holm([r["p_wilcoxon"] for r in group])
                for i, r in enumerate(group):
                    r["p_holm"], r["p_wilcoxon_holm"] = float(t_holm[i]), float(w_holm[i])
                rows += group
    return pd.DataFrame(rows, columns=list(comparison_columns(alpha)))


def not_logged(runs: pd.DataFrame, frame: pd.DataFrame) -> list[str]:
    """Settings of collected runs without uncertainty rows: `<data set>: <setting>`, sorted."""
    ok = runs[runs["problem"].isna() & runs["setting"].notna()]
    have = set(frame["run_id"]) if len(frame) else set()
    missing = ok[~ok["run_id"].isin(have)]
    return sorted({f"{d}: {s}" for d, s in zip(missing["data_set"], missing["setting"],
                                                strict=True)})


def _numeric(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    return rows.assign(**{metric: pd.to_numeric(rows[metric], errors="coerce")})


def higher_is_better(metric: str) -> bool:
    return METRICS[metric][1]

