"""The ablation axes of a trial as short run tags, so the MLflow runs table shows, groups and
filters the grid's comparison without opening the ~100 params of a run.

One tag per axis the paper's tables compare (`AXIS_TAGS`), its value read from the run's
flattened config (`record.flatten`: dotted key -> string), so the same function serves a new
trial (`axis_tags(config)`) and a run logged before these tags existed (`axis_values(params)`).
A setting that does not apply to the method (the U-Net has no recycling, output, diffusion
steps or sampler; nnU-Net none of those nor the Dice-loss switch) is `NOT_APPLICABLE`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from diffseg3d.experiments.config.schema import Config
from diffseg3d.experiments.tracking.record import flatten

#: Value of an axis that does not apply to the trial's method.
NOT_APPLICABLE = "-"
#: Prefix of the axis tags; the runs table shows the tag key as the column's name.
AXIS_PREFIX = "axis."


def _flag(key: str) -> Callable[[Mapping[str, str]], str]:
    return lambda params: "yes" if params.get(key, "true") == "true" else "no"


def _diffusion_only(read: Callable[[Mapping[str, str]], str]) -> Callable[[Mapping[str, str]], str]:
    return lambda params: read(params) if params.get("method") == "diffusion" else NOT_APPLICABLE


def _not_nnunet(read: Callable[[Mapping[str, str]], str]) -> Callable[[Mapping[str, str]], str]:
    """nnU-Net trains with its own loss (Dice + cross-entropy), whatever `loss.*` says."""
    return lambda params: NOT_APPLICABLE if params.get("method") == "nnunet" else read(params)


def _sampler(params: Mapping[str, str]) -> str:
    """`ddim` or `ddpm_<variance>`, as `eval.samplers` names the variants (Table 4)."""
    if params.get("diffusion.sampler", "ddpm") == "ddim":
        return "ddim"
    return f"ddpm_{params.get('diffusion.variance', 'fixed_large')}"


#: Tag key -> the axis' value from flattened params (missing keys: the config defaults).
#:   axis.method       `method`: unet | diffusion | nnunet (Table 2; nnunet the baseline)
#:   axis.recycling    `diffusion.recycling`: yes | no (Table 1)
#:   axis.output       `diffusion.output`: x0 (mask prediction) | eps (noise prediction) (Table 3a)
#:   axis.dice_loss    `loss.dice`: yes | no (Table 3b; `-` for nnunet, its own loss)
#:   axis.train_steps  `diffusion.train_steps`: K, e.g. 5 | 1000 (Table 3c)
#:   axis.sampler      `diffusion.sampler` + `diffusion.variance`: ddpm_fixed_large |
#:                     ddpm_fixed_small | ddim (the sampler the test split is scored with)
AXIS_TAGS: dict[str, Callable[[Mapping[str, str]], str]] = {
    f"{AXIS_PREFIX}method": lambda params: params.get("method", "diffusion"),
    f"{AXIS_PREFIX}recycling": _diffusion_only(_flag("diffusion.recycling")),
    f"{AXIS_PREFIX}output": _diffusion_only(lambda params: params.get("diffusion.output", "x0")),
    f"{AXIS_PREFIX}dice_loss": _not_nnunet(_flag("loss.dice")),
    f"{AXIS_PREFIX}train_steps": _diffusion_only(
        lambda params: params.get("diffusion.train_steps", "5")),
    f"{AXIS_PREFIX}sampler": _diffusion_only(_sampler),
}


def axis_values(params: Mapping[str, str]) -> dict[str, str]:
    """`AXIS_TAGS` key -> value from a run's params (MLflow strings, `record.flatten`'s
    encoding), e.g. `{"axis.method": "diffusion", "axis.recycling": "yes", ...}`."""
    return {key: read(params) for key, read in AXIS_TAGS.items()}


def axis_tags(config: Config) -> dict[str, str]:
    """The axis tags of a trial's run, from its resolved config."""
    return axis_values(flatten(config))
