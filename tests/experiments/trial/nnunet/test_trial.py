"""A real nnU-Net trial on a tiny phantom through `run_trial`: nnU-Net's own planning, training of
a few iterations, prediction of the test split, scored with the project's metrics and logged to a
real SQLite MLflow store like every other trial; trained on exactly the project's train split. A
data set nnU-Net refuses ends the run FAILED with nnU-Net's reason."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.sources.phantom import CLASS_NAMES, PhantomSpec, make_phantom
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.tracking import mlflow_runs as tracking
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.trial.nnunet import pipeline
from diffseg3d.experiments.trial.nnunet.trial import ARTIFACT_NNUNET_MODEL
from diffseg3d.experiments.trial.run import run_trial
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.requires("nnunet"), pytest.mark.timeout(900)]

EXPERIMENT = "nnunet"
STEPS = 20


def _config(data, name="nnunet_smoke"):
    return validate_config({
        "name": name, "method": "nnunet", "data": {"root": str(data)},
        "train": {"steps": STEPS, "eval_every": 0}, "optim": {"warmup_steps": 0},
        "eval": {"save_predictions": 1}})


def test_nnunet_trains_on_the_projects_split_and_is_scored_like_every_trial(tmp_path):
    # 32x32x16: nnU-Net plans a 4-stage network with patch 16x32x32 and batch 2 there (at
    # 16x16x8 its 3-stage network has learnt nothing after STEPS iterations).
    data = make_phantom(tmp_path / "phantom", PhantomSpec(cases=8, shape=(32, 32, 16)))
    dataset = PreparedDataset.load(data)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.ensure_experiment(EXPERIMENT, tracking_uri=uri)
    reports = []
    result = run_trial(_config(data), workdir=tmp_path / "work", tracking_uri=uri,
                       experiment=EXPERIMENT, report=lambda m, d: reports.append((m, d)))

    # nnU-Net trained and validated on the project's split, never on the test cases.
    layout_root = tmp_path / "work" / "nnunet"
    fold = next(layout_root.glob("nnUNet_results/*/*/fold_0"))
    used = json.loads((fold / "split_used.json").read_text())
    assert sorted(used["train"]) == sorted(dataset.case_ids("train"))
    assert sorted(used["val"]) == sorted(dataset.case_ids("valid"))
    assert not set(used["train"] + used["val"]) & set(dataset.case_ids("test"))
    progress = json.loads((fold / "progress.json").read_text())
    assert progress["iterations"] == STEPS == result["step"]

    # Scored on the test split with the project's metrics, per case and class.
    with open(result["per_case_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["case"] for r in rows}) == sorted(dataset.case_ids("test"))
    assert {r["class"] for r in rows} == set(CLASS_NAMES)
    # A few iterations already find the body wall, the largest structure.
    assert result["test_dice/body_wall"] > 0.5, result
    assert 0.0 <= result["test_dice"] <= 1.0

    # The prediction scored is nnU-Net's own output file, on the prepared grid.
    case = dataset.case_ids("test")[0]
    own = np.asarray(nib.load(str(tmp_path / "work" / "nnunet_predictions"
                                  / f"{case}.nii.gz")).dataobj)
    saved = np.asarray(nib.load(str(tmp_path / "work" / record.ARTIFACT_PREDICTIONS
                                    / f"{case}.nii.gz")).dataobj)
    np.testing.assert_array_equal(own, saved)

    # One MLflow run like the other trials': metrics, tags, artifacts; FINISHED.
    client = MlflowClient(uri)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["axis.method"] == "nnunet"
    assert run.data.tags["axis.dice_loss"] == "-"
    assert run.data.tags[record.TAG_DEVICE_KIND] == "cpu"
    assert run.data.metrics["test_dice"] == pytest.approx(result["test_dice"])
    assert run.data.metrics["cost_train_seconds"] > 0
    assert "nnunet_train_loss" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(result["run_id"])}
    assert {record.ARTIFACT_PER_CASE, record.ARTIFACT_CONFIG, record.ARTIFACT_PREDICTIONS,
            ARTIFACT_NNUNET_MODEL, "nnunet_logs"} <= artifacts
    model = {a.path for a in client.list_artifacts(result["run_id"],
                                                   f"{ARTIFACT_NNUNET_MODEL}/fold_0")}
    assert f"{ARTIFACT_NNUNET_MODEL}/fold_0/checkpoint_final.pth" in model
    assert f"{ARTIFACT_NNUNET_MODEL}/fold_0/checkpoint_best.pth" not in model
    assert reports[-1][0]["done"] is True


def test_a_data_set_nnunet_refuses_fails_its_run_with_nnunets_reason(tmp_path):
    data = make_phantom(tmp_path / "phantom", PhantomSpec(cases=8, shape=(16, 16, 8)))
    dataset = PreparedDataset.load(data)
    # A label value the data set does not declare, in a training case: nnU-Net's dataset
    # integrity check refuses it (the trial reads labels lazily, so nnU-Net sees it first).
    case = dataset.case_ids("train")[0]
    label = nib.load(str(dataset.label_path(case)))
    broken = np.asarray(label.dataobj).copy()
    broken[0, 0, 0] = 99
    nib.save(nib.Nifti1Image(broken.astype(np.uint8), label.affine), str(dataset.label_path(case)))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.ensure_experiment(EXPERIMENT, tracking_uri=uri)
    with pytest.raises(pipeline.NnunetRefusedError) as err:
        run_trial(_config(data, "refused"), workdir=tmp_path / "work", tracking_uri=uri,
                  experiment=EXPERIMENT)
    message = str(err.value)
    assert message.startswith("nnU-Net refused data set 'phantom' in "
                              "nnUNetv2_plan_and_preprocess (exit 1): ")
    assert "Unexpected labels found in file" in message and "99." in message, message
    runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name(EXPERIMENT).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "NnunetRefusedError: nnU-Net refused data set 'phantom'" in runs[0].data.tags[
        record.TAG_FAILURE]


class Interrupted(RuntimeError):
    """Stands in for a lost worker: raised from the report callback after a checkpoint."""


def test_a_killed_nnunet_trial_continues_from_nnunets_checkpoint_in_its_run(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(pipeline, "POLL_SECONDS", 0.1)  # see epoch 1 before epoch 2 ends
    data = make_phantom(tmp_path / "phantom", PhantomSpec(cases=8, shape=(16, 16, 8)))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.ensure_experiment(EXPERIMENT, tracking_uri=uri)
    config = validate_config({
        "name": "resumed", "method": "nnunet", "data": {"root": str(data)},
        "train": {"steps": 20, "eval_every": 0}, "optim": {"warmup_steps": 0},
        "nnunet": {"iterations_per_epoch": 10}, "eval": {"save_predictions": 0}})
    checkpoints = []

    def lost_after_first_checkpoint(metrics, folder):
        checkpoints.append((metrics["step"], folder))
        raise Interrupted(folder)

    with pytest.raises(Interrupted):
        run_trial(config, workdir=tmp_path / "first", tracking_uri=uri, experiment=EXPERIMENT,
                  report=lost_after_first_checkpoint)
    assert [step for step, _ in checkpoints] == [10]  # after nnU-Net's first epoch
    saved = tmp_path / "first" / "checkpoints" / "step_0000010"
    assert (saved / "checkpoint_latest.pth").is_file()
    first_run = json.loads((saved / record.TRIAL_JSON).read_text())["mlflow_run_id"]

    # Restarted on "another node": a fresh work folder, only Tune's copy of the checkpoint.
    result = run_trial(config, workdir=tmp_path / "second", tracking_uri=uri,
                       experiment=EXPERIMENT, resume_from=saved)
    assert result["run_id"] == first_run and result["step"] == 20
    train_log = (tmp_path / "second" / "nnunet_logs" / "train.log").read_text()
    assert "nnUNetv2_train 1 3d_fullres 0 -tr nnUNetTrainerStepBudget" in train_log
    assert train_log.splitlines()[1].endswith("--c")  # nnU-Net continued, not restarted
    client = MlflowClient(uri)
    assert client.get_run(first_run).info.status == "FINISHED"
    losses = client.get_metric_history(first_run, "nnunet_train_loss")
    assert sorted(m.step for m in losses) == [10, 20]  # epoch 1 before, epoch 2 after the kill
