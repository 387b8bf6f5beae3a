"""Runs -> one tidy DataFrame (one row per run, test case and foreground class).

Two sources, one result type (`Collection`):

- MLflow (`collect_mlflow`): the grid's experiment, read as the run record
  (`diffseg3d.experiments.tracking.record`) describes it; parent runs (no `record.TAG_PARENT`
  tag) are skipped, every child run is either collected or listed in `Collection.problems` with the
  reason (status FAILED/KILLED/RUNNING, no `per_case_metrics.csv`, bad params).
- A folder of CSVs (`collect_csv_folder`) for users who score elsewhere: each `<stem>.csv` holds
  per-case metrics (at least the columns `schema.PER_CASE_COLUMNS`: `case, class, dice, hd95,
  roi_voxels, roi_mm3`) and sits next to a sidecar `<stem>.json` with the run's params in the
  same dotted keys as MLflow, e.g.
  `{"trial": "unet-s0", "tables": ["table2_diffusion_vs_unet"],
    "params": {"data.name": "prostate-mr", "method": "unet", "seed": 0}}`.
  `<stem>` becomes the run id. Axes a sidecar omits take the config schema's defaults (the
  paper's settings); `data.name` is required. A sidecar may add `"metrics": {"test_dice": ...}`
  with the run's scalar metrics (`RUN_METRIC_PATTERN`) and `"test_checkpoint": "7500 (best_val)"`;
  the run's sampling variants (`eval.samplers`) sit in `<stem>.sampling/<variant>.csv`.

A run's per-variant CSVs (MLflow: `record.ARTIFACT_SAMPLING/<variant>.csv`) go to
`Collection.sampling` with a `sampling` column (Table 4, `comparisons.SAMPLING_TABLE`), never
into `Collection.frame`, whose rows stay one evaluation per run.

Besides the per-case rows, a run's scalar test metrics that have no per-case CSV go to
`Collection.run_metrics`: Dice along the sampling chain (`test_dice_step_<k>`), the ensemble's
(`test_dice_ensemble`, `test_ensemble_samples`, `test_uncertainty_dice_spearman`) and the
1-sample `test_dice` next to them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from diffseg3d.analysis.schema import (
    OPTIONAL_PER_CASE_COLUMNS,
    PER_CASE_COLUMNS,
    TIDY_COLUMNS,
    axes_from_params,
    run_params,
)
from diffseg3d.analysis.uncertainty_runs import UncertaintyRuns
from diffseg3d.analysis.uncertainty_runs import combine as combine_uncertainty
from diffseg3d.analysis.uncertainty_runs import read_folder as read_uncertainty_folder
from diffseg3d.analysis.uncertainty_runs import read_mlflow as read_uncertainty_mlflow
from diffseg3d.experiments.tracking.record import (
    ARTIFACT_PER_CASE,
    ARTIFACT_PREDICTIONS,
    ARTIFACT_SAMPLING,
    TAG_DEVICE_KIND,
    TAG_PARENT,
    TAG_TABLES,
    TAG_TEST_CHECKPOINT,
    TAG_TRIAL,
)

# Columns of Collection.runs: one row per child run found, collected or not.
RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "trial", "status", "tables", "data_set", "method", "output", "recycling",
    "dice_loss", "train_steps", "seed", "data_root", "start_time", "n_rows", "problem",
    "test_checkpoint", "samplers", "device_kind",
)
#: Columns of `Collection.sampling`: the tidy columns, the sampling variant, the tables tag.
SAMPLING_COLUMNS: tuple[str, ...] = (*TIDY_COLUMNS, "sampling", "tables")
# Scalar run metrics kept in Collection.run_metrics (sampling chain and ensemble evaluation).
# `test_dice_ensemble_n<n>`: the ensemble of the first n samples; `cost_*`: `record.COST_METRICS`.
RUN_METRIC_PATTERN = re.compile(
    r"test_(dice|dice_step_\d+|dice_ensemble|dice_ensemble_n\d+|ensemble_samples"
    r"|uncertainty_dice_spearman)|cost_\w+")
RUN_METRIC_COLUMNS: tuple[str, ...] = ("run_id", "metric", "value")


@dataclasses.dataclass(frozen=True)
class Collection:
    """Collected runs.

    frame: tidy rows, columns `TIDY_COLUMNS + ("tables",)` (`tables` is the run's comma-separated
      paper-table ids); only runs without a problem contribute.
    runs: one row per child run (`RUN_COLUMNS`); `problem` is None for collected runs.
    source: where the runs came from (experiment name and tracking URI, or folder).
    run_metrics: `RUN_METRIC_COLUMNS`, one row per collected run and scalar metric matching
      `RUN_METRIC_PATTERN`.
    """

    frame: pd.DataFrame
    runs: pd.DataFrame
    source: str
    run_metrics: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=list(RUN_METRIC_COLUMNS)))
    #: `SAMPLING_COLUMNS` rows from the runs' `eval.samplers` CSVs (Table 4), collected runs only.
    sampling: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=list(SAMPLING_COLUMNS)))
    #: The runs' sample-set, calibration and error-detection artifacts (`uncertainty_runs`).
    uncertainty: UncertaintyRuns = dataclasses.field(default_factory=UncertaintyRuns)

    @property
    def problems(self) -> list[str]:
        """One line per run that was not collected, naming the run and why."""
        bad = self.runs[self.runs["problem"].notna()]
        return [f"{r.run_id} ({r.trial}): {r.problem}" for r in bad.itertuples()]


def read_per_case_csv(path: Path | str, *, source: str = "") -> pd.DataFrame:
    """Read a per-case metrics CSV and check its columns; NaN stays NaN (empty masks)."""
    frame = pd.read_csv(path, dtype={"case": str, "class": str})
    missing = [c for c in PER_CASE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{source or path}: per-case CSV lacks columns {missing}")
    for column in OPTIONAL_PER_CASE_COLUMNS:
        if column not in frame.columns:
            frame[column] = float("nan")
    for column in ("dice", "hd95", "roi_voxels", "roi_mm3", *OPTIONAL_PER_CASE_COLUMNS):
        frame[column] = pd.to_numeric(frame[column], errors="raise")
    return frame


def _tidy_rows(per_case: pd.DataFrame, run: dict[str, Any]) -> pd.DataFrame:
    taken = PER_CASE_COLUMNS + OPTIONAL_PER_CASE_COLUMNS
    rows = per_case.loc[:, list(taken)].copy()
    for column in TIDY_COLUMNS + ("tables",):
        if column not in taken:
            rows[column] = run[column]
    return rows.loc[:, list(TIDY_COLUMNS) + ["tables"]]


def _mark_superseded(records: list[dict[str, Any]], frames: dict[str, pd.DataFrame]) -> None:
    """Keep one collected run per trial, the newest; list the others (a rerun that started a
    new run instead of resuming would otherwise count as an extra seed)."""
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record["problem"] is None:
            by_trial.setdefault(record["trial"], []).append(record)
    for trial, group in by_trial.items():
        if len(group) < 2:
            continue
        group.sort(key=lambda r: (r["start_time"] or 0, r["run_id"]))
        newest = group[-1]["run_id"]
        for record in group[:-1]:
            record["problem"] = f"superseded by newer run {newest} of trial {trial}"
            frames.pop(record["run_id"])


def _finish(records: list[dict[str, Any]], frames: dict[str, pd.DataFrame],
            source: str, metrics: dict[str, dict[str, Any]] | None = None) -> Collection:
    _mark_superseded(records, frames)
    kept = [(run_id, name, float(value)) for run_id, values in (metrics or {}).items()
            if run_id in frames for name, value in sorted(values.items())
            if RUN_METRIC_PATTERN.fullmatch(name)]
    runs = pd.DataFrame(records, columns=list(RUN_COLUMNS))
    runs = runs.astype({"problem": object}).sort_values(["trial", "run_id"], ignore_index=True)
    columns = list(TIDY_COLUMNS) + ["tables"]
    frame = (pd.concat(frames.values(), ignore_index=True) if frames
             else pd.DataFrame(columns=columns))
    return Collection(frame=frame, runs=runs, source=source,
                      run_metrics=pd.DataFrame(kept, columns=list(RUN_METRIC_COLUMNS)))


def _tables_list(raw: Any) -> str:
    """Comma-separated table labels from a tag (`1,3a`), a JSON list param or a list."""
    if raw is None:
        return ""
    if isinstance(raw, str) and raw.strip().startswith("["):
        raw = json.loads(raw)
    if isinstance(raw, list | tuple):
        return ",".join(str(t).strip() for t in raw)
    return ",".join(t.strip() for t in str(raw).split(",") if t.strip())


def _record(run_id: str, trial: str, status: str, tables: str, params: dict[str, Any],
            source: str) -> dict[str, Any]:
    record = {c: None for c in RUN_COLUMNS}
    record.update(run_id=run_id, trial=trial, status=status, tables=tables, n_rows=0,
                  data_root=params.get("data.root"))
    try:
        record.update(axes_from_params(params, source=source))
        record.update(run_params(params, source=source))
    except (ValueError, KeyError) as err:
        record["problem"] = f"bad params: {err}"
    return record


def _search_child_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return [r for r in runs if TAG_PARENT in r.data.tags]


def collect_mlflow(experiment: str, tracking_uri: str | None = None) -> Collection:
    """Collect every child run of MLflow experiment `experiment` (named after the grid).

    Raises ValueError when the experiment does not exist in the store.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    uri = tracking_uri or mlflow.get_tracking_uri()
    if exp is None:
        raise ValueError(f"no MLflow experiment named {experiment!r} in {uri}")
    records, frames, metrics, variants, extras = [], {}, {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="diffseg3d-collect-") as tmp:
        for run in _search_child_runs(client, exp.experiment_id):
            run_id, tags = run.info.run_id, run.data.tags
            record = _record(run_id, tags.get(TAG_TRIAL, run.info.run_name or run_id),
                             run.info.status,
                             _tables_list(tags.get(TAG_TABLES, run.data.params.get("tables"))),
                             run.data.params, f"run {run_id}")
            record["start_time"] = run.info.start_time
            record["test_checkpoint"] = tags.get(TAG_TEST_CHECKPOINT)
            record["device_kind"] = tags.get(TAG_DEVICE_KIND)
            records.append(record)
            if record["problem"]:
                continue
            if run.info.status != "FINISHED":
                record["problem"] = f"status {run.info.status}"
                continue
            try:
                local = client.download_artifacts(run_id, ARTIFACT_PER_CASE, tmp)
                per_case = read_per_case_csv(local, source=f"run {run_id} {ARTIFACT_PER_CASE}")
            except (OSError, ValueError) as err:
                record["problem"] = f"no usable {ARTIFACT_PER_CASE}: {err}"
                continue
            except Exception as err:  # MlflowException when the artifact does not exist
                record["problem"] = f"no {ARTIFACT_PER_CASE} artifact ({type(err).__name__})"
                continue
            record["n_rows"] = len(per_case)
            frames[run_id] = _tidy_rows(per_case, record)
            metrics[run_id] = run.data.metrics
            variants[run_id] = _sampling_mlflow(client, run_id, record, tmp)
            extras[run_id] = read_uncertainty_mlflow(client, run_id, record, tmp)
    collection = _finish(records, frames, f"MLflow experiment {experiment!r} at {uri}", metrics)
    return _with_uncertainty(_with_sampling(collection, variants), extras)


