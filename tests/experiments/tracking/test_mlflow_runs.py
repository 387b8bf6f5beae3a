"""MLflow tracking on a real SQLite store: experiment creation, parent run reuse, one run per
trial across reopen, params logged once, batched metrics."""

import math

import pytest
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.tracking import mlflow_runs as tracking
from diffseg3d.experiments.tracking.record import flatten
from mlflow.tracking import MlflowClient


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    exp = tracking.ensure_experiment("grid", tracking.default_artifact_location(root, uri), uri)
    return root, uri, exp


def test_default_uri_and_env_override(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://head:5000")
    assert tracking.default_tracking_uri(tmp_path) == "http://head:5000"
    assert tracking.default_artifact_location(tmp_path, "http://head:5000") is None
    local = tracking.default_artifact_location(tmp_path, "sqlite:///x.db")
    assert local == (tmp_path / "mlartifacts").as_uri()


def test_ensure_experiment_is_idempotent(store):
    _, uri, exp = store
    assert tracking.ensure_experiment("grid", None, uri) == exp


def test_parent_run_is_reused_until_finished(store):
    _, uri, _ = store
    first = tracking.start_parent_run("grid", "paper", grid_hash="h1", tracking_uri=uri)
    assert tracking.start_parent_run("grid", "paper", grid_hash="h1", tracking_uri=uri) == first
    other = tracking.start_parent_run("grid", "paper", grid_hash="h2", tracking_uri=uri)
    assert other != first
    MlflowClient(uri).set_terminated(first, status="FINISHED")  # as runner's parent finish
    fresh = tracking.start_parent_run("grid", "paper", grid_hash="h1", tracking_uri=uri)
    assert fresh not in (first, other)


def test_trial_run_reopen_keeps_one_run(store):
    _, uri, exp = store
    config = validate_config({"name": "t1", "tables": ["1", "3a"]})
    run = tracking.TrialRun.start(config, experiment="grid", tracking_uri=uri,
                                  parent_run_id="p")
    run.log_metrics({"loss": 2.0, "val_dice": math.nan}, step=5)
    run.finish("FAILED")
    again = tracking.TrialRun.reopen(run.run_id, tracking_uri=uri)
    again.log_params(config)  # same values: nothing new, no error
    again.log_metrics({"loss": 1.0}, step=10)
    again.finish()
    client = MlflowClient(uri)
    runs = client.search_runs([exp], "tags.`diffseg3d.trial` = 't1'")
    assert [r.info.run_id for r in runs] == [run.run_id]
    data = runs[0].data
    assert data.params == flatten(config)
    assert data.tags["diffseg3d.tables"] == "1,3a" and data.tags["mlflow.parentRunId"] == "p"
    assert runs[0].info.status == "FINISHED"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, "loss"))
    assert history == [(5, 2.0), (10, 1.0)]
    assert math.isnan(client.get_metric_history(run.run_id, "val_dice")[0].value)
    changed = config.model_copy(update={"seed": 3})
    with pytest.raises(ValueError, match="seed"):
        again.log_params(changed)
    with pytest.raises(ValueError, match="not found"):
        tracking.TrialRun.reopen("0" * 32, tracking_uri=uri)


def test_restart_without_checkpoint_supersedes_the_unfinished_run(store):
    """A trial interrupted before its first checkpoint restarts from step 0: its earlier,
    unfinished run is soft-deleted (restorable) so the grid keeps exactly one run per trial."""
    _, uri, exp = store
    config = validate_config({"name": "t2", "tables": ["1"]})
    other = validate_config({"name": "t3", "tables": ["1"]})
    done = tracking.TrialRun.start(other, experiment="grid", tracking_uri=uri, parent_run_id="q")
    done.finish()
    stale = tracking.TrialRun.start(config, experiment="grid", tracking_uri=uri,
                                    parent_run_id="q")
    stale.log_metrics({"loss": 3.0}, step=1)  # killed here: status stays RUNNING
    fresh = tracking.TrialRun.start(config, experiment="grid", tracking_uri=uri,
                                    parent_run_id="q")
    client = MlflowClient(uri)
    active = client.search_runs([exp], "tags.`mlflow.parentRunId` = 'q'")
    assert sorted(r.info.run_id for r in active) == sorted([done.run_id, fresh.run_id])
    old = client.get_run(stale.run_id)
    assert old.info.lifecycle_stage == "deleted"
    assert old.data.tags["diffseg3d.superseded_by"] == fresh.run_id
    # Under another parent (another grid run) nothing is touched.
    elsewhere = tracking.TrialRun.start(config, experiment="grid", tracking_uri=uri,
                                        parent_run_id="r")
    assert client.get_run(fresh.run_id).info.lifecycle_stage == "active"
    assert client.get_run(elsewhere.run_id).info.lifecycle_stage == "active"


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
@pytest.mark.parametrize(("exported", "expected"), [(None, "true"), ("false", "false")])
def test_tracking_turns_mlflow_telemetry_off_unless_the_user_chose(exported, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    if exported is not None:
        env["MLFLOW_DISABLE_TELEMETRY"] = exported
    code = ("import os, diffseg3d.experiments.tracking.mlflow_runs; "
            "print(os.environ['MLFLOW_DISABLE_TELEMETRY'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == expected
