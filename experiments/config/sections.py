"""The sections of a trial's config (`config.Config`): data, model, diffusion, loss, optimiser,
training, evaluation and resources. Every setting is documented in its Field description. The
defaults are this project's choices, not all the paper's: the `paper` profiles set the released
code's values where they differ (clip_x0, the learning-rate ends, the network, the time input,
the Dice over absent classes, augmentation semantics, best-validation selection;
docs/PAPER_FIDELITY.md lists them)."""

from __future__ import annotations

import math
from typing import Any, Literal

from diffseg3d.core.data.augment_presets import (
    AUGMENT_PRESETS,
    AUGMENT_SPACES,
    DEFAULT_PRESET,
    augment_preset,
)
from diffseg3d.core.data.safe_name import check_safe_name
from diffseg3d.core.diffusion.schedule import TIME_INPUTS
from diffseg3d.core.losses.segmentation import DICE_ABSENT_CLASSES
from diffseg3d.core.metrics.validation_selection import VAL_METRICS, VAL_TIES
from diffseg3d.core.models.architecture import ARCHITECTURES
from diffseg3d.core.models.conv import CONV_IMPLS
from diffseg3d.experiments.config.accelerators import check_accelerator_count
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    """Base of every section: unknown keys are errors, assignments are re-validated, and no
    float setting (a float, an optional float, a tuple or list of floats) takes NaN or +-inf:
    `allow_inf_nan=False` holds for every field of every section, also ones added later (a
    test walks the whole schema)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(Section):
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
    limit_translation: bool = Field(
        False, description="Cut each example's translation range per axis to [max(-m, -lo), "
        "min(m, N - 1 - hi)], [lo, hi] its foreground box, so that the translation keeps all "
        "foreground inside (released code; core/data/augment.py: translation_bounds); rotation "
        "and scaling are not limited. Paper profiles: true.")
    augment_space: Literal[AUGMENT_SPACES] = Field(
        "mm", description="Where rotations and scalings act: mm (rigid in physical space, by "
        "the data set's voxel spacing) or voxel (on the voxel index grid, as the released code; "
        "a shear of the anatomy on anisotropic voxels). Paper profiles: voxel.")

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


class ModelConfig(Section):
    """The 3D U-Net (paper section 4); the diffusion and the plain U-Net share it."""

    architecture: Literal[ARCHITECTURES] = Field(
        "diffseg3d", description="The network (core/models/architecture.py): diffseg3d (this "
        "project's U-Net, len(channels) - 1 down-samplings) or imgx_v010 (the released code's "
        "network at the paper's tag, core/models/imgx_v010.py: len(channels) down-samplings, one "
        "block per level; num_res_blocks and norm do not apply). Paper profiles: imgx_v010.")
    channels: list[int] = Field(
        [32, 64, 128, 256],
        min_length=1,
        description="Channels per level; its length is the number of levels (paper: "
        "32/64/128/256). Every spatial size of the data must be divisible by "
        "2**(levels - 1) (diffseg3d) or 2**levels (imgx_v010). GroupNorm groups (8) are "
        "clipped to divide each level's channels.",
    )
    num_res_blocks: int = Field(2, ge=1, description="Residual blocks per level, diffseg3d only "
                                "(released v0.1.0: 1, see imgx_v010; later versions: 2).")
    norm: Literal["group", "instance"] = Field(
        "group", description="Normalisation layer, diffseg3d only (imgx_v010: InstanceNorm).")
    conv_impl: Literal[CONV_IMPLS] = Field(
        "auto",
        description="Convolution forms (core/models/conv.py): lax3d (native 3D convs, strided "
        "down / transposed up), slices (2D convs over depth-shifted slices and space-to-depth "
        "matmuls for down/up; faster on XLA:CPU), lax3d_s2d (native 3x3x3 convs, space-to-depth "
        "matmuls for down/up; a GPU candidate) or auto (slices on CPU, lax3d on "
        "GPU/TPU). All share the same parameters.",
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


class DiffusionConfig(Section):
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
    time_input: Literal[TIME_INPUTS] = Field(
        "fraction", description="The network's time input for step index k "
        "(core/diffusion/gaussian.py: model_time): fraction (t_k / T, times 1000 in the network: "
        "the same input for the same noise level whatever K) or index (k in [0, K) itself, as "
        "the released code; trained with K = 1000 and sampled with K = 5 it then sees 0..4). "
        "Paper profiles: index.")
    clip_x0: bool = Field(
        True,
        description="Noise prediction only: clip x0_hat from eq. 10 to [-1, 1], in the sampler and "
        "in recycling alike. The released ImgX-DiffSeg config does not clip (x_limit: 0.0).",
    )


class LossConfig(Section):
    """Segmentation loss on x0_hat (cross-entropy + foreground Dice) plus noise L2 for eps."""

    dice: bool = Field(True, description="Add the foreground-only Dice loss to cross-entropy.")
    noise_weight: float = Field(
        0.1, ge=0.0, description="Weight of the L2 loss on eps when predicting noise (paper 0.1)."
    )
    dice_absent_classes: Literal[DICE_ABSENT_CLASSES] = Field(
        "include", description="Soft Dice over (example, class) pairs whose class is absent "
        "from the example's label: include (in the mean, with a loss near 1) or exclude (left "
        "out of the mean, as the released code; core/losses/segmentation.py: soft_dice_loss). "
        "Paper profiles: exclude.")


class OptimConfig(Section):
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


class TrainConfig(Section):
    """Length of training and how often to log, checkpoint and validate."""

    steps: int = Field(12500, ge=1, description="Optimiser steps (paper: 12,500).")
    grad_accum_steps: int = Field(
        1,
        ge=1,
        description="Gradient accumulation: every step cuts its batch of data.batch_size into "
        "this many equal microbatches, averages their gradients and loss parts inside the one "
        "jitted step (a lax.scan: one microbatch's activations in memory at a time) and updates "
        "the parameters once, so each step still trains on data.batch_size examples "
        "(core/train/steps.py: accumulate_gradients; the paper's losses are per-example means, "
        "so this is the full-batch gradient up to float rounding). Must divide "
        "data.batch_size; 1 = no accumulation. Diffusion draws (k, noise) are made per "
        "microbatch, augmentation per batch. With data parallelism over D devices keep "
        "data.batch_size / grad_accum_steps a multiple of D, or each microbatch is gathered "
        "and computed on every device.",
    )
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
    stop_on_nonfinite: bool = Field(
        True,
        description="Stop the trial at the first logged window (train.log_every, and before "
        "every validation and checkpoint) whose loss or gradient norm is NaN or infinite: the "
        "error names the first such step and its loss parts, the checkpoints saved so far (all "
        "of finite training) are kept, the MLflow run ends FAILED with the reason in the tag "
        "diffseg3d.failure, and Ray Tune does not retry it (the same seed diverges again; "
        "experiments/trial/divergence.py). false: log NaN and train on.",
    )


class EvalConfig(Section):
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
    batch_size: int | None = Field(
        None, ge=1,
        description="Volumes evaluated at once (validation, the test split, the sampling "
        "variants and the cost timing), each batch keyed fold_in(key, j); null: "
        "data.batch_size. With data parallelism over D devices every batch is split over them "
        "(one D-th per device, parameters replicated), so it must be a multiple of D. Lower it "
        "where a device cannot hold the K-step sampling of its share of the batch "
        "(docs/GPU.md: the TPU plan). Left out of the config hash while null or equal to "
        "data.batch_size (the same batches), so trials configured before it existed keep "
        "their hashes.",
    )
    checkpoint: Literal["last", "best_val"] = Field(
        "last",
        description="Parameters the split is scored with: last (after train.steps) or best_val "
        "(those of the validation, every train.eval_every steps, with the best eval.val_metric, "
        "ties by eval.val_ties; the paper profiles). best_val needs "
        "train.eval_every > 0; the chosen step is logged (test_checkpoint_step) and kept "
        "across a resume (trial.json + best_params.npz in each checkpoint folder).",
    )
    val_metric: Literal[VAL_METRICS] = Field(
        "foreground_dice", description="Validation score picking best_val "
        "(core/metrics/validation_selection.py): foreground_dice, or binary_dice_with_background "
        "(the released mean_binary_dice_score, background included), logged as val_score; "
        "val_dice (foreground) is logged either way. Paper profiles: binary_dice_with_background.")
    val_ties: Literal[VAL_TIES] = Field(
        "earlier", description="Which of equal best validation scores wins: earlier or later "
        "(the released code prefers the longer trained). NaN never wins. Paper profiles: later.")
    samplers: list[Literal["ddpm_fixed_large", "ddpm_fixed_small", "ddim"]] = Field(
        [],
        description="Diffusion only: sampling variants the same trained parameters are also "
        "scored with (sampling variance study, Table 4): ddpm_fixed_large (variance beta_k, "
        "the default and the released code), ddpm_fixed_small (beta-tilde_k, the paper's text) "
        "and ddim (eta = 0). Each writes sampling/<variant>.csv and logs "
        "sampling/<variant>/test_* metrics, with the test key of the main evaluation; the "
        "variant of diffusion.sampler/variance reuses the main evaluation. Empty: none.",
    )


class ResourcesConfig(Section):
    """What one Ray Tune trial asks for; `cluster/resources.py` turns it into Ray's request."""

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
        check_accelerator_count(self.accelerator, self.accelerators_per_trial)
        return self


