"""A run's sample-set / calibration / error-detection artifacts, read back for the analysis.

Trials write (`experiments.tracking.record`) `ARTIFACT_UNCERTAINTY` (one row per case and class,
`UNCERTAINTY_COLUMNS`), `ARTIFACT_RELIABILITY` (the split's pooled reliability bins) and
`ARTIFACT_UNCERTAINTY_SLICE` (one slice of the first test case). Runs logged before these
existed have none of them: they contribute nothing here, and the report says "not logged".
A CSV folder (`collect.collect_csv_folder`) holds them in `<stem>.uncertainty/`.

`UncertaintyRuns` holds, over the collected runs: `frame` (the run's axis columns from its
record, `tables`, and the per-case columns), `reliability` (`run_id` + `RELIABILITY_COLUMNS`)
and `slices` (run id -> the slice's arrays).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from diffseg3d.analysis.schema import TIDY_COLUMNS
from diffseg3d.experiments.tracking.record import (
    ARTIFACT_RELIABILITY,
    ARTIFACT_UNCERTAINTY,
    ARTIFACT_UNCERTAINTY_SLICE,
    RELIABILITY_COLUMNS,
    UNCERTAINTY_COLUMNS,
)

#: Run columns copied from the run's record onto each of its uncertainty rows.
RUN_KEYS: tuple[str, ...] = tuple(c for c in TIDY_COLUMNS if c not in (
    "case", "class", "dice", "hd95", "roi_voxels", "roi_mm3", "nsd", "nsd_tolerance_mm")) + (
    "tables",)
FRAME_COLUMNS: tuple[str, ...] = (*RUN_KEYS, *(c for c in UNCERTAINTY_COLUMNS))
RELIABILITY_FRAME_COLUMNS: tuple[str, ...] = ("run_id", *RELIABILITY_COLUMNS)


@dataclasses.dataclass(frozen=True)
class UncertaintyRuns:
    """The collected runs' uncertainty artifacts (see the module docstring)."""

    frame: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=list(FRAME_COLUMNS)))
    reliability: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=list(RELIABILITY_FRAME_COLUMNS)))
    slices: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RunUncertainty:
    """One run's artifacts; None where the run did not log one."""

    rows: pd.DataFrame | None = None
    reliability: pd.DataFrame | None = None
    slice: dict[str, np.ndarray] | None = None


def read_files(record: dict[str, Any], paths: dict[str, Path]) -> RunUncertainty:
    """One run's artifacts from local files (artifact name -> path, only those present)."""
    rows = bins = piece = None
    if ARTIFACT_UNCERTAINTY in paths:
        rows = pd.read_csv(paths[ARTIFACT_UNCERTAINTY], dtype={"case": str, "class": str})
        missing = [c for c in UNCERTAINTY_COLUMNS if c not in rows.columns]
        if missing:
            raise ValueError(f"{paths[ARTIFACT_UNCERTAINTY]}: lacks columns {missing}")
        for key in RUN_KEYS:
            rows[key] = record[key]
        rows = rows.loc[:, list(FRAME_COLUMNS)]
    if ARTIFACT_RELIABILITY in paths:
        bins = pd.read_csv(paths[ARTIFACT_RELIABILITY]).assign(run_id=record["run_id"])
        bins = bins.loc[:, list(RELIABILITY_FRAME_COLUMNS)]
    if ARTIFACT_UNCERTAINTY_SLICE in paths:
        with np.load(paths[ARTIFACT_UNCERTAINTY_SLICE]) as data:
            piece = {k: data[k] for k in data.files}
    return RunUncertainty(rows, bins, piece)


def read_mlflow(client, run_id: str, record: dict[str, Any], tmp: str) -> RunUncertainty:
    """`read_files` of a run's top-level uncertainty artifacts in MLflow."""
    names = (ARTIFACT_UNCERTAINTY, ARTIFACT_RELIABILITY, ARTIFACT_UNCERTAINTY_SLICE)
    present = {info.path for info in client.list_artifacts(run_id) if not info.is_dir}
    dst = Path(tmp) / f"uncertainty-{run_id}"
    dst.mkdir(parents=True, exist_ok=True)
    paths = {n: Path(client.download_artifacts(run_id, n, str(dst))) for n in names
             if n in present}
    return read_files(record, paths)


def read_folder(record: dict[str, Any], folder: Path) -> RunUncertainty:
    """`read_files` of `<stem>.uncertainty/` next to a CSV folder's run."""
    names = (ARTIFACT_UNCERTAINTY, ARTIFACT_RELIABILITY, ARTIFACT_UNCERTAINTY_SLICE)
    return read_files(record, {n: folder / n for n in names if (folder / n).is_file()})


def combine(per_run: dict[str, RunUncertainty], kept: set[str]) -> UncertaintyRuns:
    """`UncertaintyRuns` of the runs in `kept` (the collected, not superseded, runs)."""
    runs = {r: u for r, u in per_run.items() if r in kept}
    frames = [u.rows for u in runs.values() if u.rows is not None]
    bins = [u.reliability for u in runs.values() if u.reliability is not None]
    empty = UncertaintyRuns()
    return UncertaintyRuns(
        frame=pd.concat(frames, ignore_index=True) if frames else empty.frame,
        reliability=pd.concat(bins, ignore_index=True) if bins else empty.reliability,
        slices={r: u.slice for r, u in runs.items() if u.slice is not None})
