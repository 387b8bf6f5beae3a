"""`python -m diffseg3d.experiments.trial.nnunet.entry <program> <arguments>`: one of nnU-Net v2's
own command-line programs, in a process of its own, with the arguments its users type.

    nnUNetv2_plan_and_preprocess -d 1 -c 3d_fullres --verify_dataset_integrity -np 1
    nnUNetv2_train 1 3d_fullres 0 -tr nnUNetTrainerStepBudget -device cpu [--c]
    nnUNetv2_predict -i imagesTs -o out -d 1 -c 3d_fullres -f 0 -tr nnUNetTrainerStepBudget

Why a process per program: nnU-Net's planning, data augmentation and export start worker pools
that import the caller's main module again; inside a Ray worker or a test process that hangs or
re-runs the caller. Its programs are meant to be started as programs, and nnU-Net reads its
folders from the environment at import time, which a fresh process gets right.

Two things differ from the installed console scripts:
- the project's trainer (`trainers.budget_trainer.nnUNetTrainerStepBudget`) is handed to
  nnU-Net directly. nnU-Net finds a trainer by name by importing every module of its trainer
  package, among them the Primus trainers, which import timm and torchvision; on a machine with
  PyTorch's CPU build, the torchvision that PyPI serves is built for CUDA and fails on import
  ("operator torchvision::nms does not exist"), which would stop every program that looks up a
  trainer. Any other trainer name still goes through nnU-Net's own search.
- on Linux the process asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), so
  a killed trial leaves no nnU-Net process behind.
"""

from __future__ import annotations

import importlib
import signal
import sys

#: Program name -> (module, function) of nnU-Net's console scripts (its pyproject.toml).
PROGRAMS = {
    "nnUNetv2_plan_and_preprocess": (
        "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints",
        "plan_and_preprocess_entry"),
    "nnUNetv2_train": ("nnunetv2.run.run_training", "run_training_entry"),
    "nnUNetv2_predict": ("nnunetv2.inference.predict_from_raw_data", "predict_entry_point"),
}
#: Modules that bound nnU-Net's trainer search by name at import.
_TRAINER_LOOKUPS = ("nnunetv2.utilities.find_objects", "nnunetv2.run.run_training",
                    "nnunetv2.inference.predict_from_raw_data")
_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in PROGRAMS:
        raise SystemExit(f"usage: python -m {__spec__.name if __spec__ else __name__} "
                         f"{{{','.join(PROGRAMS)}}} <nnU-Net arguments>")
    program, arguments = argv[0], argv[1:]
    _die_with_parent()
    _hand_over_trainer()
    module, function = PROGRAMS[program]
    sys.argv = [program, *arguments]
    getattr(importlib.import_module(module), function)()


def _hand_over_trainer() -> None:
    from diffseg3d.experiments.trial.nnunet.trainer_contract import TRAINER
    from diffseg3d.experiments.trial.nnunet.trainers.budget_trainer import (
        nnUNetTrainerStepBudget,
    )

    modules = [importlib.import_module(name) for name in _TRAINER_LOOKUPS]
    search = modules[0].recursive_find_trainer_class_by_name

    def find(name: str):
        return nnUNetTrainerStepBudget if name == TRAINER else search(name)

    for module in modules:
        module.recursive_find_trainer_class_by_name = find


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):  # no libc prctl: the trial's own cleanup still applies
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