class NnunetConfig(Section):
    """nnU-Net v2 as a baseline (`method: nnunet`; `experiments/trial/nnunet/`): its own planning,
    preprocessing, network, training and inference, on the prepared data set with the project's
    split. Part of the config hash only for `method: nnunet`."""

    configuration: Literal["3d_fullres", "3d_lowres", "2d"] = Field(
        "3d_fullres",
        description="nnU-Net configuration trained and predicted (its plans name them); "
        "3d_fullres is nnU-Net's default for 3D data. 3d_lowres exists only where its planner "
        "makes one (large images); a missing one is an error naming those it made.",
    )
    budget: Literal["steps", "published"] = Field(
        "steps",
        description="Training length: steps = train.steps iterations at nnU-Net's planned batch "
        "size (epochs of at most 250 iterations, `trial/nnunet/budget.py`; checkpoint every "
        "epoch); published = nnU-Net's own 1000 epochs x 250 iterations whatever train.steps "
        "says.",
    )
    iterations_per_epoch: int | None = Field(
        None, ge=1,
        description="budget steps only: iterations per nnU-Net epoch (its learning-rate "
        "decay, validation, logging and checkpoint happen per epoch), as many epochs as reach "
        "train.steps (rounded up to whole epochs). None: at most 250 (nnU-Net's epoch) and the "
        "fewest equal epochs that add up to train.steps (`trial/nnunet/budget.py`).",
    )
    workers: int | None = Field(
        None, ge=0,
        description="nnU-Net's data-augmentation worker processes (nnUNet_n_proc_DA; 0 = in "
        "the training process) and its planning/prediction pools. None: "
        "resources.cpus_per_trial - 1 (one core for the training process itself), so Ray's "
        "CPU request covers them.",
    )

    @model_validator(mode="after")
    def _check_budget(self) -> NnunetConfig:
        if self.budget == "published" and self.iterations_per_epoch is not None:
            raise ValueError(f"nnunet.iterations_per_epoch={self.iterations_per_epoch} with "
                             "nnunet.budget=published: the published schedule is nnU-Net's "
                             "own 1000 x 250; use budget steps")
        return self