def collect_csv_folder(folder: Path | str) -> Collection:
    """Collect `<stem>.csv` + `<stem>.json` pairs from `folder` (see module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder of per-case CSVs")
    records, frames, metrics, variants, extras = [], {}, {}, {}, {}
    for csv_path in sorted(folder.glob("*.csv")):
        sidecar = csv_path.with_suffix(".json")
        if not sidecar.exists():
            record = {c: None for c in RUN_COLUMNS}
            record.update(run_id=csv_path.stem, trial=csv_path.stem, status="UNKNOWN", n_rows=0,
                          tables="", problem=f"no sidecar {sidecar.name} with the run's params")
            records.append(record)
            continue
        meta = json.loads(sidecar.read_text())
        if not isinstance(meta.get("params"), dict):
            raise ValueError(f"{sidecar}: key 'params' must be an object of dotted config keys")
        record = _record(csv_path.stem, meta.get("trial", csv_path.stem),
                         meta.get("status", "FINISHED"), _tables_list(meta.get("tables")),
                         meta["params"], str(sidecar))
        record["test_checkpoint"] = meta.get("test_checkpoint")
        records.append(record)
        if record["problem"]:
            continue
        per_case = read_per_case_csv(csv_path)
        record["n_rows"] = len(per_case)
        frames[csv_path.stem] = _tidy_rows(per_case, record)
        metrics[csv_path.stem] = meta.get("metrics") or {}
        variant_folder = folder / f"{csv_path.stem}.{ARTIFACT_SAMPLING}"
        variants[csv_path.stem] = _read_variants(
            record, {p.stem: p for p in sorted(variant_folder.glob("*.csv"))})
        extras[csv_path.stem] = read_uncertainty_folder(
            record, folder / f"{csv_path.stem}.uncertainty")
    collection = _finish(records, frames, f"CSV folder {folder}", metrics)
    return _with_uncertainty(_with_sampling(collection, variants), extras)


def _read_variants(record: dict[str, Any], paths: dict[str, Any]) -> list[pd.DataFrame]:
    """Tidy rows (`SAMPLING_COLUMNS`) of one run's sampling variants, variant -> CSV path; a file
    that cannot be read is named in the run's `samplers` column instead of being skipped quietly.
    """
    frames, names = [], []
    for variant, path in paths.items():
        try:
            rows = _tidy_rows(read_per_case_csv(path, source=f"{record['run_id']} {variant}"),
                              record)
        except (OSError, ValueError) as err:
            names.append(f"{variant} (not read: {err})")
            continue
        frames.append(rows.assign(sampling=variant).loc[:, list(SAMPLING_COLUMNS)])
        names.append(variant)
    record["samplers"] = ", ".join(names) or None
    return frames


def _sampling_mlflow(client, run_id: str, record: dict[str, Any], tmp: str) -> list[pd.DataFrame]:
    """`_read_variants` of a run's `ARTIFACT_SAMPLING/<variant>.csv` artifacts."""
    paths = {}
    for info in client.list_artifacts(run_id, ARTIFACT_SAMPLING):
        if not info.is_dir and info.path.endswith(".csv"):
            paths[Path(info.path).stem] = client.download_artifacts(run_id, info.path, tmp)
    return _read_variants(record, paths)


