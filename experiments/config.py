"""One validated configuration per trial: data, model, method, diffusion, loss, optimiser,
training, evaluation and resources.

The defaults are the paper's settings (Fu et al. 2023, section 4: four-level U-Net with
32/64/128/256 channels, AdamW with warmup + cosine schedule for 12,500 steps, batch 8, bfloat16,
recycling, mask (x0) prediction, cross-entropy + Dice, 5 diffusion steps). Every section forbids
unknown keys, so a typo is an error naming the dotted key. The dotted names (`data.batch_size`,
`diffusion.recycling`, ...) are also the MLflow parameter names; the codec between a config and
those string parameters is `record.flatten` / `record.cast_value`, typed by `Config.field_type`.

Layering used by `load_config` and `grid.expand` (later wins):
    schema defaults  <-  config file / grid base  <-  profile  <-  data set  <-  grid axes, seed

Each layer the user writes (config file, grid base, each grid axis value) is validated ON ITS OWN
before layering (`check_layer`), so a profile cannot hide an invalid value by replacing it; only
rules that tie several keys together (`optim.warmup_steps < train.steps`, accelerator vs count)
wait for the merged config. A profile value that replaces one the user set is printed
(`profile smoke overrides train.steps: 500 -> 20`) and kept in `Config.overridden` (the MLflow
tag `record.TAG_OVERRIDDEN`). A profile never moves a GPU/TPU request to the CPU: when the
user's layer sets `resources.accelerator` to gpu or tpu and the profile says cpu, the user's
accelerator (and count) are kept and the console says so.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from diffseg3d.core.data.augment_presets import AUGMENT_PRESETS, DEFAULT_PRESET, augment_preset
from diffseg3d.core.data.safe_name import check_safe_name
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: Folder of the named profiles (`<name>.yaml`, each a partial config).
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"

#: Keys left out of `config_hash`: they label a trial but do not change what it computes.
HASH_EXCLUDED_KEYS = ("name", "tables", "overridden")


class ConfigError(ValueError):
    """A config (file, profile or override) is invalid; the message names source, key and value."""


class _Section(BaseModel):
    """Base of every section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Which prepared data set to train on, the batch size and on-device augmentation."""

    root: str = Field(
        "data/phantom",
        description="Prepared data set folder (imagesTr/, labelsTr/, dataset.json; see "
        "`diffseg3d data`). Spatial shape, spacing, classes and splits come from its "
        "dataset.json. Relative paths are resolved against the working directory.",
    )
    name: str = Field(
        "phantom",
        description="Data set label used in trial names and tables, e.g. prostate-mr, amos-ct, "
        "phantom. A safe file name (letters, digits, `._+-=`; `core/data/safe_name.py`): it "
        "becomes part of the trial's folder name.",
    )
    batch_size: int = Field(8, ge=1, description="Training batch size (paper: 8).")
    augment: bool = Field(
        True,
        description="Random rotation, translation and scaling on device during training "
        "(paper section 4).",
    )
    max_rotation: tuple[float, float, float] = Field(
        AUGMENT_PRESETS[DEFAULT_PRESET]["max_rotation"],
        description="Largest rotation about each axis (X, Y, Z), in RADIANS; angles uniform in "
        "+-value. Unset: from AUGMENT_PRESETS[data.name] (core/data/augment_presets.py): "
        "prostate-mr and amos-ct 0.088 (about 5 degrees, released code), phantom and unlisted "
        "names 0.2618 (15 degrees).",
    )
    max_translation: tuple[float, float, float] = Field(
        AUGMENT_PRESETS[DEFAULT_PRESET]["max_translation"],
        description="Largest translation per axis, in voxels, uniform in +-value. Unset: from "
        "AUGMENT_PRESETS[data.name]: prostate-mr [20, 20, 4], amos-ct [10, 10, 10] (released "
        "code), phantom and unlisted names [3, 3, 3].",
    )
    max_scale: tuple[float, float, float] = Field(
        AUGMENT_PRESETS[DEFAULT_PRESET]["max_scale"],
        description="Scaling factor per axis uniform in [1 - value, 1 + value], each in [0, 1). "
        "Unset: from AUGMENT_PRESETS[data.name]: prostate-mr and amos-ct 0.15 (released code), "
        "phantom and unlisted names 0.1.",
    )
    isotropic_scale: bool = Field(
        AUGMENT_PRESETS[DEFAULT_PRESET]["isotropic_scale"],
        description="One scaling factor for all axes (drawn in the range of axis 0; all "
        "max_scale equal) instead of one per axis. Unset: from AUGMENT_PRESETS[data.name]: "
        "false for prostate-mr and amos-ct (released code), true for the phantom and unlisted "
        "names.",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_augment_preset(cls, data: Any) -> Any:
        # Ranges not given come from the data set's preset, so MLflow records the values used.
        if isinstance(data, dict):
            preset = augment_preset(data.get("name", cls.model_fields["name"].default))
            data = dict(data)
            for key, value in preset.items():
                if data.get(key) is None:
                    data[key] = value
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        return check_safe_name(name, what="data.name")

    # One key each (field validators), so `check_layer` reports them against the layer's file.
    @field_validator("max_rotation")
    @classmethod
    def _check_rotation(cls, value: tuple) -> tuple:
        if any(not 0 <= r <= math.pi for r in value):
            raise ValueError(f"data.max_rotation must be in [0, pi] radians per axis, got "
                             f"{list(value)}")
        return value

    @field_validator("max_translation")
    @classmethod
    def _check_translation(cls, value: tuple) -> tuple:
        if any(not t >= 0 for t in value):
            raise ValueError(f"data.max_translation must be >= 0, got {list(value)}")
        return value

    @field_validator("max_scale")
    @classmethod
    def _check_scale(cls, value: tuple) -> tuple:
        if any(not 0 <= m < 1 for m in value):
            raise ValueError(f"data.max_scale must be in [0, 1) per axis, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _check_augment_ranges(self) -> DataConfig:
        if self.isotropic_scale and len(set(self.max_scale)) > 1:
            raise ValueError(f"data.isotropic_scale needs equal data.max_scale, got "
                             f"{list(self.max_scale)}")
        return self


class ModelConfig(_Section):
    """The 3D U-Net (paper section 4); the diffusion and the plain U-Net share it."""

    channels: list[int] = Field(
        [32, 64, 128, 256],
        min_length=1,
        description="Channels per level; its length is the number of levels (paper: "
        "32/64/128/256). Every spatial size of the data must be divisible by "
        "2**(levels - 1). GroupNorm groups (8) are clipped to divide each level's channels.",
    )
    num_res_blocks: int = Field(2, ge=1, description="Residual blocks per level (paper code: 2).")
    norm: Literal["group", "instance"] = Field("group", description="Normalisation layer.")
    conv_impl: Literal["auto", "slices", "lax3d"] = Field(
        "auto",
        description="3x3x3 convolution implementation: lax3d (one 3D conv), slices (three 2D "
        "convs over depth-shifted slices; faster on XLA:CPU) or auto (slices on CPU).",
    )
    remat: bool = Field(
        False, description="Rematerialise residual blocks in the backward pass (less memory)."
    )
    compute_dtype: Literal["float32", "bfloat16"] = Field(
        "bfloat16", description="Compute dtype; parameters are float32 always (paper: bf16)."
    )

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, channels: list[int]) -> list[int]:
        if any(c < 1 for c in channels):
            raise ValueError(f"model.channels must all be >= 1, got {channels}")
        return channels


class DiffusionConfig(_Section):
    """Gaussian diffusion of the mask (paper section 3). Ignored (but validated) for unet."""

    output: Literal["x0", "eps"] = Field(
        "x0", description="What the network predicts: the mask x0 (default) or the noise eps."
    )
    recycling: bool = Field(
        True, description="Recycle the model's own x0 prediction during training (eq. 3-5, 8-11)."
    )
    num_timesteps: int = Field(1000, ge=1, description="T of the base schedule.")
    train_steps: int = Field(
        5,
        ge=1,
        description="K for training: resampled steps (paper 3.4); 5 by default, 1000 = T means "
        "no resampling. Must be <= num_timesteps.",
    )
    sample_steps: int = Field(
        5, ge=1, description="K for inference (the sampler); must be <= num_timesteps."
    )
    beta_schedule: Literal["linear", "cosine"] = Field(
        "linear", description="Base beta schedule (linear 1e-4 -> 0.02, or cosine)."
    )
    variance: Literal["fixed_large", "fixed_small"] = Field(
        "fixed_large", description="Sampler variance: beta_k (fixed_large) or beta_tilde_k."
    )
    sampler: Literal["ddpm", "ddim"] = Field("ddpm", description="Inference sampler.")
    clip_x0: bool = Field(
        True,
        description="Noise prediction only: clip x0_hat from eq. 10 to [-1, 1], in the sampler and "
        "in recycling alike. The released ImgX-DiffSeg config does not clip (x_limit: 0.0).",
    )


class LossConfig(_Section):
    """Segmentation loss on x0_hat (cross-entropy + foreground Dice) plus noise L2 for eps."""

    dice: bool = Field(True, description="Add the foreground-only Dice loss to cross-entropy.")
    noise_weight: float = Field(
        0.1, ge=0.0, description="Weight of the L2 loss on eps when predicting noise (paper 0.1)."
    )


class OptimConfig(_Section):
    """AdamW with linear warmup and cosine decay over `train.steps` (paper section 4)."""

    learning_rate: float = Field(1e-4, gt=0.0, description="Peak learning rate after warmup.")
    warmup_steps: int = Field(
        100, ge=0, description="Linear warmup steps; must be < train.steps."
    )
    weight_decay: float = Field(1e-8, ge=0.0, description="Decoupled AdamW weight decay.")
    grad_clip_norm: float = Field(
        1.0, ge=0.0, description="Clip gradients to this global L2 norm; 0 disables clipping."
    )
    init_lr: float = Field(
        0.0, ge=0.0, description="Learning rate at step 0, where the linear warmup starts "
        "(released code: 1e-5; must be <= learning_rate)."
    )
    decay_steps: int = Field(
        0, ge=0, description="Step (counted from 0, warmup included, as optax counts) at which "
        "the cosine reaches end_lr, constant after; 0: train.steps (released code: 10,000)."
    )
    end_lr: float = Field(
        0.0, ge=0.0, description="Learning rate at the end of the cosine decay and after it "
        "(released code: 1e-6; must be <= learning_rate)."
    )

    @model_validator(mode="after")
    def _check_schedule(self) -> OptimConfig:
        for name in ("init_lr", "end_lr"):
            if getattr(self, name) > self.learning_rate:
                raise ValueError(f"optim.{name}={getattr(self, name)} must be <= "
                                 f"optim.learning_rate={self.learning_rate}")
        if self.decay_steps and self.decay_steps <= self.warmup_steps:
            raise ValueError(f"optim.decay_steps={self.decay_steps} must be 0 or > "
                             f"optim.warmup_steps={self.warmup_steps}")
        return self


class TrainConfig(_Section):
    """Length of training and how often to log, checkpoint and validate."""

    steps: int = Field(12500, ge=1, description="Optimiser steps (paper: 12,500).")
    log_every: int = Field(
        50, ge=1, description="Log loss parts, lr and grad_norm every this many steps."
    )
    checkpoint_every: int = Field(
        1000, ge=0, description="Checkpoint (orbax) and report every this many steps; 0: only "
        "at the end."
    )
    eval_every: int = Field(
        2500, ge=0, description="Validation Dice every this many steps; 0 disables it."
    )


class EvalConfig(_Section):
    """Evaluation after training."""

    split: Literal["test", "valid", "train"] = Field(
        "test", description="Split scored per case and class after training."
    )
    save_predictions: int = Field(
        4, ge=0, description="Number of cases of that split saved as NIfTI + PNG montage."
    )
    nsd_tolerance_mm: float = Field(
        2.0, ge=0.0, allow_inf_nan=False,
        description="Normalised surface Dice tolerance in mm (`core/metrics/nsd.py`): a surface "
        "voxel within this distance of the other surface counts; stated in the tables' captions.",
    )
    samples: int = Field(
        1, ge=1,
        description="Diffusion only: with N > 1 the split is also sampled N times (batched) and "
        "the ensemble label (argmax of the mean probabilities) scored as `test_dice_ensemble`, "
        "with the Spearman r between mean voxel entropy and per-case Dice "
        "(`test_uncertainty_dice_spearman`); 1 = off.",
    )
    checkpoint: Literal["last", "best_val"] = Field(
        "last",
        description="Parameters the split is scored with: last (after train.steps) or best_val "
        "(those of the validation, every train.eval_every steps, with the highest mean "
        "foreground Dice; the earliest on ties; the paper profile). best_val needs "
        "train.eval_every > 0; the chosen step is logged (test_checkpoint_step) and kept "
        "across a resume (trial.json + best_params.npz in each checkpoint folder).",
    )
    samplers: list[Literal["ddpm_fixed_large", "ddpm_fixed_small", "ddim"]] = Field(
        [],
        description="Diffusion only: sampling variants the same trained parameters are also "
        "scored with (sampling variance study, Table 4): ddpm_fixed_large (variance beta_k, "
        "the default and the released code), ddpm_fixed_small (beta-tilde_k, the paper's text) "
        "and ddim (eta = 0). Each writes sampling/<variant>.csv and logs "
        "sampling/<variant>/test_* metrics, with the test key of the main evaluation; the "
        "variant of diffusion.sampler/variance reuses the main evaluation. Empty: none.",
    )


class ResourcesConfig(_Section):
    """What one Ray Tune trial asks for; `experiments/resources.py` turns it into Ray's request."""

    accelerator: Literal["cpu", "gpu", "tpu"] = Field(
        "cpu",
        description="Where the trial computes: cpu (JAX on the host CPU), gpu (Ray's GPU "
        "resource) or tpu (Ray's TPU resource: chips of one TPU VM host, used data parallel).",
    )
    accelerators_per_trial: float | None = Field(
        None,
        gt=0.0,
        description="GPUs or TPU chips per trial (default 1; must be unset for cpu). GPUs: a "
        "fraction < 1 packs several trials on one GPU, above 1 a whole number. TPU chips: 1, 2, "
        "4 or 8 (Ray's TPU sizes); 4 = a whole v4-8 host, 8 = a whole v5e-8/v6e-8 host.",
    )
    cpus_per_trial: float = Field(1.0, gt=0.0, description="CPU cores Ray reserves per trial.")

    @model_validator(mode="before")
    @classmethod
    def _legacy_gpus_per_trial(cls, data: Any) -> Any:
        # Configs written before `accelerator` existed say `gpus_per_trial: g` (0 = CPU).
        if isinstance(data, dict) and "gpus_per_trial" in data:
            data = dict(data)
            gpus = data.pop("gpus_per_trial")
            if "accelerator" in data or "accelerators_per_trial" in data:
                raise ValueError("gpus_per_trial (legacy) cannot be combined with accelerator")
            if gpus:
                data.update(accelerator="gpu", accelerators_per_trial=gpus)
        return data

    @model_validator(mode="after")
    def _check_request(self) -> ResourcesConfig:
        from diffseg3d.experiments.resources import check_accelerator_count

        check_accelerator_count(self.accelerator, self.accelerators_per_trial)
        return self


