"""One trial end to end, without Ray: data -> model -> training (checkpoints, validation) ->
test evaluation per case and class -> MLflow run. Ray Tune (`runner.py`) wraps `run_trial`.

Random streams (one seed -> same numbers, also across a resume):
    key = PRNGKey(config.seed)
    init:  fold_in(key, 0)    parameters
    train: fold_in(key, 1)    step s uses fold_in(train_key, s) (augmentation, t, noise)
    eval:  fold_in(key, 2)    validation at step s: fold_in(eval_key, s)
    test:  fold_in(key, 3)    the final evaluation
    data:  config.seed        batch i depends only on (seed, i) (`data.loader.batch_iterator`)

Checkpoint layout (one fresh folder per checkpoint, which Ray Tune may copy away):
    <workdir>/checkpoints/step_0000100/orbax/...     `core.train.checkpoint` (TrainState)
    <workdir>/checkpoints/step_0000100/trial.json    {mlflow_run_id, step, config_hash, trial}
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from diffseg3d.experiments.config import Config, config_hash, to_yaml
from diffseg3d.experiments.tracking import TrialRun, finite_or_nan

#: Name of the metadata file inside each checkpoint folder.
TRIAL_JSON = "trial.json"
#: Local checkpoint folders kept (older ones are deleted; Ray Tune keeps its own copies).
KEEP_CHECKPOINTS = 2

Report = Callable[[dict[str, float], str], None]


class TrialError(RuntimeError):
    """A trial cannot start or resume (bad checkpoint folder, config mismatch, ...)."""


# ---------------------------------------------------------------------------------------------
# Building blocks


def build_model(config: Config, num_classes: int):
    """The U-Net of `config.model`; `diffusion=True` for the diffusion method (mask + time
    inputs), False for the plain U-Net."""
    import jax.numpy as jnp
    from diffseg3d.core.models.unet import UNet

    m = config.model
    return UNet(
        num_classes=num_classes,
        channels=tuple(m.channels),
        num_res_blocks=m.num_res_blocks,
        norm=m.norm,
        diffusion=config.method == "diffusion",
        conv_impl=m.conv_impl,
        remat=m.remat,
        dtype=jnp.bfloat16 if m.compute_dtype == "bfloat16" else jnp.float32,
    )


def build_schedule(config: Config, num_steps: int):
    """The K-step resampled schedule (paper 3.4) of `config.diffusion` with K = `num_steps`."""
    from diffseg3d.core.diffusion.schedule import make_schedule

    d = config.diffusion
    return make_schedule(
        num_timesteps=d.num_timesteps, num_steps=num_steps, kind=d.beta_schedule
    )


def build_augment(config: Config, spacing=None):
    """`augment(key, image, label)` bound to `config.data`'s ranges (rotations rigid in mm for
    the data set's `spacing`), or None when disabled."""
    if not config.data.augment:
        return None
    from diffseg3d.core.data.augment import random_affine

    d = config.data
    return functools.partial(
        random_affine,
        max_rotation=tuple(d.max_rotation),
        max_translation=tuple(d.max_translation),
        max_scale=tuple(d.max_scale),
        isotropic_scale=d.isotropic_scale,
        spacing=None if spacing is None else tuple(spacing),
    )


def make_predictor(config: Config, model, num_classes: int) -> Callable:
    """`predict(params, image (B, *S, 1), key) -> label (B, *S)`: the K-step sampler for
    diffusion (`diffusion.sample_steps`), one forward pass + argmax for the U-Net."""
    if config.method == "unet":
        from diffseg3d.core.infer.predict import predict_unet

        return lambda params, image, key: predict_unet(model, params, image)
    from diffseg3d.core.infer.sampling import make_sampler

    d = config.diffusion
    sampler = make_sampler(
        model,
        build_schedule(config, d.sample_steps),
        output=d.output,
        variance=d.variance,
        method=d.sampler,
        num_classes=num_classes,
    )
    return lambda params, image, key: sampler(params, image, key)


def predict_split(
    predict: Callable, params: Any, images: np.ndarray, batch_size: int, key
) -> np.ndarray:
    """Labels (N, *S) int32 for images (N, *S): fixed-size batches (the last one padded by
    repeating its final case, so one compiled shape serves all), batch j keyed fold_in(key, j)."""
    import jax

    n = images.shape[0]
    out = []
    for j, start in enumerate(range(0, n, batch_size)):
        chunk = images[start : start + batch_size]
        valid = chunk.shape[0]
        if valid < batch_size:
            pad = np.repeat(chunk[-1:], batch_size - valid, axis=0)
            chunk = np.concatenate([chunk, pad], axis=0)
        labels = predict(params, chunk[..., None], jax.random.fold_in(key, j))
        out.append(np.asarray(jax.device_get(labels))[:valid])
    return np.concatenate(out, axis=0).astype(np.int32)


