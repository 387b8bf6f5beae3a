"""A trial that diverges under Ray Tune is not retried (retries allowed: 2): one MLflow run,
ended FAILED with the reason as a tag, and the grid's result names the step."""

import pytest
import yaml
from diffseg3d.experiments.cluster.runner import failed_trials, run_grid
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

#: Smoke-sized, without a profile (a profile would replace the learning rate): 1e38 after a
#: one-step warmup overflows the parameters at the second update. No checkpoints, so a retry
#: would start a new MLflow run (and delete this one as superseded).
BASE = {
    "method": "unet", "data": {"batch_size": 2, "augment": False},
    "model": {"channels": [4, 8], "num_res_blocks": 1, "compute_dtype": "float32"},
    "optim": {"learning_rate": 1e38, "warmup_steps": 1},
    "train": {"steps": 6, "log_every": 1, "checkpoint_every": 0, "eval_every": 0},
    "eval": {"save_predictions": 0}, "resources": {"cpus_per_trial": 1},
}


@pytest.mark.timeout(600)
def test_a_diverged_trial_is_not_retried_and_is_reported_failed(tmp_path, local_ray):
    from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

    data = make_phantom(tmp_path / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8)))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "diverging", "seeds": [0], "data_sets": {"phantom": "replaced"}, "base": BASE,
        "comparisons": [{"table": "1", "axes": {"method": ["unet"]}}]}))
    out = tmp_path / "runs"
    results = run_grid(grid, profile=None, data_override=data, out_dir=out, max_failures=2)

    ((name, error),) = failed_trials(results)
    assert results[0]["status"] == "error"
    assert error.startswith(f"trial {name}: non-finite training at step ")
    assert "loss=nan" in error and "no checkpoint was saved" in error
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("diverging").experiment_id],
                              run_view_type=ViewType.ALL)
    (trial_run,) = [r for r in runs if r.data.tags.get("diffseg3d.kind") == "trial"]
    assert trial_run.info.lifecycle_stage == "active" and trial_run.info.status == "FAILED"
    assert trial_run.data.tags["diffseg3d.failure"] == f"NonFiniteTrainingError: {error}"
    (parent,) = [r for r in runs if r.data.tags.get("diffseg3d.kind") == "grid"]
    assert parent.info.status == "FAILED"
    assert parent.data.tags["diffseg3d.failed_trials"] == name
