"""The numbers behind each paper table: cell statistics, comparisons and what is missing.

Rendering (LaTeX in `tables.py`, Markdown in `summary.py`) only formats what is computed here,
so both show identical numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
from diffseg3d.analysis.comparisons import TableSpec, runs_for_table
from diffseg3d.analysis.pairing import Pairing, count_empty, pair_settings, per_case_scores
from diffseg3d.analysis.stats import ALPHA
from diffseg3d.analysis.stats.bootstrap import BootstrapInterval, bootstrap_interval
from diffseg3d.analysis.stats.mixed_model import MixedResult, mixed_model_test
from diffseg3d.analysis.stats.paired import PairedTest, holm, paired_test
from diffseg3d.analysis.stats.power import mde80
from diffseg3d.analysis.stats.verdict import classify, verdict_sentence

# The paper's column order; other data sets follow alphabetically.
PAPER_DATA_SETS: tuple[str, ...] = ("prostate-mr", "amos-ct")


def data_set_order(name: str) -> tuple[int, str]:
    """Sort key: prostate MR, abdominal CT, then the rest by name."""
    return (PAPER_DATA_SETS.index(name) if name in PAPER_DATA_SETS else len(PAPER_DATA_SETS),
            name)


METRICS: tuple[str, ...] = ("dice", "hd95")
HIGHER_IS_BETTER: dict[str, bool] = {"dice": True, "hd95": False, "nsd": True}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (setting, data set) cell: mean and std (ddof 1) over per-case scores.

    n_cases: cases with a finite score; n_empty: (run, case, class) NaN entries excluded.
    """

    mean: float
    std: float
    n_cases: int
    n_empty: int


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Compared level vs the table's reference level on one data set (per-case Dice).

    test.t_pvalue / test.wilcoxon_pvalue: unadjusted (the paper reports the raw t-test p).
    t_pvalue_holm / wilcoxon_pvalue_holm: Holm-adjusted across the table's comparisons.
    sd_diff: standard deviation (ddof 1) of the per-case paired differences (b - a).
    interval: BCa bootstrap (1 - alpha) interval of the mean paired difference over cases.
    mixed: the mixed model with case and seed effects (NaN with its reason under one seed).
    mde80: the smallest mean paired difference detected with 80% power (`stats.power`).
    cases, differences: the paired case ids and their differences b - a (for the figures).
    """

    data_set: str
    reference: str
    compared: str
    test: PairedTest
    t_pvalue_holm: float
    wilcoxon_pvalue_holm: float
    only_reference: tuple[str, ...]
    only_compared: tuple[str, ...]
    run_ids_reference: tuple[str, ...]
    run_ids_compared: tuple[str, ...]
    alpha: float
    sd_diff: float = float("nan")
    interval: BootstrapInterval = BootstrapInterval(float("nan"), float("nan"), 1 - ALPHA)
    mixed: MixedResult | None = None
    mde80: float = float("nan")
    n_seeds: int = 0
    cases: tuple[str, ...] = ()
    differences: tuple[float, ...] = ()

    @property
    def verdict(self) -> str:
        """One of `stats.verdict.VERDICTS` (significant / could have seen / too small / none)."""
        return classify(self.test.mean_diff, self.test.t_pvalue, self.mde80,
                        self.interval.low, self.interval.high, self.alpha)

    @property
    def verdict_text(self) -> str:
        """The verdict with its numbers, one clause (summary.md)."""
        return verdict_sentence(self.verdict, self.test.mean_diff, self.mde80,
                                self.interval.low, self.interval.high, self.interval.confidence)

    @property
    def significant(self) -> bool:
        """Raw paired t-test p < alpha: the paper's criterion (section 4, alpha = 0.01)."""
        return bool(np.isfinite(self.test.t_pvalue) and self.test.t_pvalue < self.alpha)

    @property
    def significant_holm(self) -> bool:
        """Holm-adjusted t-test p < alpha: the stricter reading over the table's comparisons."""
        return bool(np.isfinite(self.t_pvalue_holm) and self.t_pvalue_holm < self.alpha)


