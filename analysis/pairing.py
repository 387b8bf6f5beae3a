"""Pairing two settings on the same test cases (DESIGN.md, "Statistics and tables").

The pairing unit is the test case: per run, a case's score is the mean over its foreground
classes (NaN classes, i.e. empty masks, skipped); per setting, the mean over its runs (seeds).
Two settings are then paired on the cases both have; cases only one has are reported, never
imputed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd


def per_case_scores(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Per-case score of one setting: (runs x cases x classes) -> (cases,), indexed by case.

    Class mean first (skipping NaN), then the mean over runs (seeds, skipping runs where the
    case was all-NaN). Cases whose every value is NaN are dropped.
    """
    per_run = rows.groupby(["run_id", "case"], sort=True)[metric].mean()
    per_case = per_run.groupby(level="case", sort=True).mean()
    return per_case.dropna()


def per_seed_case_scores(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per-(seed, case) score of one setting: class mean per run, then the mean over runs of the
    same seed (normally one). Columns `seed, case, score, run` (`run`: the run id(s) behind the
    score, comma-joined); all-NaN entries dropped. Rows without a `seed` column count each run
    as its own seed."""
    if "seed" not in rows.columns:
        rows = rows.assign(seed=rows["run_id"])
    per_run = rows.groupby(["run_id", "seed", "case"], sort=True)[metric].mean().dropna()
    per_run = per_run.rename("score").reset_index()
    grouped = per_run.groupby(["seed", "case"], sort=True)
    runs = grouped["run_id"].agg(lambda ids: ",".join(sorted({str(i) for i in ids})))
    return pd.DataFrame({"score": grouped["score"].mean(), "run": runs}).reset_index()


def count_empty(rows: pd.DataFrame, metric: str) -> int:
    """Number of (run, case, class) entries whose `metric` is NaN (an empty mask)."""
    return int(rows[metric].isna().sum())


@dataclasses.dataclass(frozen=True)
class Pairing:
    """Two settings' per-case scores on their common cases.

    cases: (n,) common case ids, sorted.
    a, b: (n,) per-case scores of the reference (a) and the compared setting (b).
    only_a, only_b: case ids present (with a finite score) in one setting only; excluded.
    long: one row per (case, seed, setting) on the common cases, columns `case, seed, setting
      (a | b), score, run`: the per-run scores behind the seed means and the run id(s) they
      come from (the mixed model's data).
    """

    cases: tuple[str, ...]
    a: np.ndarray
    b: np.ndarray
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    long: pd.DataFrame

    @property
    def n_seeds(self) -> int:
        """Seeds of the setting with fewer of them (0 without common cases)."""
        if self.long.empty:
            return 0
        return int(self.long.groupby("setting")["seed"].nunique().reindex(["a", "b"])
                   .fillna(0).min())


def pair_settings(rows_a: pd.DataFrame, rows_b: pd.DataFrame, metric: str) -> Pairing:
    """Pair settings a and b on the cases both scored (see module docstring)."""
    score_a, score_b = per_case_scores(rows_a, metric), per_case_scores(rows_b, metric)
    common = score_a.index.intersection(score_b.index).sort_values()
    long = [per_seed_case_scores(rows, metric).assign(setting=side)
            for side, rows in (("a", rows_a), ("b", rows_b))]
    long = pd.concat(long, ignore_index=True)
    long = long[long["case"].isin(common)].loc[:, ["case", "seed", "setting", "score", "run"]]
    return Pairing(
        cases=tuple(common),
        a=score_a.loc[common].to_numpy(dtype=float),
        b=score_b.loc[common].to_numpy(dtype=float),
        only_a=tuple(sorted(set(score_a.index) - set(common))),
        only_b=tuple(sorted(set(score_b.index) - set(common))),
        long=long.reset_index(drop=True),
    )
