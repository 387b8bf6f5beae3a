"""One trial end to end, without Ray: data -> state -> training with validation and checkpoints
-> test evaluation per case and class -> one MLflow run. Ray Tune (`trainable.py`) wraps
`run_trial`; `diffseg3d train` calls it directly.

Random streams (one seed -> same numbers, also across a resume):
    key = PRNGKey(config.seed)
    init:  fold_in(key, 0)    parameters
    train: fold_in(key, 1)    step s (from 0) uses fold_in(train_key, s) (augmentation, t, noise)
    eval:  fold_in(key, 2)    validation after step s: fold_in(eval_key, s), batch j fold_in(., j)
    test:  fold_in(key, 3)    the final evaluation, batch j fold_in(test_key, j); ensemble
                              sample s >= 1 of batch j fold_in(fold_in(test_key, j), s)
    data:  config.seed        batch i depends only on (seed, i) (`data.loader.batch_iterator`)

Logging: the mean of the per-step metrics since the last log, every `train.log_every` steps and
after every validation, checkpoint and the last step (so a resumed trial logs the same windows).

Checkpoints: one fresh folder per checkpoint, which Ray Tune may copy away whole,
`<workdir>/checkpoints/step_0000100/` with `orbax/` (TrainState) and `trial.json`
(mlflow_run_id, step, config_hash, trial), `core.train.checkpoint.save_checkpoint_folder`.

Test-time parameters (`eval.checkpoint`): `last`, or `best_val`: a device copy of the parameters
of the validation with the highest mean foreground Dice (the earliest on ties; NaN never wins).
The best so far travels with every checkpoint folder (`best_step`, `best_val_dice` in trial.json,
the parameters in `record.BEST_PARAMS`) rather than being re-derived, since older checkpoint
folders are deleted; so a resumed trial scores the same parameters as an uninterrupted one.
`eval.samplers` scores those parameters again with other sampling variants (Table 4), with the
same test key (common random numbers for the paired comparison).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.loader import batch_iterator, eval_batches
from diffseg3d.core.metrics import evaluate
from diffseg3d.core.train.checkpoint import (
    FOLDER_STATE,
    params_digest,
    restore_checkpoint,
    save_checkpoint_folder,
)
from diffseg3d.core.train.loop import compile_train_step, window_means
from diffseg3d.core.train.sharding import check_batch_divisible, make_mesh, replicate, shard_batches
from diffseg3d.core.train.state import create_train_state
from diffseg3d.experiments import build, record, sampling_eval
from diffseg3d.experiments.config import Config, DiffusionConfig, config_hash, to_yaml
from diffseg3d.experiments.montage import save_montage
from diffseg3d.experiments.pyfunc_model import log_trained_model
from diffseg3d.experiments.tracking import TrialRun, finite_or_nan
from tqdm import tqdm

#: Local checkpoint folders kept (older ones are deleted; Ray Tune keeps its own copies).
KEEP_CHECKPOINTS = 2

#: `report(metrics, checkpoint_dir)`, e.g. Ray Tune's `tune.report` (`trainable.py`).
Report = Callable[[dict[str, float], str], None]
#: The split's means logged as `test_<name>`: name -> key of `core.metrics.summarise`.
_TEST_MEANS = {"dice": "mean_case_dice", "hd95": "mean_case_hd95", "nsd": "mean_case_nsd",
               "n_nan_dice": "n_nan_dice", "n_nan_hd95": "n_nan_hd95", "n_nan_nsd": "n_nan_nsd",
               "n_cases": "n_cases"}
#: Metrics whose std over cases is logged as `test_<m>_std` (`_std_over_cases`).
_TEST_STDS = ("dice", "hd95", "nsd")


class TrialError(RuntimeError):
    """A trial cannot start or resume (bad checkpoint folder, config mismatch, ...)."""


def run_trial(
    config: Config, *, workdir: str | os.PathLike, tracking_uri: str | None, experiment: str,
    parent_run_id: str | None = None, resume_from: str | os.PathLike | None = None,
    report: Report | None = None, progress: bool = False,
) -> dict[str, Any]:
    """Train, validate and test one configuration, logging everything to one MLflow run.

    Args:
      config: the validated trial config.
      workdir: the trial's folder (checkpoints/, the per-case CSV, predictions/).
      tracking_uri: MLflow store (None: MLflow's default resolution, e.g. the env variable).
      experiment: MLflow experiment name (or id); must exist (`tracking.ensure_experiment`).
      parent_run_id: the grid's parent run; the trial's run is nested under it.
      resume_from: a checkpoint folder written by this function (or its copy, e.g. Ray Tune's):
        the state is restored, its MLflow run reopened, and training continues at its step
        with the same data and random streams as an uninterrupted run.
      report: called with (metrics so far, checkpoint folder) after each checkpoint and once at
        the end (with the test means, `done: True` and the final checkpoint).
      progress: show a tqdm progress bar (the `diffseg3d train` command).

    Returns: `run_id`, `trial`, `config_hash`, `step`, `checkpoint_dir`, `per_case_csv`,
      `params_digest`, `val_dice` (last, when validated) and the test means (`_test_means`).
    """
    chash = config_hash(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    meta = _read_trial_json(resume_from) if resume_from is not None else None
    if meta is not None and meta["config_hash"] != chash:
        raise TrialError(f"{resume_from}: checkpoint belongs to config {meta['config_hash']}, "
                         f"not {chash} ({config.name})")
    if meta is None:
        run = TrialRun.start(config, experiment=experiment, tracking_uri=tracking_uri,
                             parent_run_id=parent_run_id)
    else:
        run = TrialRun.reopen(meta["mlflow_run_id"], tracking_uri=tracking_uri)
        run.log_params(config)
    trial_meta = {"mlflow_run_id": run.run_id, "config_hash": chash, "trial": config.name}
    # Best validation so far (eval.checkpoint best_val), restored from the checkpoint's trial.json.
    track_best = config.eval.checkpoint == "best_val"
    best = {"best_step": int((meta or {}).get("best_step", 0)),
            "best_val_dice": (meta or {}).get("best_val_dice")} if track_best else {}
    best_params = None
    save = functools.partial(_save_checkpoint, workdir / "checkpoints")
    t, batch_size = config.train, config.data.batch_size
    try:
        # ---- data ----
        dataset = PreparedDataset.load(config.data.root)
        key = jax.random.PRNGKey(config.seed)
        init_key, train_key, eval_key, test_key = (jax.random.fold_in(key, i) for i in range(4))

        # ---- state (init or restore) ----
        model = build.model(config, dataset.num_classes)
        tx, lr_schedule = build.optimizer(config)
        init_state = functools.partial(create_train_state, model, tx, diffusion=model.diffusion,
                                       image_shape=(batch_size, *dataset.shape, 1))
        if resume_from is not None:  # a restore only needs the shapes
            target = jax.eval_shape(init_state, init_key)
            state, _ = restore_checkpoint(Path(resume_from) / FOLDER_STATE, target)
            if best.get("best_step"):
                best_params = _read_params(Path(resume_from) / record.BEST_PARAMS, target.params)
        else:  # one jitted init (not op by op), bit-identical to eager
            state = jax.jit(init_state)(init_key)
        start_step = int(jax.device_get(state.step))
        if start_step == 0:
            run.log_text(to_yaml(config), record.ARTIFACT_CONFIG)

        # ---- step ----
        step_fn = compile_train_step(build.train_step(config, model, tx, lr_schedule,
                                                      dataset.spacing))
        predict = build.predictor(config, model, dataset.num_classes)
        batches = host_batches = batch_iterator(dataset, "train", batch_size, config.seed,
                                                start_step=start_step)
        if len(jax.local_devices()) > 1:  # data parallel: state replicated, batches split
            mesh = make_mesh()
            check_batch_divisible(batch_size, mesh)
            state = replicate(state, mesh)
            batches = shard_batches(host_batches, mesh)

        # ---- loop (eval and checkpoint every k steps) ----
        bar = tqdm(total=t.steps, initial=start_step, desc=config.name, unit="step",
                   disable=not progress)
        last: dict[str, float] = {}
        window: list[dict] = []
        for step in range(start_step + 1, t.steps + 1):  # `step` counts completed steps
            state, metrics = step_fn(state, next(batches), jax.random.fold_in(train_key, step - 1))
            window.append(metrics)
            validate = bool(t.eval_every) and step % t.eval_every == 0
            checkpoint = bool(t.checkpoint_every) and step % t.checkpoint_every == 0
            if step % t.log_every == 0 or validate or checkpoint or step == t.steps:
                logged = {k: finite_or_nan(v) for k, v in window_means(window).items()}
                window = []
                run.log_metrics(logged, step)
                last.update(logged)
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{logged.get('loss', math.nan):.4f}")
            if validate:
                preds, labels = _predict(predict, state.params, dataset, "valid", batch_size,
                                         jax.random.fold_in(eval_key, step))
                last["val_dice"] = finite_or_nan(
                    evaluate.mean_case_dice(preds, labels, dataset.num_classes))
                run.log_metrics({"val_dice": last["val_dice"]}, step)
                floor = best.get("best_val_dice")  # None: no best yet; NaN never wins
                if track_best and last["val_dice"] > (-math.inf if floor is None else floor):
                    best.update(best_step=step, best_val_dice=last["val_dice"])
                    # A copy: the next step donates (frees) the state's buffers.
                    best_params = jax.tree_util.tree_map(jnp.copy, state.params)
            if checkpoint and step < t.steps:
                checkpoint_dir = save(state, {**trial_meta, **best}, best_params)
                if report is not None:
                    report({"step": step, **last}, str(checkpoint_dir))
        bar.close()
        host_batches.close()  # stops the loader's prefetch thread

        # ---- test ----
        final_step = int(jax.device_get(state.step))
        # Always written by this call, so it never carries another run's trial.json.
        final_dir = save(state, {**trial_meta, **best}, best_params)
        digest = params_digest(state.params)
        test_step = best.get("best_step") or final_step  # no finite validation Dice: last
        test_params = best_params if test_step != final_step else state.params
        split = config.eval.split
        if config.method == "diffusion":  # one pass: prediction, every step's x0_hat, ensemble
            sampled = sampling_eval.sample_split(
                build.sampler(config, model, dataset.num_classes), test_params, dataset, split,
                batch_size, test_key, config.eval.samples if config.eval.samples > 1 else None)
            preds, labels = sampled.preds, sampled.labels
        else:
            preds, labels = _predict(predict, test_params, dataset, split, batch_size, test_key)
        case_ids = dataset.case_ids(split)

        def score(predicted: np.ndarray) -> list[dict]:
            return evaluate.evaluate_cases(case_ids, predicted, labels, dataset.class_names,
                                           dataset.spacing, config.eval.nsd_tolerance_mm)

        rows = score(preds)
        summary = _test_means(rows, split, dataset.class_names)
        summary[f"{split}_checkpoint_step"] = test_step
        if config.method == "diffusion":
            summary.update({k: finite_or_nan(v) for k, v in sampling_eval.chain_metrics(
                sampled, dataset.num_classes, "test" if split == "test" else split).items()})
        sampling = {  # variant -> rows; the trained variant is the main evaluation
            v: rows if v == _sampling_variant(config.diffusion) else score(_predict(
                build.predictor(_with_sampling_variant(config, v), model, dataset.num_classes),
                test_params, dataset, split, batch_size, test_key)[0])
            for v in (config.eval.samplers if config.method == "diffusion" else [])}

        # ---- record ----
        csv_path = evaluate.write_per_case_csv(rows, workdir / record.ARTIFACT_PER_CASE)
        run.log_artifact(csv_path)
        pred_dir = workdir / record.ARTIFACT_PREDICTIONS
        images = dataset.arrays(split)[0]
        for i, case_id in enumerate(case_ids[: config.eval.save_predictions]):
            pred_dir.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(preds[i].astype(np.uint8), dataset.affine(case_id)),
                     str(pred_dir / f"{case_id}.nii.gz"))
            case_dice = [r["dice"] for r in rows if r["case"] == case_id]
            title = f"{config.name} | {case_id} | mean Dice {np.nanmean(case_dice):.3f}"
            save_montage(images[i], labels[i], preds[i], pred_dir / f"{case_id}.png",
                         dataset.class_names, title=title)
        if pred_dir.is_dir():
            run.log_artifacts(pred_dir, record.ARTIFACT_PREDICTIONS)
        for variant, variant_rows in sampling.items():
            evaluate.write_per_case_csv(
                variant_rows, workdir / record.ARTIFACT_SAMPLING / f"{variant}.csv")
            run.log_metrics({f"{record.ARTIFACT_SAMPLING}/{variant}/{k}": v for k, v in
                             _test_means(variant_rows, split, dataset.class_names).items()},
                            final_step)
        if sampling:
            run.log_artifacts(workdir / record.ARTIFACT_SAMPLING, record.ARTIFACT_SAMPLING)
        run.log_metrics(summary, final_step)
        test_mode = "best_val" if best.get("best_step") else "last"
        run.set_tags({record.TAG_PARAMS_DIGEST: digest,
                      record.TAG_TEST_CHECKPOINT: f"{test_step} ({test_mode})"})
        run.log_artifacts(final_dir, record.ARTIFACT_CHECKPOINT)
        log_trained_model(run, config, dataset.meta, final_dir, workdir)  # for `predict`
        result = {"run_id": run.run_id, "trial": config.name, "config_hash": chash,
                  "step": final_step, "checkpoint_dir": str(final_dir),
                  "per_case_csv": str(csv_path), "params_digest": digest,
                  **({"val_dice": last["val_dice"]} if "val_dice" in last else {}), **summary}
        if report is not None:
            numbers = {k: v for k, v in result.items() if isinstance(v, int | float)}
            report({**last, **numbers, "done": True}, str(final_dir))
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish("FINISHED")
    return result


def _predict(
    predict: build.Predictor, params, dataset: PreparedDataset, split: str, batch_size: int, key
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) label maps, both (N, *S) int32 in `case_ids(split)` order. One compiled
    shape serves all batches (`eval_batches` pads the last one); batch j is keyed fold_in(key, j).
    """
    preds, labels = [], []
    for j, batch in enumerate(eval_batches(dataset, split, batch_size)):
        out = predict(params, batch["image"], jax.random.fold_in(key, j))
        preds.append(np.asarray(jax.device_get(out))[batch["valid"]])
        labels.append(batch["label"][batch["valid"]])
    return np.concatenate(preds).astype(np.int32), np.concatenate(labels)


def _test_means(rows: list[dict], split: str, class_names) -> dict[str, float]:
    """The split's means as MLflow metrics: `test_dice`, `test_hd95` (means over cases of the
    per-case class means), their std over cases (`_std_over_cases`, as the tables), NaN counts,
    `test_n_cases`, and `test_dice/<class>`, `test_hd95/<class>`; the same for `test_nsd` (at
    `eval.nsd_tolerance_mm`). The prefix is the split's name unless test."""
    s, prefix = evaluate.summarise(rows), "test" if split == "test" else split
    out = {f"{prefix}_{name}": s[key] for name, key in _TEST_MEANS.items()}
    out.update({f"{prefix}_{m}_std": _std_over_cases(rows, m) for m in _TEST_STDS})
    out.update({f"{prefix}_{m}/{c}": s[f"{m}/{c}"] for c in class_names
                for m in evaluate.SUMMARY_METRICS})
    return {k: finite_or_nan(v) for k, v in out.items()}


def _read_trial_json(directory: str | os.PathLike) -> dict:
    """`trial.json` of a checkpoint folder, with a clear error when absent or malformed."""
    path = Path(directory) / record.TRIAL_JSON
    if not path.is_file():
        raise TrialError(f"{directory}: not a trial checkpoint folder (no {record.TRIAL_JSON})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TrialError(f"{path}: not valid JSON ({err})") from None
    for key in record.TRIAL_JSON_REQUIRED_KEYS:
        if key not in meta:
            raise TrialError(f"{path}: missing key {key!r}")
    return meta


def _std_over_cases(rows: list[dict], metric: str) -> float:
    """Sample std (ddof 1) over cases of each case's mean over its non-NaN classes: the spread
    the tables show (`analysis.table_data`), not that of the (case, class) rows. Cases with no
    finite value are skipped; NaN with fewer than two cases."""
    by_case: dict[str, list[float]] = {}
    for row in rows:
        by_case.setdefault(row["case"], []).append(float(row[metric]))
    means = []
    for values in by_case.values():
        valid = np.asarray(values)[~np.isnan(values)]
        if valid.size:
            means.append(valid.mean())
    return float(np.std(means, ddof=1)) if len(means) > 1 else math.nan


def _sampling_variant(diffusion: DiffusionConfig) -> str:
    """The `eval.samplers` name of the sampler a config trains for: `ddim` or `ddpm_<variance>`."""
    return "ddim" if diffusion.sampler == "ddim" else f"ddpm_{diffusion.variance}"


def _with_sampling_variant(config: Config, variant: str) -> Config:
    """`config` with the sampler and variance of an `eval.samplers` variant (DDIM keeps the
    variance, which it ignores); training settings unchanged."""
    sampler, variance = ("ddim", config.diffusion.variance) if variant == "ddim" else \
        ("ddpm", variant.removeprefix("ddpm_"))
    diffusion = config.diffusion.model_copy(update={"sampler": sampler, "variance": variance})
    return config.model_copy(update={"diffusion": diffusion})


def _save_checkpoint(root: Path, state, info: dict, best_params) -> Path:
    """A fresh checkpoint folder (`save_checkpoint_folder`) with `info` as trial.json and, when
    given, the best-validation parameters as `record.BEST_PARAMS`."""
    directory = save_checkpoint_folder(root, state, info=info, info_name=record.TRIAL_JSON,
                                       keep=KEEP_CHECKPOINTS)
    if best_params is not None:
        leaves = jax.tree_util.tree_leaves(jax.device_get(best_params))
        np.savez(directory / record.BEST_PARAMS,
                 **{f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)})
    return directory


def _read_params(path: Path, like):
    """Parameters saved by `_save_checkpoint` in the tree structure of `like` (arrays or shape
    structs), on the default device; a missing file or a leaf of another shape or dtype is a
    `TrialError` naming the file."""
    like_leaves, treedef = jax.tree_util.tree_flatten(like)
    if not path.is_file():
        raise TrialError(f"{path.parent}: {record.TRIAL_JSON} names a best_step but "
                         f"{path.name} is missing")
    with np.load(path) as data:
        leaves = [data[f"leaf_{i}"] for i in range(len(data.files))]
    for i, (have, want) in enumerate(itertools.zip_longest(leaves, like_leaves)):
        if have is None or want is None or have.shape != tuple(want.shape) \
                or have.dtype != want.dtype:
            raise TrialError(f"{path}: leaf {i} does not match the model's parameters")
    return jax.device_put(jax.tree_util.tree_unflatten(treedef, leaves))