@dataclasses.dataclass(frozen=True)
class TableData:
    """Everything one table shows.

    levels: (value, label) rows in order (spec levels, then any extra values found in runs).
    data_sets: data set names with at least one run in this table, sorted.
    cells: (label, data set, metric) -> Cell, only where runs exist.
    run_ids: (label, data set) -> run ids behind that cell.
    notes: human-readable gaps (levels without runs, unpaired cases), for caption and summary.
    variant_labels: labels of the spec's variant rows (`TableSpec.variant_rows`), shown after
      the levels; their cells and run ids sit in `cells` and `run_ids` beside the levels', but
      they are never compared.
    not_logged: (variant label, data set) whose level has runs none of which logged the variant.
    """

    spec: TableSpec
    levels: tuple[tuple[Any, str], ...]
    data_sets: tuple[str, ...]
    cells: dict[tuple[str, str, str], Cell]
    run_ids: dict[tuple[str, str], tuple[str, ...]]
    comparisons: tuple[Comparison, ...]
    n_seeds: int
    notes: tuple[str, ...]
    variant_labels: tuple[str, ...] = ()
    not_logged: frozenset[tuple[str, str]] = frozenset()

    def best(self, data_set: str, metric: str) -> set[str]:
        """Labels of the best mean in a column (ties all best); empty when < 2 cells."""
        labels = [label for _, label in self.levels] + list(self.variant_labels)
        means = {label: self.cells[(label, data_set, metric)].mean for label in labels
                 if (label, data_set, metric) in self.cells
                 and np.isfinite(self.cells[(label, data_set, metric)].mean)}
        if len(means) < 2:
            return set()
        target = max(means.values()) if HIGHER_IS_BETTER[metric] else min(means.values())
        return {label for label, m in means.items() if np.isclose(m, target, rtol=0, atol=1e-12)}

    def comparison(self, data_set: str, label: str) -> Comparison | None:
        for comp in self.comparisons:
            if comp.data_set == data_set and comp.compared == label:
                return comp
        return None

    @property
    def absent_paper_data_sets(self) -> tuple[str, ...]:
        """The paper's data sets for this table that have no runs here."""
        return tuple(d for d in self.spec.paper_data_sets if d not in self.data_sets)

    def n_empty(self, metric: str) -> int:
        return sum(c.n_empty for (_, _, m), c in self.cells.items() if m == metric)


def _cell(rows: pd.DataFrame, metric: str) -> Cell:
    scores = per_case_scores(rows, metric)
    std = float(scores.std(ddof=1)) if len(scores) > 1 else float("nan")
    mean = float(scores.mean()) if len(scores) else float("nan")
    return Cell(mean, std, len(scores), count_empty(rows, metric))


def _levels(spec: TableSpec, rows: pd.DataFrame) -> tuple[tuple[Any, str], ...]:
    known = [value for value, _ in spec.levels + spec.shown_levels]
    extra = sorted(v for v in rows[spec.axis].dropna().unique() if v not in known)
    return spec.levels + tuple((v, str(v)) for v in extra)


def small_study_stats(pairing: Pairing, alpha: float = ALPHA) -> dict[str, Any]:
    """`Comparison` fields beyond the paper's tests: sd_diff, the bootstrap interval, the mixed
    model, mde80, the seed count and the paired differences."""
    diff = pairing.b - pairing.a
    sd_diff = float(np.std(diff, ddof=1)) if len(diff) > 1 else float("nan")
    return dict(sd_diff=sd_diff, interval=bootstrap_interval(pairing.a, pairing.b, alpha),
                mixed=mixed_model_test(pairing.long), mde80=mde80(sd_diff, len(diff), alpha),
                n_seeds=pairing.n_seeds, cases=pairing.cases,
                differences=tuple(float(d) for d in diff))


def _variant_cells(rows: pd.DataFrame, sampling: pd.DataFrame | None, spec: TableSpec,
                   data_sets: tuple[str, ...], cells: dict, run_ids: dict, notes: list[str]
                   ) -> frozenset[tuple[str, str]]:
    """Fill `cells` and `run_ids` for `spec.variant_rows` from the sampling-variant rows of the
    level's own runs; returns the (label, data set) that no run of the level logged."""
    missing = set()
    for value, variant, label in spec.variant_rows:
        for data_set in data_sets:
            level = rows[(rows[spec.axis] == value) & (rows["data_set"] == data_set)]
            if level.empty:
                continue
            wanted = set(level["run_id"])
            sub = (sampling[(sampling["sampling"] == variant) & sampling["run_id"].isin(wanted)]
                   if sampling is not None and len(sampling) else level.iloc[:0])
            lacking = ", ".join(sorted(wanted - set(sub["run_id"])))
            if sub.empty:
                missing.add((label, data_set))
                notes.append(f"{label} on {data_set}: {variant} not logged by run(s) {lacking}")
                continue
            run_ids[(label, data_set)] = tuple(sorted(sub["run_id"].unique()))
            for metric in METRICS:
                cells[(label, data_set, metric)] = _cell(sub, metric)
            if lacking:
                notes.append(f"{label} on {data_set}: {variant} not logged by run(s) {lacking}, "
                             "which its cells leave out")
    return frozenset(missing)


