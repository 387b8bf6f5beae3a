"""A real nnU-Net trial on a tiny phantom through `run_trial`: nnU-Net's own planning, training
(killed after its first epoch and continued from nnU-Net's checkpoint in a fresh work folder, as
on another node), prediction of the test split, scored with the project's metrics and logged to
a real SQLite MLflow store like every other trial; trained on exactly the project's train
split. A data set nnU-Net refuses ends the run FAILED with nnU-Net's reason."""

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
#: Two nnU-Net epochs of 10 iterations: a checkpoint after the first to resume from.
STEPS, PER_EPOCH = 20, 10


class Interrupted(RuntimeError):
    """Stands in for a lost worker: raised from the report callback after a checkpoint."""


def _store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.ensure_experiment(EXPERIMENT, tracking.default_artifact_location(tmp_path, uri),
                               tracking_uri=uri)
    return uri


def _config(data, name):
    return validate_config({
        "name": name, "method": "nnunet", "data": {"root": str(data)},
        "train": {"steps": STEPS, "eval_every": 0}, "optim": {"warmup_steps": 0},
        "nnunet": {"iterations_per_epoch": PER_EPOCH}, "eval": {"save_predictions": 1}})


def test_nnunet_trains_on_the_projects_split_resumes_and_is_scored_like_every_trial(
        tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "POLL_SECONDS", 0.1)  # see epoch 1 before epoch 2 ends
    # 32x32x16: nnU-Net plans a 4-stage network with patch 16x32x32 and batch 2 there (at
    # 16x16x8 its 3-stage network has learnt nothing after 20 iterations).
    data = make_phantom(tmp_path / "phantom", PhantomSpec(cases=8, shape=(32, 32, 16)))
    dataset = PreparedDataset.load(data)
    uri = _store(tmp_path)
    config = _config(data, "nnunet_smoke")

    # ---- killed after nnU-Net's first epoch ----
    checkpoints = []

    def lost_after_first_checkpoint(metrics, folder):
        checkpoints.append((metrics["step"], folder))
        raise Interrupted(folder)

    with pytest.raises(Interrupted):
        run_trial(config, workdir=tmp_path / "first", tracking_uri=uri, experiment=EXPERIMENT,
                  report=lost_after_first_checkpoint)
    assert [step for step, _ in checkpoints] == [PER_EPOCH]
    saved = tmp_path / "first" / "checkpoints" / f"step_{PER_EPOCH:07d}"
    assert (saved / "checkpoint_latest.pth").is_file()
    run_id = json.loads((saved / record.TRIAL_JSON).read_text())["mlflow_run_id"]

    # ---- restarted on "another node": a fresh work folder and Tune's copy of the checkpoint
    reports = []
    work = tmp_path / "second"
    result = run_trial(config, workdir=work, tracking_uri=uri, experiment=EXPERIMENT,
                       resume_from=saved, report=lambda m, d: reports.append((m, d)))
    assert result["run_id"] == run_id and result["step"] == STEPS
    train_log = (work / "nnunet_logs" / "train.log").read_text()
    assert train_log.splitlines()[1].endswith(
        "nnUNetv2_train 1 3d_fullres 0 -tr nnUNetTrainerStepBudget -p nnUNetPlans -device cpu "
        "--c")  # nnU-Net continued, not restarted
    assert reports[-1][0]["done"] is True

    # nnU-Net trained and validated on the project's split, never on the test cases.
    fold = next((work / "nnunet").glob("nnUNet_results/*/*/fold_0"))
    used = json.loads((fold / "split_used.json").read_text())
    assert sorted(used["train"]) == sorted(dataset.case_ids("train"))
    assert sorted(used["val"]) == sorted(dataset.case_ids("valid"))
    assert not set(used["train"] + used["val"]) & set(dataset.case_ids("test"))
    assert json.loads((fold / "progress.json").read_text())["epoch"] == STEPS // PER_EPOCH

    # Scored on the test split with the project's metrics, per case and class.
    with open(result["per_case_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["case"] for r in rows}) == sorted(dataset.case_ids("test"))
    assert {r["class"] for r in rows} == set(CLASS_NAMES)
    # 20 iterations already find the body wall, the largest structure (a network that predicts
    # background only scores 0). How well varies from run to run: nnU-Net's training on the
    # CPU is not reproducible (its augmentation workers), 0.39 to above 0.5 on the same data.
    assert result["test_dice/body_wall"] > 0.2, result
    assert 0.0 <= result["test_dice"] <= 1.0

    # The prediction scored is nnU-Net's own output file, on the prepared grid.
    case = dataset.case_ids("test")[0]
    own = np.asarray(nib.load(str(work / "nnunet_predictions" / f"{case}.nii.gz")).dataobj)
    saved_pred = np.asarray(nib.load(str(work / record.ARTIFACT_PREDICTIONS
                                         / f"{case}.nii.gz")).dataobj)
    np.testing.assert_array_equal(own, saved_pred)

    # One MLflow run like the other trials': metrics, tags, artifacts; FINISHED.
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["axis.method"] == "nnunet"
    assert run.data.tags["axis.dice_loss"] == "-"
    assert run.data.tags[record.TAG_DEVICE_KIND] == "cpu"
    assert run.data.metrics["test_dice"] == pytest.approx(result["test_dice"])
    assert run.data.metrics["cost_train_seconds"] > 0
    losses = client.get_metric_history(run_id, "nnunet_train_loss")
    assert sorted(m.step for m in losses) == [PER_EPOCH, STEPS]  # before and after the kill
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {record.ARTIFACT_PER_CASE, record.ARTIFACT_CONFIG, record.ARTIFACT_PREDICTIONS,
            ARTIFACT_NNUNET_MODEL, "nnunet_logs"} <= artifacts
    model = {a.path for a in client.list_artifacts(run_id, f"{ARTIFACT_NNUNET_MODEL}/fold_0")}
    assert f"{ARTIFACT_NNUNET_MODEL}/fold_0/checkpoint_final.pth" in model
    assert f"{ARTIFACT_NNUNET_MODEL}/fold_0/checkpoint_best.pth" not in model


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
    uri = _store(tmp_path)
    with pytest.raises(pipeline.NnunetRefusedError) as err:
        run_trial(_config(data, "refused"), workdir=tmp_path / "work", tracking_uri=uri,
                  experiment=EXPERIMENT)
    message = str(err.value)
    assert message.startswith("nnU-Net refused data set 'phantom' in "
                              "nnUNetv2_plan_and_preprocess (exit 1): ")
    assert "Unexpected labels found in file" in message and "99." in message, message
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "NnunetRefusedError: nnU-Net refused data set 'phantom'" in runs[0].data.tags[
        record.TAG_FAILURE]
