"""The conv guard of the GPU program: compile a diffusion train step for a GPU without one and
say whether its convolutions are healthy (`core/cost/hlo_convs.verdict`).

The step is the ``paper`` profile's (network, bf16, recycling, Dice, augmentation, the
``model.conv_impl`` given) at a small size, so that the check runs in seconds: the pathology it
looks for (the kernel gradient of a transposed conv run as a forward conv over an
interior-padded input) appears at every size, and the ``auto`` form must have none of it.

    python -m diffseg3d.experiments.gpu_plan.guard [--card h100_sxm] [--conv-impl auto]

prints one JSON object (``healthy``, ``reasons``, ``flagged``, ``padded_inputs``,
``convolutions``, ``conv_impl``, ``card``, ``architecture``) and exits 0 when healthy, 1 when not;
it needs `targets.DEVICELESS_ENV` and the CUDA plugin on the path (`plan.subprocess_env`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

#: The guard's size and network width: small, every size divisible by 16 (imgx_v010's levels).
SHAPE = (32, 32, 16)
CHANNELS = (4, 8, 16, 32)


def guard_config(conv_impl: str, architecture: str = "imgx_v010"):
    """The ``paper`` profile's diffusion config at the guard's size, batch 2 in one pass."""
    from diffseg3d.experiments.config.layering import deep_merge, load_profile
    from diffseg3d.experiments.config.schema import validate_config

    raw = deep_merge(load_profile("paper"), {
        "method": "diffusion", "data": {"root": "unprepared", "batch_size": 2},
        "model": {"architecture": architecture, "channels": list(CHANNELS),
                  "conv_impl": conv_impl},
        "train": {"grad_accum_steps": 1}})
    return validate_config(raw)


def check(card: str, conv_impl: str, architecture: str = "imgx_v010",
          shape: Sequence[int] = SHAPE, classes: int = 4) -> dict:
    """Compile the guard's train step for ``card`` and return its verdict and conv summary."""
    from diffseg3d.core.cost.hlo_convs import summarise_text, verdict
    from diffseg3d.experiments.gpu_plan import programs, targets

    config = guard_config(conv_impl, architecture)
    program = programs.trial_programs(config, num_classes=classes, shape=shape,
                                      spacing=(1.0, 1.0, 2.0), device=targets.device(card),
                                      names=("train_step",))["train_step"]
    text = program.lower().compile(compiler_options=targets.COMPILER_OPTIONS).as_text()
    summary = summarise_text(text)
    flagged = [c for c in summary["convs"] if c["flagged"]]
    return {"card": card, "conv_impl": conv_impl, "architecture": architecture,
            **verdict(summary), "flagged": summary["flagged"],
            "flagged_ops": [c["op_name"] for c in flagged],
            "flagged_windows": [c["window_size"] for c in flagged],
            "padded_inputs": summary["padded_inputs"],
            "convolutions": summary["convolutions"]["total"]}


def main(argv: list[str] | None = None) -> int:
    from diffseg3d.core.models.conv import CONV_IMPLS
    from diffseg3d.experiments.gpu_plan.targets import CARDS

    p = argparse.ArgumentParser(prog="python -m diffseg3d.experiments.gpu_plan.guard",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--card", default="h100_sxm", choices=list(CARDS))
    p.add_argument("--conv-impl", default="auto", choices=list(CONV_IMPLS))
    p.add_argument("--architecture", default="imgx_v010", choices=["imgx_v010", "diffseg3d"])
    args = p.parse_args(argv)
    result = check(args.card, args.conv_impl, args.architecture)
    print(json.dumps(result))
    return 0 if result["healthy"] else 1


if __name__ == "__main__":
    sys.exit(main())
