"""`eval.checkpoint: best_val` and `eval.samplers` on a tiny real trial: the test split is scored
with the parameters of the best logged validation Dice (checked against restoring that
checkpoint and predicting independently), a resumed trial chooses the same checkpoint as an
uninterrupted one, and each sampling variant writes its own per-case CSV."""

import csv
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from diffseg3d.analysis.collect import collect_mlflow
from diffseg3d.analysis.comparisons import SAMPLING_TABLE
from diffseg3d.analysis.table_data import compute_table
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom
from diffseg3d.core.metrics import evaluate
from diffseg3d.core.train.checkpoint import FOLDER_STATE, restore_checkpoint
from diffseg3d.core.train.state import create_train_state
from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.config.layering import deep_merge, load_profile
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.tracking import mlflow_runs as tracking
from diffseg3d.experiments.tracking.record import TAG_TEST_CHECKPOINT
from diffseg3d.experiments.trial import build
from diffseg3d.experiments.trial.run import run_trial
from diffseg3d.experiments.trial.scoring import predict_split
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

EXPERIMENT = "best-val"
VARIANTS = ["ddpm_fixed_large", "ddpm_fixed_small", "ddim"]


class Interrupted(RuntimeError):
    """A lost worker, raised from the report callback after the first checkpoint."""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("best_val")
    # 6 cases -> 3 train / 1 valid / 2 test (phantom splits).
    data = make_phantom(root / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8)))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracking.ensure_experiment(
        EXPERIMENT, tracking.default_artifact_location(root, uri), tracking_uri=uri
    )
    parent = tracking.start_parent_run(EXPERIMENT, "best-val-grid", grid_hash="g1",
                                       tracking_uri=uri)
    return {"root": root, "data": Path(data), "uri": uri, "parent": parent}


def tiny_config(env, name):
    # Validation and a checkpoint at every other step: several candidates compete, and every
    # one of them can be restored on its own.
    over = {"name": name, "data": {"root": str(env["data"])},
            "train": {"steps": 12, "eval_every": 2, "checkpoint_every": 2, "log_every": 2},
            "eval": {"checkpoint": "best_val", "samplers": VARIANTS, "save_predictions": 0}}
    return validate_config(deep_merge(load_profile("smoke"), over))


@pytest.fixture(scope="module")
def full(env):
    config = tiny_config(env, "full")
    copies = {}

    def keep_copy(metrics, directory):  # as Ray Tune does: older folders are deleted locally
        step = metrics["step"]
        copies[step] = shutil.copytree(directory, env["root"] / f"copy_{step}")

    result = run_trial(config, workdir=env["root"] / "full", tracking_uri=env["uri"],
                       experiment=EXPERIMENT, parent_run_id=env["parent"], report=keep_copy)
    copies[result["step"]] = Path(result["checkpoint_dir"])
    return config, result, copies


def _history(env, run_id, key):
    return {m.step: m.value for m in MlflowClient(env["uri"]).get_metric_history(run_id, key)}


def _read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _score_checkpoint(config, folder, variant_config=None):
    """Independent path: restore the TrainState of `folder`, predict the test split with the
    trial's test key, score per case."""
    dataset = PreparedDataset.load(config.data.root)
    model = build.model(config, dataset.num_classes)
    tx, _ = build.optimizer(config)
    key = jax.random.PRNGKey(config.seed)
    target = jax.eval_shape(lambda k: create_train_state(
        model, tx, k, diffusion=True, image_shape=(config.data.batch_size, *dataset.shape, 1)),
        jax.random.fold_in(key, 0))
    state, _ = restore_checkpoint(Path(folder) / FOLDER_STATE, target)
    predict = build.predictor(variant_config or config, model, dataset.num_classes)
    preds, labels = predict_split(predict, state.params, dataset, "test", config.data.batch_size,
                                  jax.random.fold_in(key, 3))
    return evaluate.evaluate_cases(dataset.case_ids("test"), preds, labels,
                                   dataset.class_names, dataset.spacing)


