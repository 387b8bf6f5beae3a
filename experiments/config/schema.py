"""One validated configuration per trial: data, model, method, diffusion, loss, optimiser,
training, evaluation and resources.

The defaults are the paper's settings (Fu et al. 2023, section 4: four-level U-Net with
32/64/128/256 channels, AdamW with warmup + cosine schedule for 12,500 steps, batch 8, bfloat16,
recycling, mask (x0) prediction, cross-entropy + Dice, 5 diffusion steps). Every section forbids
unknown keys, so a typo is an error naming the dotted key. The dotted names (`data.batch_size`,
`diffusion.recycling`, ...) are also the MLflow parameter names; the codec between a config and
those string parameters is `record.flatten` / `record.cast_value`, typed by `Config.field_type`.

The sections are defined in `sections.py`, the error type in `errors.py`; loading and layering
(YAML files, profiles, per-layer checks) live in `layering.py`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import yaml
from diffseg3d.core.data.safe_name import check_safe_name
from diffseg3d.experiments.config.errors import ConfigError, format_errors
from diffseg3d.experiments.config.sections import (
    DataConfig,
    DiffusionConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    NnunetConfig,
    OptimConfig,
    ResourcesConfig,
    Section,
    TrainConfig,
)
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

#: Keys left out of `config_hash`: they label a trial but do not change what it computes.
HASH_EXCLUDED_KEYS = ("name", "tables", "overridden")
#: Left out of `config_hash` unless `method` is nnunet: the section changes nothing else, and
#: leaving it out keeps the hashes of trials configured before it existed.
NNUNET_SECTION = "nnunet"


class Config(Section):
    """Everything one trial needs. Dotted names (`data.batch_size`) are the MLflow params."""

    name: str = Field(
        "trial",
        description="Trial name (readable; not part of the config hash). A safe file name "
        "(letters, digits, `._+-=`, no `..`, at most 128 characters; `core/data/safe_name.py`): "
        "it names the trial's folder under --out.",
    )
    seed: int = Field(0, ge=0, description="Seed of initialisation, data order and noise.")
    tables: list[str] = Field(
        [], description="Paper tables this trial feeds, e.g. ['1', '3a'] (not hashed)."
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Data set and batches.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The U-Net.")
    method: Literal["diffusion", "unet", "nnunet"] = Field(
        "diffusion",
        description="diffusion (DDPM on the mask), unet (plain supervised segmentation, "
        "same network without mask input and time) or nnunet (nnU-Net v2's own pipeline as a "
        "baseline, the `nnunet` section; needs the `nnunet` extra; model, diffusion, loss and "
        "optim do not apply to it).",
    )
    diffusion: DiffusionConfig = Field(
        default_factory=DiffusionConfig, description="Diffusion settings (unused by unet)."
    )
    loss: LossConfig = Field(default_factory=LossConfig, description="Loss terms.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimiser.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training length.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")
    resources: ResourcesConfig = Field(
        default_factory=ResourcesConfig, description="Ray Tune resources per trial."
    )
    nnunet: NnunetConfig = Field(
        default_factory=NnunetConfig, description="nnU-Net settings (method nnunet only)."
    )
    overridden: list[str] = Field(
        [],
        description="Set by `load_config` / `grid.expand`, not by hand: the values of the user's "
        "config file or grid base that the profile replaced, `key: user -> profile (profile "
        "P)`; recorded as the MLflow tag `diffseg3d.overridden` (not hashed).",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        return check_safe_name(name, what="name")

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Config:
        d = self.diffusion
        if d.train_steps > d.num_timesteps:
            raise ValueError(
                f"diffusion.train_steps={d.train_steps} must be <= diffusion.num_timesteps="
                f"{d.num_timesteps}"
            )
        if d.sample_steps > d.num_timesteps:
            raise ValueError(
                f"diffusion.sample_steps={d.sample_steps} must be <= diffusion.num_timesteps="
                f"{d.num_timesteps}"
            )
        if self.optim.warmup_steps >= self.train.steps:
            raise ValueError(
                f"optim.warmup_steps={self.optim.warmup_steps} must be < train.steps="
                f"{self.train.steps}"
            )
        if self.data.batch_size % self.train.grad_accum_steps:
            raise ValueError(
                f"data.batch_size={self.data.batch_size} is not divisible by "
                f"train.grad_accum_steps={self.train.grad_accum_steps} (equal microbatches)"
            )
        if self.method == "nnunet" and self.resources.accelerator == "tpu":
            raise ValueError("method=nnunet with resources.accelerator=tpu: nnU-Net runs on "
                             "PyTorch (CUDA or CPU), not on TPUs; use gpu or cpu")
        if self.method == "nnunet" and self.eval.checkpoint != "last":
            raise ValueError("method=nnunet with eval.checkpoint=best_val: nnU-Net predicts "
                             "with its final checkpoint (checkpoint_final.pth); use last")
        if self.eval.checkpoint == "best_val" and not self.train.eval_every:
            raise ValueError("eval.checkpoint=best_val needs validation: train.eval_every must "
                             "be > 0")
        return self

    @property
    def eval_batch_size(self) -> int:
        """Volumes per evaluation batch: `eval.batch_size`, or `data.batch_size` when null."""
        return self.eval.batch_size or self.data.batch_size

    @classmethod
    def field_type(cls, dotted: str) -> Any:
        """The annotation of a dotted key, e.g. `field_type("data.batch_size") is int`."""
        model: type[BaseModel] = cls
        parts = dotted.split(".")
        for i, part in enumerate(parts):
            if part not in model.model_fields:
                raise ConfigError(
                    f"unknown config key {dotted!r} (no {part!r} in {model.__name__})"
                )
            annotation = model.model_fields[part].annotation
            if i == len(parts) - 1:
                return annotation
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                raise ConfigError(f"config key {dotted!r}: {'.'.join(parts[: i + 1])} is a leaf")
            model = annotation
        raise ConfigError(f"empty config key {dotted!r}")


# ---------------------------------------------------------------------------------------------
# Validation


def validate_config(raw: dict, source: str = "<config>") -> Config:
    """A `Config` from a nested dict; errors become one `ConfigError` naming source and keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config must be a mapping, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err.errors(), source)) from None


# ---------------------------------------------------------------------------------------------
# Identity


def config_hash(config: Config) -> str:
    """First 16 hex digits of sha256 over the config's sorted-key, whitespace-free JSON without
    `HASH_EXCLUDED_KEYS` (without `NNUNET_SECTION` for other methods, and without
    `eval.batch_size` while it is null or data.batch_size): equal iff two
    trials compute the same thing. Stable across processes and Python versions."""
    excluded: dict[str, Any] = dict.fromkeys(HASH_EXCLUDED_KEYS, True)
    if config.method != "nnunet":
        excluded[NNUNET_SECTION] = True
    # Added later: null (or data.batch_size, the same batches) keeps the earlier hashes.
    if config.eval.batch_size in (None, config.data.batch_size):
        excluded["eval"] = {"batch_size": True}
    data = config.model_dump(mode="json", exclude=excluded)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def to_yaml(config: Config) -> str:
    """The resolved config as YAML (logged as the `config.yaml` artifact); loads back equal."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
