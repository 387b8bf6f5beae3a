"""What the MLflow UI opens on for an experiment of this project: the runs table of a model
training experiment, with the grid's comparison as columns.

Two experiment tags, set by `mark_experiment` when an experiment is created or reused:

- `TAG_EXPERIMENT_KIND` = `KIND_MODEL_TRAINING`: MLflow 3's mark of a (non-GenAI) model training
  experiment. MLflow 3.17's UI takes the landing page of an experiment from its workflow switch
  (GenAI / Model training; kept in the browser, GenAI by default, set by the URL parameter
  `workflowType`), not from this tag, so `experiment_url` turns the tag into that parameter: the
  link `make ui` prints (`ui_server`) opens a model training experiment on its runs table, and
  any other experiment where MLflow's own default takes it (the GenAI overview).
- `SAVED_VIEW_TAG_PREFIX + VIEW_ID`: a saved view of the runs page ("Views" menu), in MLflow's
  saved-view format (a JSON envelope `{name, createdAt, updatedAt, state}`, `state` the page's UI
  state as JSON) selecting the columns `VIEW_COLUMNS`: Dataset, Models, the trial's axis tags
  (`trial_axes`) and its test metrics. `experiment_url` applies it (`viewStateShareKey`).
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from diffseg3d.experiments.tracking.trial_axes import AXIS_TAGS

#: MLflow 3's experiment tag naming what an experiment is for.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
#: `TAG_EXPERIMENT_KIND` of a model training (not GenAI) experiment.
KIND_MODEL_TRAINING = "custom_model_development"
#: The UI's `workflowType` URL parameter for each experiment kind it knows.
WORKFLOW_OF_KIND = {KIND_MODEL_TRAINING: "machine_learning", "genai_development": "genai"}
#: Experiment tag prefix of the runs page's saved (shared) views in MLflow's UI.
SAVED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
#: Id and menu name of this project's saved view.
VIEW_ID = "diffseg3d-trials"
VIEW_NAME = "Trial comparison"
#: Run metrics the view shows (means over the test cases, `trial.scoring.test_means`).
VIEW_METRICS = ("test_dice", "test_hd95", "test_nsd")


def _column(kind: str, key: str) -> str:
    """The runs table's column id: MLflow's canonical key `<kind>.` + backquoted key."""
    return f"{kind}.`{key}`"


#: Column ids of the saved view, in order (kinds: attributes, tags, metrics).
VIEW_COLUMNS: tuple[str, ...] = (
    _column("attributes", "Dataset"),
    _column("attributes", "Models"),
    *(_column("tags", key) for key in AXIS_TAGS),
    *(_column("metrics", key) for key in VIEW_METRICS),
)


def saved_view_value(created_ms: int) -> str:
    """The saved view's tag value: MLflow's envelope with the UI state selecting
    `VIEW_COLUMNS` (every other UI setting takes the page's default)."""
    state = json.dumps({"selectedColumns": list(VIEW_COLUMNS)})
    return json.dumps({"name": VIEW_NAME, "createdAt": created_ms, "updatedAt": created_ms,
                       "state": state})


def experiment_tags(existing: dict[str, str] | None = None) -> dict[str, str]:
    """The tags `mark_experiment` sets: the kind always (an experiment of this project trains
    models), the saved view unless the experiment already has one under `VIEW_ID` (a user may
    have overwritten it from the UI)."""
    existing = existing or {}
    tags = {TAG_EXPERIMENT_KIND: KIND_MODEL_TRAINING}
    if SAVED_VIEW_TAG_PREFIX + VIEW_ID not in existing:
        tags[SAVED_VIEW_TAG_PREFIX + VIEW_ID] = saved_view_value(int(time.time() * 1000))
    return tags


def mark_experiment(client, experiment_id: str) -> None:
    """Set `experiment_tags` on the experiment (`client`: an `MlflowClient`)."""
    existing = client.get_experiment(experiment_id).tags
    for key, value in experiment_tags(existing).items():
        if existing.get(key) != value:
            client.set_experiment_tag(experiment_id, key, value)


def experiment_url(base_url: str, experiment_id: str, tags: dict[str, str]) -> str:
    """The UI link of an experiment: for `KIND_MODEL_TRAINING` its runs table in the model
    training workflow, with the saved view when the experiment has it; for any other kind (or
    none) the experiment's plain link, which MLflow's UI opens on its default page."""
    base = base_url.rstrip("/")
    workflow = WORKFLOW_OF_KIND.get(tags.get(TAG_EXPERIMENT_KIND, ""))
    if workflow != "machine_learning":
        query = f"?{urlencode({'workflowType': workflow})}" if workflow else ""
        return f"{base}/#/experiments/{experiment_id}{query}"
    query = {"workflowType": workflow}
    if SAVED_VIEW_TAG_PREFIX + VIEW_ID in tags:
        query["viewStateShareKey"] = VIEW_ID
    return f"{base}/#/experiments/{experiment_id}/runs?{urlencode(query)}"