class Config(_Section):
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
    method: Literal["diffusion", "unet"] = Field(
        "diffusion",
        description="diffusion (DDPM on the mask) or unet (plain supervised segmentation, "
        "same network without mask input and time).",
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
        if self.eval.checkpoint == "best_val" and not self.train.eval_every:
            raise ValueError("eval.checkpoint=best_val needs validation: train.eval_every must "
                             "be > 0")
        return self

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
# Errors


def _format_errors(errors: list[dict], source: str) -> str:
    lines = []
    for e in errors:
        key = ".".join(str(p) for p in e["loc"]) or "<top level>"
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key (value {value!r})")
        elif isinstance(value, dict):
            # A section-level (cross-field) check: its message names the keys and values.
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  - {msg}" if not e["loc"] else f"  - {key}: {msg}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  - {key}: {msg} (got {value!r})")
    return f"{source}: invalid config:\n" + "\n".join(lines)


def validate_config(raw: dict, source: str = "<config>") -> Config:
    """A `Config` from a nested dict; errors become one `ConfigError` naming source and keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config must be a mapping, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err.errors(), source)) from None


# ---------------------------------------------------------------------------------------------
# Nested dicts


def deep_merge(base: dict, override: dict) -> dict:
    """A new dict: `override` merged into `base` recursively (override's leaves win)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(tree: dict, dotted: str, value: Any) -> dict:
    """A new nested dict with `tree[a][b] = value` for `dotted = "a.b"`."""
    out = copy.deepcopy(tree)
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = copy.deepcopy(value)
    return out


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from `path`; a missing file, bad YAML or a non-mapping names the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------
# Profiles and layers


def available_profiles() -> list[str]:
    """Names of the profiles shipped in `experiments/profiles/`."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name: str | None) -> dict:
    """The partial config of the shipped profile `name` (`{}` for None).

    Looked up by NAME only among `available_profiles()`: a path or any other value is an error
    listing the profiles, so `--profile` never opens a file the user pointed at."""
    if name is None:
        return {}
    known = available_profiles()
    if name not in known:
        hint = " (a profile is a name, not a path)" if "/" in name or "\\" in name else ""
        raise ConfigError(f"unknown profile {name!r}{hint}; available profiles: {', '.join(known)}")
    path = PROFILES_DIR / f"{name}.yaml"
    raw = read_yaml(path)
    # Validate the profile on its own, so a typo is reported against the profile file.
    check_layer(raw, source=str(path))
    return raw


def _is_cross_key(error: dict) -> bool:
    # A model-level validator (input = the whole section): a rule over several keys, which only
    # the merged config can judge (e.g. warmup_steps < steps with the steps from a profile).
    return error["type"] == "value_error" and isinstance(error.get("input"), dict)


def check_layer(raw: dict, source: str) -> None:
    """Raise ConfigError naming `source` and each key whose value in the partial config `raw` is
    invalid ON ITS OWN (unknown key, wrong type, out of range, unsafe name).

    Rules over several keys are left to the merged config; this check exists so that a later
    layer (a profile) cannot replace, and so hide, a bad value the user wrote."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config must be a mapping, got {type(raw).__name__}")
    try:
        Config.model_validate(raw)
    except ValidationError as err:
        own = [e for e in err.errors() if not _is_cross_key(e)]
        if own:
            raise ConfigError(_format_errors(own, source)) from None


def normalise_layer(raw: dict) -> dict:
    """`raw` with the legacy `resources.gpus_per_trial: g` written as `resources.accelerator` /
    `accelerators_per_trial`, so layers compare key by key (other keys unchanged)."""
    resources = raw.get("resources")
    if not isinstance(resources, dict) or "gpus_per_trial" not in resources:
        return copy.deepcopy(raw)
    if "accelerator" in resources or "accelerators_per_trial" in resources:
        return copy.deepcopy(raw)  # the schema reports the combination
    resources = dict(resources)
    gpus = resources.pop("gpus_per_trial")
    if gpus:
        resources.update(accelerator="gpu", accelerators_per_trial=gpus)
    return {**copy.deepcopy(raw), "resources": resources}


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


#: Keys of `resources` a profile may not take from a user's GPU/TPU request.
_ACCELERATOR_KEYS = ("accelerator", "accelerators_per_trial")


@dataclass(frozen=True)
class Layered:
    """A user layer with a profile applied: `raw` (the merged partial config), `overridden`
    (`key: user -> profile (profile P)` per replaced user value) and `messages` (the console
    lines: one per override, and one per kept accelerator request)."""

    raw: dict
    overridden: tuple[str, ...]
    messages: tuple[str, ...]


def apply_profile(user: dict, profile: str | None, source: str) -> Layered:
    """Merge the profile `profile` over the user layer `user` (from `source`, e.g. a config file
    or a grid's base), reporting what it replaces and keeping a GPU/TPU request.

    Both layers are checked on their own first (`check_layer`)."""
    prof = normalise_layer(load_profile(profile))
    user = normalise_layer(user)
    check_layer(user, source)
    messages: list[str] = []
    wanted = (user.get("resources") or {}).get("accelerator")
    prof_res = prof.get("resources") or {}
    if wanted in ("gpu", "tpu") and prof_res.get("accelerator") == "cpu":
        prof = {**prof, "resources": {k: v for k, v in prof_res.items()
                                      if k not in _ACCELERATOR_KEYS}}
        messages.append(f"profile {profile} asks for resources.accelerator: cpu; keeping "
                        f"resources.accelerator: {wanted} from {source} (a profile never moves a "
                        "GPU/TPU request to the CPU)")
    user_leaves, prof_leaves = _leaves(user), _leaves(prof)
    overridden = []
    for key in sorted(set(user_leaves) & set(prof_leaves)):
        if user_leaves[key] != prof_leaves[key]:
            change = f"{key}: {_show(user_leaves[key])} -> {_show(prof_leaves[key])}"
            overridden.append(f"{change} (profile {profile})")
            messages.append(f"profile {profile} overrides {change}")
    return Layered(deep_merge(user, prof), tuple(overridden), tuple(messages))


def say(lines) -> None:
    """Print console notes (profile overrides) on stderr, one line each."""
    for line in lines:
        print(line, file=sys.stderr)


def load_config(path: str | os.PathLike, profile: str | None = None) -> Config:
    """Load a YAML config (full or partial; defaults fill the rest) and apply `profile` on top.

    The file is validated on its own first; profile overrides of its values are printed and
    kept in `Config.overridden` (see the module docstring)."""
    layered = apply_profile(read_yaml(path), profile, source=str(path))
    say(layered.messages)
    source = str(path) if profile is None else f"{path} (profile {profile})"
    config = validate_config(layered.raw, source=source)
    return config.model_copy(update={"overridden": list(layered.overridden)})


# ---------------------------------------------------------------------------------------------
# Identity


def config_hash(config: Config) -> str:
    """First 16 hex digits of sha256 over the config's sorted-key, whitespace-free JSON without
    `HASH_EXCLUDED_KEYS`: equal iff two trials compute the same thing. Stable across processes
    and Python versions."""
    data = config.model_dump(mode="json", exclude=set(HASH_EXCLUDED_KEYS))
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def to_yaml(config: Config) -> str:
    """The resolved config as YAML (logged as the `config.yaml` artifact); loads back equal."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
