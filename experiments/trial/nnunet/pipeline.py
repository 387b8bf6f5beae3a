"""nnU-Net v2's own programs, each run as its users run it (`entry`: nnUNetv2_plan_and_preprocess,
nnUNetv2_train, nnUNetv2_predict) in a child process with the trial's nnU-Net environment.

    plan_command     fingerprint with its dataset integrity check, the default ExperimentPlanner,
                     preprocessing of one configuration
    train_command    our trainer (`TRAINER`, the grid's budget) on fold 0 = the project's split;
                     `--c` continues from nnU-Net's own checkpoint_latest.pth after a kill
    predict_command  sliding window with Gaussian weighting and mirroring, checkpoint_final.pth

`run_program` runs one and turns a failure into one error naming the data set, the program and
nnU-Net's own reason (the last error line of its output, which goes to a log file). PyTorch and
nnunetv2 come from the `nnunet` extra; this module imports neither.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from diffseg3d.experiments.trial.nnunet.budget import Budget
from diffseg3d.experiments.trial.nnunet.layout import DATASET_ID, RawLayout
from diffseg3d.experiments.trial.nnunet.trainer_contract import BUDGET_ENV, TRAINER

#: The module that runs one nnU-Net program (`entry.PROGRAMS`).
ENTRY = "diffseg3d.experiments.trial.nnunet.entry"
#: The folder nnU-Net's own CLI searches for `TRAINER` (`nnUNet_extTrainer`).
TRAINERS_DIR = Path(__file__).resolve().parent / "trainers"
PLANS = "nnUNetPlans"
FOLD = 0
CHECKPOINT_FINAL = "checkpoint_final.pth"
CHECKPOINT_LATEST = "checkpoint_latest.pth"
INSTALL_HINT = 'pip install -e ".[nnunet]"'
#: Seconds between two looks at a running program (`run_program(poll=...)`).
POLL_SECONDS = 2.0
#: Longest reason quoted from nnU-Net's output in an error (the log file holds all of it).
REASON_CHARS = 1500
#: Seconds a program gets to exit after SIGTERM before it is killed.
TERMINATE_SECONDS = 10.0


class NnunetError(RuntimeError):
    """An nnU-Net program failed; the message names the data set, the program, nnU-Net's reason
    and the log file."""


class NnunetRefusedError(NnunetError):
    """nnU-Net refused the data set (its integrity check, fingerprint or planner)."""


class NnunetMissingError(ImportError):
    """nnunetv2 (or PyTorch) is not installed."""


def require_nnunet() -> None:
    """Raise `NnunetMissingError` with the install command when nnunetv2 or PyTorch is absent."""
    import importlib.util

    missing = [name for name in ("torch", "nnunetv2") if importlib.util.find_spec(name) is None]
    if missing:
        raise NnunetMissingError(f"method nnunet needs {' and '.join(missing)}, which is not "
                                 f"installed; install the nnunet extra: {INSTALL_HINT}")


def environment(layout: RawLayout, workers: int, budget: Budget | None) -> dict[str, str]:
    """nnU-Net's environment for one trial: its three folders, `workers` processes for data
    augmentation (`nnUNet_n_proc_DA`; 0 = in the training process) and for its other pools
    (`nnUNet_def_n_proc`, at least 1: its planner fails with 0), the trainers' folder for its
    own CLI, and the budget the trainer reads (None: nnU-Net's published schedule)."""
    env = {**layout.env(), "nnUNet_n_proc_DA": str(workers),
           "nnUNet_def_n_proc": str(max(1, workers)), "nnUNet_extTrainer": str(TRAINERS_DIR)}
    if budget is not None:
        env[BUDGET_ENV] = json.dumps(
            {"epochs": budget.epochs, "iterations_per_epoch": budget.iterations_per_epoch,
             "val_iterations_per_epoch": budget.val_iterations_per_epoch,
             "save_every": budget.save_every})
    return env


def planning_environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env` for nnUNetv2_plan_and_preprocess: its planner estimates memory with
    `torch.set_num_threads(nnUNet_n_proc_DA)`, which fails for 0, so at least 1 there."""
    return {**env, "nnUNet_n_proc_DA": str(max(1, int(env.get("nnUNet_n_proc_DA", "1"))))}


def program_command(program: str, *arguments: str) -> list[str]:
    """The child process's command line: this Python, `entry`, nnU-Net's program name."""
    return [sys.executable, "-m", ENTRY, program, *arguments]


def plan_command(configuration: str, workers: int) -> list[str]:
    processes = str(max(1, workers))
    return program_command("nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID),
                           "-c", configuration, "-np", processes, "-npfp", processes,
                           "--verify_dataset_integrity")


def train_command(configuration: str, device: str, resume: bool) -> list[str]:
    return program_command("nnUNetv2_train", str(DATASET_ID), configuration, str(FOLD),
                           "-tr", TRAINER, "-p", PLANS, "-device", device,
                           *(["--c"] if resume else []))


def predict_command(layout: RawLayout, configuration: str, device: str, workers: int,
                    out_dir: Path) -> list[str]:
    processes = str(max(1, workers))
    return program_command("nnUNetv2_predict", "-i", str(layout.images_ts), "-o", str(out_dir),
                           "-d", str(DATASET_ID), "-c", configuration, "-f", str(FOLD),
                           "-tr", TRAINER, "-p", PLANS, "-chk", CHECKPOINT_FINAL,
                           "-device", device, "-npp", processes, "-nps", processes,
                           "--disable_progress_bar")


def run_program(command: list[str], env: Mapping[str, str], log: Path, *, data_name: str,
                refusal: bool = False, poll: Callable[[], None] | None = None) -> None:
    """Run one nnU-Net program with `env` on top of this process's environment, its output
    appended to `log`; `poll()` is called every `POLL_SECONDS` while it runs (the trial reports
    progress from there). Exit 0 or an error: `NnunetRefusedError` when `refusal` (planning),
    else `NnunetError`, naming `data_name`, the program and nnU-Net's reason. On any exception
    here (a Ray stop, Ctrl-C) the program is terminated, not left running."""
    log.parent.mkdir(parents=True, exist_ok=True)
    program = command[3] if len(command) > 3 else command[0]
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while True:
                try:
                    code = proc.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    if poll is not None:
                        poll()
        except BaseException:
            _stop(proc)
            raise
    if poll is not None:
        poll()
    if code != 0:
        error = NnunetRefusedError if refusal else NnunetError
        verb = "refused data set" if refusal else "failed on data set"
        raise error(f"nnU-Net {verb} {data_name!r} in {program} (exit {code}): "
                    f"{failure_reason(log.read_text(errors='replace'))} (log: {log})")


def failure_reason(output: str) -> str:
    """nnU-Net's reason in its output: the lines it printed as `Error: ...` (its dataset
    integrity check names the file there, with the `Expected:`/`Found:` lines after), then the
    last line of the last Python traceback (`AssertionError: ...`); else the last non-empty line.
    At most `REASON_CHARS` characters."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "no output"
    printed = []
    for i, line in enumerate(lines):
        if line.startswith("Error:"):
            printed.append(line)
            printed += [x for x in lines[i + 1:i + 3] if x.startswith(("Expected", "Found"))]
    last = lines[-1]
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        exception = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")
        found = [line for line in lines if exception.match(line)]
        if found:
            last = found[-1]
    reason = " ".join([*printed, last])
    return reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS - 3] + "..."


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    deadline = time.monotonic() + TERMINATE_SECONDS
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def model_folder(layout: RawLayout, configuration: str) -> Path:
    """nnU-Net's trained-model folder (`<results>/<dataset>/<trainer>__<plans>__<conf>`): what
    nnUNetv2_predict -m and nnU-Net's users load."""
    return layout.results / layout.dataset_name / f"{TRAINER}__{PLANS}__{configuration}"


def fold_folder(layout: RawLayout, configuration: str) -> Path:
    """The fold's folder: checkpoints, split_used.json, progress.json, training logs."""
    return model_folder(layout, configuration) / f"fold_{FOLD}"


def plans_file(layout: RawLayout) -> Path:
    return layout.preprocessed / layout.dataset_name / f"{PLANS}.json"


def read_plans(layout: RawLayout, configuration: str, data_name: str) -> dict:
    """nnU-Net's plans; `NnunetRefusedError` when its planner made no `configuration`."""
    plans = json.loads(plans_file(layout).read_text())
    if configuration not in plans.get("configurations", {}):
        raise NnunetRefusedError(
            f"nnU-Net refused data set {data_name!r}: its planner made no {configuration!r} "
            f"configuration (it made {sorted(plans.get('configurations', {}))})")
    return plans