def _with_sampling(collection: Collection, variants: dict[str, list[pd.DataFrame]]) -> Collection:
    """`collection` with the sampling-variant rows of its collected runs (not superseded ones)."""
    kept = set(collection.runs.loc[collection.runs["problem"].isna(), "run_id"])
    frames = [f for run_id, fs in variants.items() if run_id in kept for f in fs]
    if not frames:
        return collection
    return dataclasses.replace(collection, sampling=pd.concat(frames, ignore_index=True))


def _with_uncertainty(collection: Collection, extras: dict) -> Collection:
    """`collection` with the uncertainty artifacts of its collected runs (not superseded ones)."""
    kept = set(collection.runs.loc[collection.runs["problem"].isna(), "run_id"])
    return dataclasses.replace(collection, uncertainty=combine_uncertainty(extras, kept))


def collect_metric_history(
    run_ids: list[str], keys: tuple[str, ...] = ("loss", "val_dice"),
    tracking_uri: str | None = None,
) -> pd.DataFrame:
    """Training curves: columns `run_id, key, step, value` from MLflow's metric history."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    rows = [
        {"run_id": run_id, "key": key, "step": m.step, "value": m.value}
        for run_id in run_ids for key in keys
        for m in client.get_metric_history(run_id, key)
    ]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def download_predictions(run_id: str, dst: Path | str,
                         tracking_uri: str | None = None) -> dict[str, Path]:
    """Download a run's `predictions/*.nii.gz` into `dst`; returns {case id: local path}.

    An empty dict when the run logged no predictions.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = {}
    for info in client.list_artifacts(run_id, ARTIFACT_PREDICTIONS):
        name = Path(info.path).name
        if not info.is_dir and name.endswith((".nii.gz", ".nii")):
            local = Path(client.download_artifacts(run_id, info.path, str(dst)))
            found[name.removesuffix(".gz").removesuffix(".nii")] = local
    return found