def mean_foreground_dice(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean over cases of the per-case mean foreground Dice (NaN classes skipped)."""
    from diffseg3d.core.metrics.dice import dice_per_class

    per_case = []
    for pred, label in zip(preds, labels, strict=True):
        dice = dice_per_class(pred, label, num_classes)
        if np.any(~np.isnan(dice)):
            per_case.append(float(np.nanmean(dice)))
    return float(np.mean(per_case)) if per_case else math.nan


def params_digest(params: Any) -> str:
    """sha256 (16 hex) over every parameter's bytes in tree order: equal iff bit-identical."""
    import jax

    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(jax.device_get(params)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Checkpoint folders


def checkpoint_dir_for(workdir: str | os.PathLike, step: int) -> Path:
    return Path(workdir) / "checkpoints" / f"step_{step:07d}"


def save_trial_checkpoint(
    workdir: str | os.PathLike, state: Any, meta: dict, keep: int = KEEP_CHECKPOINTS
) -> Path:
    """Write the state (orbax) and `trial.json` into a fresh folder; prune older folders."""
    import jax
    from diffseg3d.core.train.checkpoint import save_checkpoint

    step = int(jax.device_get(state.step))
    directory = checkpoint_dir_for(workdir, step)
    if directory.exists():
        shutil.rmtree(directory)
    save_checkpoint(directory / "orbax", state, {"step": step}, max_to_keep=1)
    (directory / TRIAL_JSON).write_text(json.dumps({**meta, "step": step}, indent=2))
    existing = sorted((Path(workdir) / "checkpoints").glob("step_*"))
    for old in existing[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def read_trial_json(directory: str | os.PathLike) -> dict:
    """`trial.json` of a checkpoint folder, with a clear error when absent or malformed."""
    path = Path(directory) / TRIAL_JSON
    if not path.is_file():
        raise TrialError(f"{directory}: not a trial checkpoint folder (no {TRIAL_JSON})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TrialError(f"{path}: not valid JSON ({err})") from None
    for key in ("mlflow_run_id", "step", "config_hash"):
        if key not in meta:
            raise TrialError(f"{path}: missing key {key!r}")
    return meta


# ---------------------------------------------------------------------------------------------
# The trial


def run_trial(
    config: Config,
    *,
    workdir: str | os.PathLike | None = None,
    tracking_uri: str | None = None,
    experiment: str = "default",
    parent_run_id: str | None = None,
    resume_from: str | os.PathLike | None = None,
    report: Report | None = None,
    progress: bool = False,
    tracker: TrialRun | None = None,
    restore_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train, validate and test one configuration, logging everything to one MLflow run.

    Args:
      config: the validated trial config.
      workdir: the trial's folder (checkpoints, per_case_metrics.csv, predictions/); default
        `runs/trials/<name>_<config hash>`.
      tracking_uri: MLflow store (None: MLflow's default resolution, e.g. the env variable).
      experiment: MLflow experiment name (or id); must exist (`tracking.ensure_experiment`).
      parent_run_id: the grid's parent run; the trial's run is nested under it.
      resume_from: a checkpoint folder written by this function (or its copy, e.g. Ray Tune's):
        the state is restored, its MLflow run reopened, and training continues at its step
        with the same data and random streams as an uninterrupted run.
      report: `report(metrics, checkpoint_dir)` after each checkpoint and once at the end
        (with the test means and the final checkpoint); Ray Tune's adapter calls `tune.report`.
      progress: show a tqdm progress bar (the `diffseg3d train` command).
      tracker: an already opened `TrialRun` to log into (ARCHITECTURE.md's `run_trial(config, *,
        tracker, ...)` form); when given, `tracking_uri`/`experiment`/`parent_run_id` are unused.
      restore_dir: alias of `resume_from` (ARCHITECTURE.md's name).

    Returns:
      dict: `run_id`, `trial`, `config_hash`, `step`, `checkpoint_dir`, `per_case_csv`,
      `params_digest`, `val_dice` (last), and the test means `test_dice`, `test_hd95`,
      `test_n_nan_dice`, `test_n_nan_hd95`, ...
    """
    if resume_from is None:
        resume_from = restore_dir
    chash = config_hash(config)
    if workdir is None:
        workdir = Path("runs", "trials", f"{config.name}_{chash}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    meta = read_trial_json(resume_from) if resume_from is not None else None
    if meta is not None and meta["config_hash"] != chash:
        raise TrialError(
            f"{resume_from}: checkpoint belongs to config {meta['config_hash']}, not {chash} "
            f"({config.name})"
        )

    if tracker is not None:
        run = tracker
    elif meta is not None:
        run = TrialRun.reopen(meta["mlflow_run_id"], tracking_uri=tracking_uri)
        run.log_params(config)
    else:
        run = TrialRun.start(
            config, experiment=experiment, tracking_uri=tracking_uri, parent_run_id=parent_run_id
        )
    try:
        result = _train_and_evaluate(config, workdir, run, chash, resume_from, report, progress)
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish("FINISHED")
    return result


def _boundaries(total: int, *periods: int) -> list[int]:
    """Sorted steps in (0, total] that are multiples of any positive period, plus total."""
    marks = {total}
    for period in periods:
        if period > 0:
            marks.update(range(period, total + 1, period))
    return sorted(marks)


def _train_and_evaluate(
    config: Config,
    workdir: Path,
    run: TrialRun,
    chash: str,
    resume_from: str | os.PathLike | None,
    report: Report | None,
    progress: bool,
) -> dict[str, Any]:
    import jax
    from diffseg3d.core.data.dataset import PreparedDataset
    from diffseg3d.core.data.loader import batch_iterator
    from diffseg3d.core.train.checkpoint import restore_checkpoint
    from diffseg3d.core.train.loop import compile_train_step, fit
    from diffseg3d.core.train.optimizer import make_optimizer
    from diffseg3d.core.train.sharding import (
        check_batch_divisible,
        make_mesh,
        replicate,
        shard_batches,
    )
    from diffseg3d.core.train.state import create_train_state
    from diffseg3d.core.train.steps import make_train_step

    dataset = PreparedDataset.load(config.data.root)
    num_classes = dataset.num_classes
    model = build_model(config, num_classes)
    tx, lr_schedule = make_optimizer(
        config.optim.learning_rate,
        config.optim.warmup_steps,
        config.train.steps,
        config.optim.weight_decay,
        config.optim.grad_clip_norm,
        init_lr=config.optim.init_lr,
        decay_steps=config.optim.decay_steps,
        end_lr=config.optim.end_lr,
    )
    key = jax.random.PRNGKey(config.seed)
    init_key, train_key, eval_key, test_key = (jax.random.fold_in(key, i) for i in range(4))
    batch = config.data.batch_size
    # One jitted init (not op-by-op), bit-identical to eager; a resume only needs the shapes.
    init_state = functools.partial(
        create_train_state, model, tx, image_shape=(batch, *dataset.shape, 1),
        diffusion=config.method == "diffusion",
    )
    if resume_from is not None:
        target = jax.eval_shape(init_state, init_key)
        state, _ = restore_checkpoint(Path(resume_from) / "orbax", target)
    else:
        state = jax.jit(init_state)(init_key)
    start_step = int(jax.device_get(state.step))

    diffusion = config.method == "diffusion"
    train_step = make_train_step(
        model,
        tx,
        lr_schedule,
        method=config.method,
        schedule=build_schedule(config, config.diffusion.train_steps) if diffusion else None,
        output=config.diffusion.output,
        recycling=config.diffusion.recycling,
        use_dice=config.loss.dice,
        noise_loss_weight=config.loss.noise_weight,
        augment=build_augment(config, dataset.spacing),
    )
    step_fn = compile_train_step(train_step)
    predict = make_predictor(config, model, num_classes)
    host_batches = _batches(batch_iterator, dataset, batch, config.seed, start_step)
    batches = host_batches
    if len(jax.local_devices()) > 1:
        # Data parallel over the local devices: state replicated, batches split on axis 0.
        mesh = make_mesh()
        check_batch_divisible(batch, mesh)
        state = replicate(state, mesh)
        batches = shard_batches(host_batches, mesh)

    if start_step == 0:
        run.log_text(to_yaml(config), "config.yaml")
    trial_meta = {"mlflow_run_id": run.run_id, "config_hash": chash, "trial": config.name}
    last: dict[str, float] = {}
    bar = _progress_bar(progress, config, start_step)

    def on_metrics(step: int, metrics: dict[str, float]) -> None:
        metrics = {k: finite_or_nan(v) for k, v in metrics.items()}
        run.log_metrics(metrics, step)
        last.update(metrics)
        if bar is not None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{metrics.get('loss', math.nan):.4f}")

    t = config.train
    checkpoint_dir = None
    valid_images, valid_labels = (None, None)
    for boundary in _boundaries(t.steps, t.eval_every, t.checkpoint_every):
        if boundary <= start_step:
            continue
        state = fit(step_fn, state, batches, train_key, boundary, on_metrics=on_metrics,
                    log_every=t.log_every)
        if t.eval_every and boundary % t.eval_every == 0:
            if valid_images is None:
                valid_images, valid_labels = dataset.arrays("valid")
            preds = predict_split(
                predict, state.params, valid_images, batch, jax.random.fold_in(eval_key, boundary)
            )
            last["val_dice"] = finite_or_nan(
                mean_foreground_dice(preds, valid_labels, num_classes)
            )
            run.log_metrics({"val_dice": last["val_dice"]}, boundary)
        is_checkpoint = t.checkpoint_every and boundary % t.checkpoint_every == 0
        if is_checkpoint and boundary < t.steps:
            checkpoint_dir = save_trial_checkpoint(workdir, state, trial_meta)
            if report is not None:
                report({"step": boundary, **last}, str(checkpoint_dir))
    if bar is not None:
        bar.close()

    host_batches.close()
    final_step = int(jax.device_get(state.step))
    # Always written by this call, so it never carries another run's trial.json.
    final_dir = save_trial_checkpoint(workdir, state, trial_meta)
    digest = params_digest(state.params)
    summary = _evaluate_test(config, dataset, predict, state.params, test_key, workdir, run)
    run.log_metrics(summary, final_step)
    run.set_tags({"diffseg3d.params_digest": digest})
    run.log_artifacts(final_dir, "checkpoint")
    result = {
        "run_id": run.run_id,
        "trial": config.name,
        "config_hash": chash,
        "step": final_step,
        "checkpoint_dir": str(final_dir),
        "per_case_csv": str(workdir / "per_case_metrics.csv"),
        "params_digest": digest,
        **({"val_dice": last["val_dice"]} if "val_dice" in last else {}),
        **summary,
    }
    if report is not None:
        numbers = {k: v for k, v in result.items() if isinstance(v, int | float)}
        report(
            {**last, **numbers, "done": True},
            str(final_dir),
        )
    return result


def _batches(batch_iterator, dataset, batch_size: int, seed: int, start_step: int):
    """Training batches positioned at `start_step`, as `{"image": (B, *S, 1), "label": (B, *S)}`
    (the loader's arrays get their channel axis here when it is missing)."""
    source = batch_iterator(dataset, "train", batch_size, seed, start_step=start_step)
    try:
        for b in source:
            image = b["image"]
            if image.ndim == len(dataset.shape) + 1:
                image = image[..., None]
            yield {"image": image, "label": b["label"]}
    finally:
        source.close()  # stops the loader's prefetch thread


def _progress_bar(progress: bool, config: Config, start_step: int):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=config.train.steps, initial=start_step, desc=config.name, unit="step")


def _evaluate_test(
    config: Config, dataset, predict, params, key, workdir: Path, run: TrialRun
) -> dict[str, float]:
    """Per case and class metrics of `config.eval.split` -> per_case_metrics.csv, saved
    predictions (NIfTI + PNG), and the test means logged as `test_*` metrics."""
    import nibabel as nib
    from diffseg3d.core.metrics.evaluate import evaluate_case, summarise, write_per_case_csv
    from diffseg3d.experiments.montage import save_montage

    split = config.eval.split
    images, labels = dataset.arrays(split)
    case_ids = dataset.case_ids(split)
    preds = predict_split(
        predict, params, images, config.data.batch_size, key
    )
    rows = []
    for case_id, pred, label in zip(case_ids, preds, labels, strict=True):
        rows.extend(evaluate_case(case_id, pred, label, dataset.class_names, dataset.spacing))
    csv_path = write_per_case_csv(rows, workdir / "per_case_metrics.csv")
    run.log_artifact(csv_path)

    pred_dir = workdir / "predictions"
    for i, case_id in enumerate(case_ids[: config.eval.save_predictions]):
        pred_dir.mkdir(parents=True, exist_ok=True)
        nib.save(
            nib.Nifti1Image(preds[i].astype(np.uint8), dataset.affine(case_id)),
            str(pred_dir / f"{case_id}.nii.gz"),
        )
        case_dice = [r["dice"] for r in rows if r["case"] == case_id]
        title = f"{config.name} | {case_id} | mean Dice {np.nanmean(case_dice):.3f}"
        save_montage(images[i], labels[i], preds[i], pred_dir / f"{case_id}.png",
                     dataset.class_names, title=title)
    if pred_dir.is_dir():
        run.log_artifacts(pred_dir, "predictions")

    s = summarise(rows)
    prefix = "test" if split == "test" else split
    out = {
        f"{prefix}_dice": s["mean_case_dice"],
        f"{prefix}_hd95": s["mean_case_hd95"],
        f"{prefix}_dice_std": s["std_dice"],
        f"{prefix}_hd95_std": s["std_hd95"],
        f"{prefix}_n_nan_dice": s["n_nan_dice"],
        f"{prefix}_n_nan_hd95": s["n_nan_hd95"],
        f"{prefix}_n_cases": s["n_cases"],
    }
    for name in dataset.class_names:
        out[f"{prefix}_dice/{name}"] = s.get(f"dice/{name}", math.nan)
        out[f"{prefix}_hd95/{name}"] = s.get(f"hd95/{name}", math.nan)
    return {k: finite_or_nan(v) for k, v in out.items()}
