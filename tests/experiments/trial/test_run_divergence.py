"""A real trial that diverges (learning rate 1e38 after a one-step warmup: the second update
overflows the parameters) stops at the first non-finite step: the error names the step and its
loss parts, the checkpoints of finite training are kept and none after, and the MLflow run ends
FAILED with the reason as its `diffseg3d.failure` tag."""

import math

import pytest
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom
from diffseg3d.experiments.config.layering import deep_merge, load_profile
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.tracking import mlflow_runs as tracking
from diffseg3d.experiments.tracking.record import TAG_FAILURE
from diffseg3d.experiments.trial.checkpoint import read_trial_json
from diffseg3d.experiments.trial.divergence import NonFiniteTrainingError
from diffseg3d.experiments.trial.run import run_trial
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def test_a_diverging_trial_stops_names_the_step_and_keeps_its_finite_checkpoints(tmp_path):
    data = make_phantom(tmp_path / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8)))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.ensure_experiment("d", tracking.default_artifact_location(tmp_path, uri),
                               tracking_uri=uri)
    config = validate_config(deep_merge(load_profile("smoke"), {
        "name": "diverging", "method": "unet", "data": {"root": str(data)},
        "optim": {"learning_rate": 1e38, "warmup_steps": 1},
        "train": {"steps": 8, "log_every": 1, "checkpoint_every": 1, "eval_every": 0},
        "eval": {"save_predictions": 0}}))
    assert config.train.stop_on_nonfinite  # the default
    with pytest.raises(NonFiniteTrainingError) as info:
        run_trial(config, workdir=tmp_path / "trial", tracking_uri=uri, experiment="d")

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("d").experiment_id])
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                           "loss"))
    bad = next(step for step, value in history if not math.isfinite(value))
    assert bad > 1 and history[-1][0] == bad  # logged up to the bad step, then stopped
    assert info.value.step == bad
    message = str(info.value)
    assert message.startswith(f"trial diverging: non-finite training at step {bad}: ")
    for part in ("loss=nan", "loss_ce=", "loss_dice=", "grad_norm=", "lr="):
        assert part in message
    kept = tmp_path / "trial" / "checkpoints" / f"step_{bad - 1:07d}"
    assert f"the last checkpoint, {kept}, is kept" in message
    folders = sorted(p.name for p in (tmp_path / "trial" / "checkpoints").iterdir())
    assert folders[-1] == kept.name  # nothing saved at or after the bad step
    assert read_trial_json(kept)["step"] == bad - 1
    assert run.info.status == "FAILED"
    assert run.data.tags[TAG_FAILURE] == f"NonFiniteTrainingError: {message}"
