"""One real smoke trial on a tiny phantom, logged to a real SQLite MLflow store; and a resumed
trial that continues its own run and ends with the same parameters as an uninterrupted one."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from diffseg3d.core.data.sources.phantom import CLASS_NAMES, PhantomSpec, make_phantom
from diffseg3d.experiments.config.layering import deep_merge, load_profile
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.tracking import mlflow_runs as tracking
from diffseg3d.experiments.tracking.record import TRIAL_JSON, flatten
from diffseg3d.experiments.trial.run import TrialError, run_trial
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

EXPERIMENT = "smoke"


class Interrupted(RuntimeError):
    """Stands in for a lost worker: raised from the report callback after a checkpoint."""


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """JAX's persistent compilation cache for this module only: the three trials compile the
    same train step, so the second and third load it instead of compiling again."""
    import jax

    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    before = {k: getattr(jax.config, k) for k in keys}
    jax.config.update(keys[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(keys[1], 0.0)
    jax.config.update(keys[2], 0)
    yield
    for k, v in before.items():
        jax.config.update(k, v)
    try:  # forget the initialised cache, so later test modules do not write into this one
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):
        pass


@pytest.fixture(scope="module")
def env(tmp_path_factory, compile_cache):
    root = tmp_path_factory.mktemp("trial")
    # 6 cases -> 3 train / 1 valid / 2 test (phantom splits).
    data = make_phantom(root / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8)))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracking.ensure_experiment(
        EXPERIMENT, tracking.default_artifact_location(root, uri), tracking_uri=uri
    )
    parent = tracking.start_parent_run(EXPERIMENT, "smoke-grid", grid_hash="g1", tracking_uri=uri)
    return {"root": root, "data": Path(data), "uri": uri, "parent": parent}


def smoke_config(env, **over):
    raw = deep_merge(load_profile("smoke"), {"data": {"root": str(env["data"])}})
    return validate_config(deep_merge(raw, over))


@pytest.fixture(scope="module")
def full_run(env):
    config = smoke_config(env, name="full", tables=["1", "2"])
    reports = []
    result = run_trial(
        config, workdir=env["root"] / "full", tracking_uri=env["uri"], experiment=EXPERIMENT,
        parent_run_id=env["parent"], report=lambda m, d: reports.append((dict(m), d)),
    )
    return config, result, reports


def runs_named(env, name):
    client = MlflowClient(env["uri"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id], f"tags.`diffseg3d.trial` = '{name}'")


def test_one_run_with_params_tags_and_metric_history(env, full_run):
    config, result, _ = full_run
    (run,) = runs_named(env, "full")
    assert run.info.run_id == result["run_id"] and run.info.status == "FINISHED"
    assert run.data.params == flatten(config)
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == env["parent"]
    assert tags["diffseg3d.tables"] == "1,2"
    assert tags["diffseg3d.config_hash"] == result["config_hash"]
    client = MlflowClient(env["uri"])
    # smoke: log_every 5, eval_every 10, 20 steps.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [5, 10, 15, 20]
    for key in ("loss_ce", "loss_dice", "grad_norm", "lr"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 4
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_dice")) == [
        10, 20]
    lrs = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "lr"),
                                   key=lambda m: m.step)]
    assert lrs[0] > lrs[-1]  # cosine decay after the 2 warmup steps


def test_per_case_csv_matches_logged_test_means(env, full_run):
    _, result, _ = full_run
    with open(result["per_case_csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    header = list(rows[0])
    assert header[:6] == ["case", "class", "dice", "hd95", "roi_voxels", "roi_mm3"]
    assert len(rows) == 2 * len(CLASS_NAMES)  # 2 test cases x 8 foreground classes
    assert {r["case"] for r in rows} == {"phantom_004", "phantom_005"}
    # Independent aggregation: per case, mean over non-NaN classes; then mean over cases.
    per_case = {}
    for r in rows:
        per_case.setdefault(r["case"], []).append(float(r["dice"]))
    expected = np.mean([np.nanmean(v) for v in per_case.values()])
    run = MlflowClient(env["uri"]).get_run(result["run_id"])
    assert run.data.metrics["test_dice"] == pytest.approx(expected, abs=1e-9)
    assert run.data.metrics["test_n_nan_dice"] == sum(math.isnan(float(r["dice"])) for r in rows)
    voxels = {r["case"]: 0 for r in rows}
    for r in rows:
        voxels[r["case"]] += int(r["roi_voxels"])
        assert float(r["roi_mm3"]) == pytest.approx(int(r["roi_voxels"]) * 1.5 * 1.5 * 3.0)


def test_artifacts_and_reports(env, full_run):
    _, result, reports = full_run
    client = MlflowClient(env["uri"])
    top = {f.path for f in client.list_artifacts(result["run_id"])}
    assert {"per_case_metrics.csv", "config.yaml", "checkpoint", "predictions"} <= top
    preds = {f.path for f in client.list_artifacts(result["run_id"], "predictions")}
    assert preds == {"predictions/phantom_004.nii.gz", "predictions/phantom_004.png"}
    ckpt = {f.path for f in client.list_artifacts(result["run_id"], "checkpoint")}
    assert "checkpoint/trial.json" in ckpt
    # A report after the step-10 checkpoint and a final one, each with its checkpoint folder.
    assert [m["step"] for m, _ in reports] == [10, 20]
    assert reports[-1][0]["done"] is True and "test_dice" in reports[-1][0]
    meta = json.loads((Path(reports[0][1]) / TRIAL_JSON).read_text())
    assert meta["mlflow_run_id"] == result["run_id"] and meta["step"] == 10
    assert "val_dice" in reports[0][0] and "loss" in reports[0][0]


def test_resume_continues_the_same_run_and_reaches_the_same_params(env, full_run):
    _, full, _ = full_run
    # Evaluation settings do not touch training: the parameters must match the full run's.
    config = smoke_config(env, name="resumed", train={"eval_every": 0},
                          eval={"save_predictions": 0})
    checkpoints = []

    def crash_after_first_checkpoint(metrics, directory):
        checkpoints.append(directory)
        raise Interrupted(f"lost worker at step {metrics['step']}")

    kwargs = dict(workdir=env["root"] / "resumed", tracking_uri=env["uri"], experiment=EXPERIMENT)
    with pytest.raises(Interrupted):
        run_trial(config, report=crash_after_first_checkpoint, **kwargs)
    (failed,) = runs_named(env, "resumed")
    assert failed.info.status == "FAILED"

    result = run_trial(config, resume_from=checkpoints[0], **kwargs)
    (run,) = runs_named(env, "resumed")  # still exactly one run
    assert run.info.run_id == result["run_id"] == failed.info.run_id
    assert run.info.status == "FINISHED"
    assert result["params_digest"] == full["params_digest"]
    client = MlflowClient(env["uri"])
    losses = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}
    full_losses = {m.step: m.value for m in client.get_metric_history(full["run_id"], "loss")}
    assert losses == pytest.approx(full_losses, rel=1e-6)


def test_resume_refuses_another_config(env, full_run):
    _, full, _ = full_run
    other = smoke_config(env, name="other", seed=7)
    with pytest.raises(TrialError, match="checkpoint belongs to config"):
        run_trial(other, workdir=env["root"] / "other", tracking_uri=env["uri"],
                  experiment=EXPERIMENT, resume_from=full["checkpoint_dir"])
    with pytest.raises(TrialError, match="no trial.json"):
        run_trial(other, workdir=env["root"] / "other", tracking_uri=env["uri"],
                  experiment=EXPERIMENT, resume_from=env["root"])


def test_train_command_runs_one_trial(env, full_run, tmp_path, monkeypatch, capsys):
    from diffseg3d.cli.main import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    profile = Path(__file__).parents[3] / "experiments" / "profiles" / "smoke.yaml"
    out = tmp_path / "runs"
    assert main(["train", str(profile), "--data", str(env["data"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test_dice = " in printed
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("train")
    (run,) = client.search_runs([exp.experiment_id])
    # Same settings as the full run (the smoke profile on the same data): same parameters.
    assert run.data.tags["diffseg3d.params_digest"] == full_run[1]["params_digest"]
    assert run.data.tags["diffseg3d.trial"] == "phantom_diffusion_x0_recycle-Y_dice-Y_k5_s0"
    assert (out / "trials").is_dir() and run.info.run_id in printed
