"""What a grid's parent run shows a reader: its trials side by side, and the paper's tables.

- `log_trials_table` (when the grid ends, `cluster.manifest.close_parent_run`): the table
  artifact `ARTIFACT_TRIALS_TABLE`, one row per trial run under the parent (`TABLE_COLUMNS`:
  name, the axes of `trial_axes`, status, test Dice / HD95 / NSD means, run id), written as
  `MlflowClient.log_table` writes (pandas "split" JSON, the run tag `mlflow.loggedArtifacts`
  marking it a table) so the UI's artifact view renders it as a table; rewritten whole on a rerun.
  Axes come from each run's params, so runs logged before the axis tags existed show them too.
- `log_report` (after `diffseg3d tables`): the LaTeX tables and `summary.md` under
  `ARTIFACT_REPORT/` of the parent runs of the collected trial runs.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from diffseg3d.experiments.tracking.record import TAG_PARENT
from diffseg3d.experiments.tracking.retry import with_retries
from diffseg3d.experiments.tracking.trial_axes import AXIS_PREFIX, axis_values
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

#: The parent run's table of trials (JSON, rendered as a table by the UI).
ARTIFACT_TRIALS_TABLE = "trials.json"
#: Folder of the parent run holding the report of `diffseg3d tables`.
ARTIFACT_REPORT = "tables"
#: Report files logged to the parent run: the LaTeX tables and the summary.
REPORT_PATTERNS = ("*.tex", "summary.md")
#: Test metrics of each trial in the table.
TABLE_METRICS = ("test_dice", "test_hd95", "test_nsd")


def _retried(fn, /, *args, **kwargs):
    return with_retries(lambda: fn(*args, **kwargs))


def trial_rows(client: MlflowClient, parent_run_id: str) -> list[dict]:
    """One dict per active trial run under `parent_run_id`, sorted by trial name: `trial`, the
    axes (tag key without `AXIS_PREFIX`), `status`, `TABLE_METRICS` (None when absent or NaN)
    and `run_id`."""
    parent = _retried(client.get_run, parent_run_id)
    runs = _retried(client.search_runs, [parent.info.experiment_id],
                    filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'",
                    run_view_type=ViewType.ACTIVE_ONLY, max_results=5000)
    rows = []
    for run in runs:
        row = {"trial": run.info.run_name}
        axes = axis_values(run.data.params)
        row.update({key.removeprefix(AXIS_PREFIX): value for key, value in axes.items()})
        row["status"] = run.info.status
        for metric in TABLE_METRICS:
            value = run.data.metrics.get(metric)
            row[metric] = None if value is None or math.isnan(value) else round(value, 4)
        row["run_id"] = run.info.run_id
        rows.append(row)
    return sorted(rows, key=lambda r: r["trial"] or "")


def table_json(rows: list[dict]) -> str:
    """`rows` as pandas' "split" JSON (`{"columns": [...], "data": [[...], ...]}`), the format of
    `MlflowClient.log_table`."""
    columns = list(rows[0]) if rows else ["trial"]
    return json.dumps({"columns": columns, "data": [[r.get(c) for c in columns] for r in rows]})


def _mark_table(client: MlflowClient, run_id: str, path: str) -> None:
    """Add `path` as a table to the run's `mlflow.loggedArtifacts` tag (what the UI reads)."""
    tags = _retried(client.get_run, run_id).data.tags
    logged = json.loads(tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    if not any(entry.get("path") == path for entry in logged):
        logged.append({"path": path, "type": "table"})
        _retried(client.set_tag, run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps(logged))


def log_trials_table(client: MlflowClient, parent_run_id: str) -> list[dict]:
    """Write `ARTIFACT_TRIALS_TABLE` to the parent run (module docstring); returns the rows."""
    rows = trial_rows(client, parent_run_id)
    with tempfile.TemporaryDirectory(prefix="diffseg3d_trials_") as tmp:
        path = Path(tmp) / ARTIFACT_TRIALS_TABLE
        path.write_text(table_json(rows))
        _retried(client.log_artifact, parent_run_id, str(path))
    _mark_table(client, parent_run_id, ARTIFACT_TRIALS_TABLE)
    return rows


def report_files(out_dir: str | os.PathLike) -> list[Path]:
    """The files of a `diffseg3d tables` output folder that go to the parent run."""
    out = Path(out_dir)
    return sorted({p for pattern in REPORT_PATTERNS for p in out.glob(pattern) if p.is_file()})


def log_report(tracking_uri: str | None, trial_run_ids: Iterable[str],
               out_dir: str | os.PathLike) -> list[str]:
    """Log `report_files(out_dir)` under `ARTIFACT_REPORT/` of every parent run of
    `trial_run_ids` (trial runs without a parent are skipped); returns those parent run ids."""
    client = MlflowClient(tracking_uri)
    files = report_files(out_dir)
    parents = set()
    for run_id in trial_run_ids:
        parent = _retried(client.get_run, run_id).data.tags.get(TAG_PARENT)
        if parent:
            parents.add(parent)
    for parent in sorted(parents):
        for path in files:
            _retried(client.log_artifact, parent, str(path), ARTIFACT_REPORT)
    return sorted(parents)
