"""What the UI opens on: the experiment-kind tag, the saved comparison view, the link `make ui`
prints, the trial axis tags and the parent run's table of trials, on a real SQLite store."""

import json

import pytest
from diffseg3d.experiments.config.layering import deep_merge, load_profile
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.tracking import mlflow_runs as tracking
from diffseg3d.experiments.tracking.grid_summary import (
    log_report,
    log_trials_table,
    table_json,
)
from diffseg3d.experiments.tracking.record import TAG_PARENT, flatten
from diffseg3d.experiments.tracking.trial_axes import AXIS_TAGS, axis_tags, axis_values
from diffseg3d.experiments.tracking.ui_server import experiment_links
from diffseg3d.experiments.tracking.ui_view import (
    KIND_MODEL_TRAINING,
    SAVED_VIEW_TAG_PREFIX,
    TAG_EXPERIMENT_KIND,
    VIEW_COLUMNS,
    VIEW_ID,
    experiment_url,
)
from mlflow.tracking import MlflowClient


def _config(**overrides):
    return validate_config(deep_merge(load_profile("smoke"), {"name": "t", **overrides}))


def test_axis_tags_name_the_paper_axes_and_blank_what_the_unet_lacks():
    assert axis_tags(_config()) == {
        "axis.method": "diffusion", "axis.recycling": "yes", "axis.output": "x0",
        "axis.dice_loss": "yes", "axis.train_steps": "5", "axis.sampler": "ddpm_fixed_large"}
    noise = _config(diffusion={"output": "eps", "recycling": False, "train_steps": 1000,
                               "sampler": "ddim"}, loss={"dice": False})
    assert axis_tags(noise) == {
        "axis.method": "diffusion", "axis.recycling": "no", "axis.output": "eps",
        "axis.dice_loss": "no", "axis.train_steps": "1000", "axis.sampler": "ddim"}
    unet = axis_tags(_config(method="unet"))
    assert unet["axis.method"] == "unet" and unet["axis.dice_loss"] == "yes"
    assert [unet[k] for k in ("axis.recycling", "axis.output", "axis.train_steps",
                              "axis.sampler")] == ["-"] * 4


def test_axes_of_a_run_without_the_tags_come_from_its_params():
    """A run logged before the axis tags existed: the same values from its params; a param it
    lacks takes the config default."""
    params = flatten(_config(diffusion={"variance": "fixed_small"}))
    assert axis_values(params) == axis_tags(_config(diffusion={"variance": "fixed_small"}))
    assert axis_values({"method": "diffusion"})["axis.sampler"] == "ddpm_fixed_large"


def test_link_opens_the_runs_table_only_for_a_model_training_experiment():
    marked = {TAG_EXPERIMENT_KIND: KIND_MODEL_TRAINING, SAVED_VIEW_TAG_PREFIX + VIEW_ID: "{}"}
    assert experiment_url("http://127.0.0.1:5000/", "7", marked) == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
        f"&viewStateShareKey={VIEW_ID}")
    assert experiment_url("http://h", "7", {TAG_EXPERIMENT_KIND: KIND_MODEL_TRAINING}) == \
        "http://h/#/experiments/7/runs?workflowType=machine_learning"
    assert experiment_url("http://h", "7", {}) == "http://h/#/experiments/7"
    assert experiment_url("http://h", "7", {TAG_EXPERIMENT_KIND: "genai_development"}) == \
        "http://h/#/experiments/7?workflowType=genai"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui_store")
    return f"sqlite:///{root / 'mlflow.db'}", root


def test_new_and_older_experiments_are_marked_with_kind_and_view(store):
    uri, root = store
    client = MlflowClient(uri)
    older = client.create_experiment("older")  # as a store made before the marking
    exp_id = tracking.ensure_experiment("older", tracking_uri=uri)
    assert exp_id == older
    tags = client.get_experiment(exp_id).tags
    assert tags[TAG_EXPERIMENT_KIND] == KIND_MODEL_TRAINING
    view = json.loads(tags[SAVED_VIEW_TAG_PREFIX + VIEW_ID])
    assert view["name"] == "Trial comparison" and isinstance(view["createdAt"], int)
    assert json.loads(view["state"])["selectedColumns"] == list(VIEW_COLUMNS)
    assert {f"tags.`{k}`" for k in AXIS_TAGS} <= set(VIEW_COLUMNS)
    assert "metrics.`test_dice`" in VIEW_COLUMNS and "attributes.`Dataset`" in VIEW_COLUMNS
    # A view the user overwrote from the UI is kept.
    client.set_experiment_tag(exp_id, SAVED_VIEW_TAG_PREFIX + VIEW_ID, "mine")
    tracking.ensure_experiment("older", tracking_uri=uri)
    assert client.get_experiment(exp_id).tags[SAVED_VIEW_TAG_PREFIX + VIEW_ID] == "mine"
    links = dict(experiment_links(uri, "http://127.0.0.1:5000"))
    assert links["older"].endswith(f"/#/experiments/{exp_id}/runs?workflowType="
                                   f"machine_learning&viewStateShareKey={VIEW_ID}")


def test_parent_run_table_lists_new_and_older_trials(store, tmp_path):
    uri, root = store
    client = MlflowClient(uri)
    exp_id = tracking.ensure_experiment(
        "grid", artifact_location=(root / "artifacts").as_uri(), tracking_uri=uri)
    parent = tracking.start_parent_run(exp_id, "grid", tracking_uri=uri)
    new = tracking.TrialRun.start(_config(name="b_new"), experiment="grid", tracking_uri=uri,
                                  parent_run_id=parent)
    new.log_metrics({"test_dice": 0.71234, "test_hd95": 3.5, "test_nsd": float("nan")}, 20)
    new.finish()
    # An older trial run: params only, no axis tags.
    old = client.create_run(exp_id, run_name="a_old", tags={TAG_PARENT: parent})
    for key, value in flatten(_config(name="a_old", method="unet")).items():
        client.log_param(old.info.run_id, key, value)
    client.log_metric(old.info.run_id, "test_dice", 0.5)
    rows = log_trials_table(client, parent)
    assert [r["trial"] for r in rows] == ["a_old", "b_new"]
    assert rows[0]["method"] == "unet" and rows[0]["recycling"] == "-"
    assert rows[0]["test_dice"] == 0.5 and rows[0]["test_hd95"] is None
    assert rows[1]["recycling"] == "yes" and rows[1]["test_dice"] == 0.7123
    assert rows[1]["test_nsd"] is None and rows[1]["status"] == "FINISHED"
    log_trials_table(client, parent)  # a rerun rewrites the table, never appends
    table = json.loads(open(client.download_artifacts(parent, "trials.json")).read())
    assert table == json.loads(table_json(rows)) and len(table["data"]) == 2
    logged = json.loads(client.get_run(parent).data.tags["mlflow.loggedArtifacts"])
    assert logged == [{"path": "trials.json", "type": "table"}]
    # The report of `diffseg3d tables` goes to the parents of the collected runs.
    out = tmp_path / "results"
    out.mkdir()
    (out / "summary.md").write_text("# summary\n")
    (out / "table1_recycling.tex").write_text("\\toprule\n")
    (out / "tidy.csv").write_text("run_id\n")
    assert log_report(uri, [new.run_id, old.info.run_id], out) == [parent]
    assert {f.path for f in client.list_artifacts(parent, "tables")} == {
        "tables/summary.md", "tables/table1_recycling.tex"}
