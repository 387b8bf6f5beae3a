"""nnU-Net's programs as the trial runs them, without nnU-Net: the command lines its users type,
the environment (planning never with 0 augmentation workers), a failing program's one-line
reason and no process left behind, and the trial's checks on what nnU-Net wrote."""

import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom
from diffseg3d.experiments.cluster.trainable import newest_checkpoint
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.trial.checkpoint import TrialError
from diffseg3d.experiments.trial.nnunet import pipeline, trial
from diffseg3d.experiments.trial.nnunet.budget import Budget
from diffseg3d.experiments.trial.nnunet.layout import RawLayout

LAYOUT = RawLayout(Path("/w/nnunet"), "Dataset001_phantom")


def test_commands_are_nnunets_own_programs_with_the_trials_arguments():
    train = pipeline.train_command("3d_fullres", "cpu", resume=True)
    assert train[:4] == [sys.executable, "-m", pipeline.ENTRY, "nnUNetv2_train"]
    assert train[4:] == ["1", "3d_fullres", "0", "-tr", "nnUNetTrainerStepBudget", "-p",
                         "nnUNetPlans", "-device", "cpu", "--c"]
    assert "--c" not in pipeline.train_command("3d_fullres", "cuda", resume=False)
    plan = pipeline.plan_command("3d_fullres", workers=0)
    assert plan[3:] == ["nnUNetv2_plan_and_preprocess", "-d", "1", "-c", "3d_fullres", "-np",
                        "1", "-npfp", "1", "--verify_dataset_integrity"]
    predict = pipeline.predict_command(LAYOUT, "3d_fullres", "cpu", 3, Path("/w/out"))
    args = dict(zip(predict[4::2], predict[5::2], strict=False))
    assert args["-i"] == "/w/nnunet/nnUNet_raw/Dataset001_phantom/imagesTs"
    assert (args["-f"], args["-chk"], args["-npp"]) == ("0", "checkpoint_final.pth", "3")


def test_environment_names_the_folders_workers_and_budget():
    env = pipeline.environment(LAYOUT, 0, Budget(2, 5, 1, 1))
    assert env["nnUNet_raw"] == "/w/nnunet/nnUNet_raw"
    assert env["nnUNet_results"] == "/w/nnunet/nnUNet_results"
    assert (env["nnUNet_n_proc_DA"], env["nnUNet_def_n_proc"]) == ("0", "1")
    assert json.loads(env[pipeline.BUDGET_ENV]) == {
        "epochs": 2, "iterations_per_epoch": 5, "val_iterations_per_epoch": 1, "save_every": 1}
    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA): 0 fails there.
    assert pipeline.planning_environment(env)["nnUNet_n_proc_DA"] == "1"
    assert pipeline.planning_environment({**env, "nnUNet_n_proc_DA": "6"})[
        "nnUNet_n_proc_DA"] == "6"
    assert pipeline.BUDGET_ENV not in pipeline.environment(LAYOUT, 4, None)  # published


def test_workers_default_to_the_trials_cpus_but_one_and_the_device_follows_the_request():
    assert trial.nnunet_workers(validate_config(
        {"method": "nnunet", "resources": {"cpus_per_trial": 9}})) == 8
    assert trial.nnunet_workers(validate_config({"method": "nnunet"})) == 0
    assert trial.nnunet_workers(validate_config(
        {"method": "nnunet", "nnunet": {"workers": 3}})) == 3
    assert trial.nnunet_device(validate_config(
        {"method": "nnunet", "resources": {"accelerator": "gpu"}})) == "cuda"
    assert trial.nnunet_device(validate_config({"method": "nnunet"})) == "cpu"


def test_failure_reason_is_the_last_exception_line_of_the_last_traceback():
    output = ("Fingerprint extraction...\nTraceback (most recent call last):\n"
              '  File "x.py", line 3, in <module>\n    assert ok\n'
              "AssertionError: Images and labels do not match for case_001\n"
              "exiting\n")
    assert pipeline.failure_reason(output) == (
        "AssertionError: Images and labels do not match for case_001")
    assert pipeline.failure_reason("a\nlast words\n\n") == "last words"
    integrity = ("Error: Unexpected labels found in file /raw/labelsTr/c1.nii.gz.\n"
                 "Expected: [0, 1]\nFound: [ 0.  1. 99.]\nTraceback (most recent call last):\n"
                 "  File x\nRuntimeError: Some segmentation images contained unexpected labels.\n")
    assert pipeline.failure_reason(integrity) == (
        "Error: Unexpected labels found in file /raw/labelsTr/c1.nii.gz. Expected: [0, 1] "
        "Found: [ 0.  1. 99.] RuntimeError: Some segmentation images contained unexpected "
        "labels.")
    assert len(pipeline.failure_reason("x" * 5000)) == pipeline.REASON_CHARS
    assert pipeline.failure_reason("") == "no output"