def test_chosen_step_is_the_best_validation_and_scored_with_its_parameters(env, full):
    config, result, copies = full
    val = _history(env, result["run_id"], "val_dice")
    assert sorted(val) == [2, 4, 6, 8, 10, 12]
    steps = sorted(val)
    best = steps[int(np.argmax([val[s] for s in steps]))]  # the earliest of ties
    assert result["test_checkpoint_step"] == best
    run = MlflowClient(env["uri"]).get_run(result["run_id"])
    assert run.data.metrics["test_checkpoint_step"] == best
    assert run.data.tags[TAG_TEST_CHECKPOINT] == f"{best} (best_val)"
    rows = _score_checkpoint(config, copies[best])
    assert result["test_dice"] == pytest.approx(evaluate.summarise(rows)["mean_case_dice"],
                                                abs=1e-12)
    got = _read_rows(result["per_case_csv"])
    assert [float(r["dice"]) for r in got] == pytest.approx([r["dice"] for r in rows],
                                                            nan_ok=True, abs=1e-12)


def test_resume_keeps_the_best_so_far_and_chooses_the_same_checkpoint(env, full):
    _, full_result, _ = full
    config = tiny_config(env, "resumed")
    seen = []

    def crash(metrics, directory):  # after three validations, three to go
        if metrics["step"] == 6:
            seen.append(directory)
            raise Interrupted(f"lost worker at step {metrics['step']}")

    kwargs = dict(workdir=env["root"] / "resumed", tracking_uri=env["uri"], experiment=EXPERIMENT)
    with pytest.raises(Interrupted):
        run_trial(config, report=crash, **kwargs)
    result = run_trial(config, resume_from=seen[0], **kwargs)
    assert result["test_checkpoint_step"] == full_result["test_checkpoint_step"]
    assert result["params_digest"] == full_result["params_digest"]
    assert _read_rows(result["per_case_csv"]) == _read_rows(full_result["per_case_csv"])


def test_each_sampling_variant_writes_a_csv_and_the_trained_one_is_the_main_result(env, full):
    config, result, copies = full
    folder = Path(result["per_case_csv"]).parent / "sampling"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{v}.csv" for v in VARIANTS)
    main = _read_rows(result["per_case_csv"])
    assert _read_rows(folder / "ddpm_fixed_large.csv") == main
    client = MlflowClient(env["uri"])
    top = {f.path for f in client.list_artifacts(result["run_id"], "sampling")}
    assert top == {f"sampling/{v}.csv" for v in VARIANTS}
    metrics = client.get_run(result["run_id"]).data.metrics
    assert metrics["sampling/ddpm_fixed_large/test_dice"] == metrics["test_dice"]
    # DDIM from the chosen parameters, predicted independently, gives the ddim CSV.
    ddim = config.model_copy(update={"diffusion": config.diffusion.model_copy(
        update={"sampler": "ddim"})})
    rows = _score_checkpoint(config, copies[result["test_checkpoint_step"]], ddim)
    got = _read_rows(folder / "ddim.csv")
    assert [float(r["dice"]) for r in got] == pytest.approx([r["dice"] for r in rows],
                                                            nan_ok=True, abs=1e-12)


def test_the_analysis_reads_the_variants_into_table4(env, full):
    _, result, _ = full
    collection = collect_mlflow(EXPERIMENT, env["uri"])
    (run,) = collection.runs[collection.runs["run_id"] == result["run_id"]].itertuples()
    assert run.test_checkpoint == f"{result['test_checkpoint_step']} (best_val)"
    assert run.samplers == "ddim, ddpm_fixed_large, ddpm_fixed_small"
    rows = collection.sampling[collection.sampling["run_id"] == result["run_id"]]
    assert sorted(rows["sampling"].unique()) == sorted(VARIANTS)
    data = compute_table(collection.sampling, SAMPLING_TABLE)
    large = data.cells[("DDPM fixed_large", "phantom", "dice")]
    assert large.mean == pytest.approx(result["test_dice"], abs=1e-12)  # the main result
    assert {label for label, _, _ in data.cells} == {"DDPM fixed_large", "DDPM fixed_small",
                                                    "DDIM"}


def test_best_val_needs_validation():
    raw = deep_merge(load_profile("smoke"), {"train": {"eval_every": 0},
                                             "eval": {"checkpoint": "best_val"}})
    with pytest.raises(ConfigError, match="train.eval_every"):
        validate_config(raw)