def compute_table(frame: pd.DataFrame, spec: TableSpec, alpha: float = ALPHA,
                  sampling: pd.DataFrame | None = None) -> TableData:
    """Cells, comparisons (each level vs the first, per data set, Holm across all) and notes.

    frame: tidy rows (all runs); the rows feeding `spec` are selected by `runs_for_table`.
    sampling: the runs' sampling-variant rows (`Collection.sampling`) for `spec.variant_rows`;
      None: none logged (each such row reads not logged).
    """
    rows = runs_for_table(frame, spec)
    levels = _levels(spec, rows)
    data_sets = tuple(sorted(rows["data_set"].unique(), key=data_set_order))
    cells, run_ids, notes, raw = {}, {}, [], []
    for value, label in levels:
        for data_set in data_sets:
            sub = rows[(rows[spec.axis] == value) & (rows["data_set"] == data_set)]
            if sub.empty:
                notes.append(f"no finished runs for {label} on {data_set}")
                continue
            run_ids[(label, data_set)] = tuple(sorted(sub["run_id"].unique()))
            for metric in METRICS:
                cells[(label, data_set, metric)] = _cell(sub, metric)
    ref_value, ref_label = levels[0]
    for value, label in levels[1:]:
        for data_set in data_sets:
            if (label, data_set) not in run_ids or (ref_label, data_set) not in run_ids:
                continue
            in_ds = rows["data_set"] == data_set
            pairing = pair_settings(rows[in_ds & (rows[spec.axis] == ref_value)],
                                    rows[in_ds & (rows[spec.axis] == value)], "dice")
            for side, cases in ((ref_label, pairing.only_a), (label, pairing.only_b)):
                if cases:
                    notes.append(f"{data_set}: {len(cases)} case(s) only in {side}, excluded "
                                 f"from the pair: {', '.join(cases)}")
            raw.append((data_set, label, pairing, paired_test(pairing.a, pairing.b, alpha)))
    t_holm = holm([r[3].t_pvalue for r in raw])
    w_holm = holm([r[3].wilcoxon_pvalue for r in raw])
    comparisons = tuple(
        Comparison(data_set, ref_label, label, test, float(t_holm[i]), float(w_holm[i]),
                   pairing.only_a, pairing.only_b, run_ids[(ref_label, data_set)],
                   run_ids[(label, data_set)], alpha, **small_study_stats(pairing, alpha))
        for i, (data_set, label, pairing, test) in enumerate(raw)
    )
    n_seeds = int(rows.groupby(["data_set", spec.axis])["seed"].nunique().max()) if len(rows) else 0
    not_logged = _variant_cells(rows, sampling, spec, data_sets, cells, run_ids, notes)
    shown = []
    for value, label in spec.shown_levels:  # cells only, and only where runs have the value
        for data_set in data_sets:
            sub = rows[(rows[spec.axis] == value) & (rows["data_set"] == data_set)]
            if len(sub):
                run_ids[(label, data_set)] = tuple(sorted(sub["run_id"].unique()))
                cells.update({(label, data_set, m): _cell(sub, m) for m in METRICS})
        if any(lab == label for lab, _ in run_ids):
            shown.append(label)
    return TableData(spec, levels, data_sets, cells, run_ids, comparisons, n_seeds, tuple(notes),
                     tuple(label for _, _, label in spec.variant_rows) + tuple(shown),
                     not_logged)


def per_class_stats(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per-class statistics of one data set: index class, columns MultiIndex (setting, stat).

    rows: tidy rows of one data set with a `setting` column. Per (setting, case, class) the
    mean over runs (seeds) first, then over cases: stat in {mean, std (ddof 1), n (cases with
    a value), empty ((run, case) entries with NaN, i.e. an empty mask, excluded)}.
    """
    per_case = rows.groupby(["setting", "class", "case"])[metric].mean()
    grouped = per_case.groupby(level=["setting", "class"])
    empty = rows[metric].isna().groupby([rows["setting"], rows["class"]]).sum()
    table = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1),
                          "n": grouped.count(), "empty": empty})
    return table.unstack("setting").swaplevel(axis=1).sort_index(axis=1)