def test_a_failing_program_raises_one_error_naming_data_set_program_and_reason(tmp_path):
    command = [sys.executable, "-c", "raise RuntimeError('patch size too small')", "prog"]
    log = tmp_path / "logs" / "plan.log"
    with pytest.raises(pipeline.NnunetRefusedError) as err:
        pipeline.run_program(command, {}, log, data_name="tiny", refusal=True)
    message = str(err.value)
    assert "refused data set 'tiny'" in message and "in prog (exit 1)" in message
    assert "RuntimeError: patch size too small" in message and str(log) in message
    with pytest.raises(pipeline.NnunetError, match="failed on data set 'tiny'"):
        pipeline.run_program(command, {}, log, data_name="tiny")
    assert log.read_text().count("$ ") == 2  # both runs' output kept in the log


def test_an_interrupted_program_is_stopped_not_left_running(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "POLL_SECONDS", 0.1)
    pid_file = tmp_path / "pid"
    command = [sys.executable, "-c",
               f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
               "time.sleep(60)", "prog"]
    polls = []

    def poll():
        polls.append(1)
        if pid_file.is_file() and pid_file.read_text():
            raise KeyboardInterrupt  # what Ctrl-C or Ray's stop raises in the trial

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_program(command, {"X": "1"}, tmp_path / "log", data_name="d", poll=poll)
    assert time.monotonic() - started < 30 and polls
    pid = int(pid_file.read_text())
    alive = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True,
                           text=True).stdout.strip()
    assert alive == "" or alive.startswith("Z"), f"nnU-Net child {pid} still running: {alive}"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_phantom(tmp_path_factory.mktemp("p") / "phantom",
                        PhantomSpec(cases=8, shape=(16, 16, 8)))
    return PreparedDataset.load(root)


def test_split_used_must_be_the_projects_train_and_valid_split(tmp_path, dataset):
    path = tmp_path / "split_used.json"
    train, valid = dataset.case_ids("train"), dataset.case_ids("valid")
    path.write_text(json.dumps({"fold": 0, "train": train[::-1], "val": valid}))
    trial.check_split_used(path, dataset)  # order does not matter
    path.write_text(json.dumps({"fold": 0, "train": train[1:], "val": valid + train[:1]}))
    with pytest.raises(TrialError, match="nnU-Net's train cases .* are not the project's train"):
        trial.check_split_used(path, dataset)
    with pytest.raises(TrialError, match="no readable record"):
        trial.check_split_used(tmp_path / "missing.json", dataset)


def test_predictions_are_read_on_the_prepared_grid_and_checked(tmp_path, dataset):
    ids = dataset.case_ids("test")
    labels = dataset.arrays("test")[1]
    for case_id, label in zip(ids, labels, strict=True):
        nib.save(nib.Nifti1Image(label.astype(np.uint8), dataset.affine(case_id)),
                 str(tmp_path / f"{case_id}.nii.gz"))
    np.testing.assert_array_equal(trial.read_predictions(tmp_path, ids, dataset), labels)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)),
             str(tmp_path / f"{ids[0]}.nii.gz"))
    with pytest.raises(TrialError, match=r"shape \(4, 4, 4\), the prepared grid"):
        trial.read_predictions(tmp_path, ids, dataset)
    with pytest.raises(TrialError, match="wrote no prediction for case 'nope'"):
        trial.read_predictions(tmp_path, ["nope"], dataset)


def test_trial_checkpoints_resume_through_the_trainables_checkpoint_choice(tmp_path):
    latest = tmp_path / "checkpoint_latest.pth"
    latest.write_bytes(b"nnU-Net state")
    meta = {"mlflow_run_id": "r1", "config_hash": "h", "trial": "t"}
    first = trial.save_trial_checkpoint(tmp_path / "ck", {**meta, "step": 5}, latest)
    second = trial.save_trial_checkpoint(tmp_path / "ck", {**meta, "step": 10}, latest)
    assert first.name == "step_0000005"
    assert newest_checkpoint([first, second], "h") == second
    assert newest_checkpoint([first, second], "other") is None
    (second / "checkpoint_latest.pth").write_bytes(b"nnU-Net")  # cut short: the older one
    assert newest_checkpoint([first, second], "h") == first
    (second / "checkpoint_latest.pth").write_bytes(b"nnU-Net state")
    # A fresh work folder (another node) gets nnU-Net's checkpoint back; its own one wins.
    fold = tmp_path / "fold_0"
    trial._restore_latest(second, fold)
    assert (fold / "checkpoint_latest.pth").read_bytes() == b"nnU-Net state"
    (fold / "checkpoint_latest.pth").write_bytes(b"newer")
    trial._restore_latest(second, fold)
    assert (fold / "checkpoint_latest.pth").read_bytes() == b"newer"
