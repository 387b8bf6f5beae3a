"""What ties a Tune experiment folder to its grid expansion and MLflow parent run: the manifest
`<experiment folder>/diffseg3d_grid.json`, and the parent run the driver opens (or reopens when
it resumes) and closes.

The manifest also records the content digest of every prepared data set the grid trains on
(`data_digests`: the MLflow dataset input's digest). A rerun of the same expansion whose data
changed in place is refused (`check_data_unchanged`) before anything starts: its finished trials
were trained and scored on the old data, and resuming would mix the two.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.tracking.record import TAG_FAILED_TRIALS

#: File beside Tune's experiment state that ties a Tune experiment to a grid expansion and its
#: MLflow parent run.
MANIFEST_NAME = "diffseg3d_grid.json"
#: Manifest key: prepared data folder (absolute) -> its content digest.
DATA_DIGESTS_KEY = "data_digests"


def data_digests(roots: Sequence[str]) -> dict[str, str]:
    """Prepared data folder -> `dataset_input.dataset_digest` (identity, case ids and array
    bytes of every split), for each distinct folder of `roots` that loads; one that does not
    (missing, not prepared) is left out: its trials fail with the loader's own error."""
    from diffseg3d.core.data.dataset import PreparedDataset
    from diffseg3d.experiments.tracking.dataset_input import dataset_digest

    digests = {}
    for root in sorted(set(roots)):
        try:
            digests[root] = dataset_digest(PreparedDataset.load(root))
        except (OSError, KeyError, ValueError):  # DataError is a ValueError
            continue
    return digests


def check_data_unchanged(manifest: Mapping | None, digests: Mapping[str, str],
                         experiment_path: str) -> None:
    """Raise `ConfigError` naming the folder and both digests when a data set of `digests`
    differs from what `manifest` (a previous run of this expansion) recorded."""
    recorded = (manifest or {}).get(DATA_DIGESTS_KEY) or {}
    for root, digest in digests.items():
        old = recorded.get(root)
        if old is not None and old != digest:
            raise ConfigError(
                f"{root}: the prepared data changed since this grid's trials ran on it (digest "
                f"{old} -> {digest}, as the MLflow runs' dataset input shows); its finished "
                f"trials were trained and scored on the old data, so {experiment_path} is not "
                "resumed: prepare the new data into another folder (or run with another --out), "
                "or put the old data back")


def read_manifest(experiment_path: str) -> dict | None:
    if "://" in experiment_path:
        return None  # remote storage: the parent run is found through MLflow tags instead
    path = Path(experiment_path) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RuntimeError(
            f"{path}: corrupt grid manifest ({err}); delete it to start over"
        ) from None


def write_manifest(experiment_path: str, manifest: Mapping) -> None:
    if "://" in experiment_path:
        return
    path = Path(experiment_path) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def open_parent_run(tracking_uri, out, grid_name, manifest, grid_hash) -> tuple[str, str]:
    """(experiment id, parent run id): the manifest's parent when resuming a Tune experiment,
    else `tracking.start_parent_run` (which also reuses an unfinished parent of the same grid)."""
    from diffseg3d.experiments.tracking import mlflow_runs as tracking

    experiment_id = tracking.ensure_experiment(
        grid_name,
        artifact_location=tracking.default_artifact_location(out, tracking_uri),
        tracking_uri=tracking_uri,
    )
    if manifest is not None and manifest.get("parent_run_id"):
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri).update_run(manifest["parent_run_id"], status="RUNNING")
        return experiment_id, manifest["parent_run_id"]
    parent_run_id = tracking.start_parent_run(
        experiment_id, grid_name, grid_hash=grid_hash, tracking_uri=tracking_uri
    )
    return experiment_id, parent_run_id


def close_parent_run(tracking_uri: str, run_id: str, failures: Sequence[tuple[str, str]]) -> None:
    """Mark the parent FINISHED when every trial finished, FAILED otherwise; `failures`:
    (trial, error) of each trial that did not finish (`runner.failed_trials`)."""
    from diffseg3d.experiments.tracking.grid_summary import log_trials_table
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    client.set_tag(run_id, TAG_FAILED_TRIALS, ",".join(n for n, _ in failures) or "-")
    log_trials_table(client, run_id)  # the trials side by side, a table in the UI
    client.set_terminated(run_id, status="FAILED" if failures else "FINISHED")
