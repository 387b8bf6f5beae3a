"""One trial end to end, without Ray: data -> state -> training with validation and checkpoints
-> test evaluation per case and class -> one MLflow run. Ray Tune (`trainable.py`) wraps
`run_trial`; `diffseg3d train` calls it directly. `method: nnunet` trials run nnU-Net's own
pipeline instead (`trial/nnunet/trial.py`), with the same arguments and MLflow record.

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
A logged window with a non-finite loss or gradient norm stops the trial before that step's
validation and checkpoint (`train.stop_on_nonfinite`, `trial/divergence.py`); a trial that
fails for any reason ends its MLflow run FAILED with the reason in `record.TAG_FAILURE`.

Checkpoints: one fresh folder per checkpoint (`trial_checkpoint.save_checkpoint`),
`<workdir>/checkpoints/step_0000100/` with `orbax/` (TrainState) and `trial.json`.

Test-time parameters (`eval.checkpoint`): `last`, or `best_val`: a device copy of the parameters
of the validation with the best `eval.val_metric` (mean foreground Dice by default, or the
released code's binary Dice with background, logged as `val_score`), ties by `eval.val_ties`
(the earliest by default; NaN never wins).
The best so far travels with every checkpoint folder (`trial_checkpoint.BestValidation`).
`eval.samplers` scores those parameters again with other sampling variants (Table 4), with the
same test key (`scoring.score_sampling_variants`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.loader import batch_iterator, eval_batches
from diffseg3d.core.infer.predict import predict_unet_probabilities
from diffseg3d.core.metrics import evaluate
from diffseg3d.core.metrics.validation_selection import validation_score
from diffseg3d.core.train.checkpoint import FOLDER_STATE, params_digest, restore_checkpoint
from diffseg3d.core.train.loop import compile_train_step, window_means
from diffseg3d.core.train.sharding import (
    check_batch_divisible,
    make_mesh,
    place_batch,
    replicate,
    shard_batches,
)
from diffseg3d.core.train.state import create_train_state, run_init
from diffseg3d.experiments.config.schema import Config, to_yaml
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.tracking.dataset_input import dataset_input
from diffseg3d.experiments.tracking.mlflow_runs import finite_or_nan
from diffseg3d.experiments.tracking.pyfunc_model import log_trained_model
from diffseg3d.experiments.trial import build, sampling_eval, uncertainty
from diffseg3d.experiments.trial import cost as trial_cost
from diffseg3d.experiments.trial.checkpoint import (
    BestValidation,
    TrialError,
    save_checkpoint,
)
from diffseg3d.experiments.trial.divergence import check_window
from diffseg3d.experiments.trial.opening import open_run
from diffseg3d.experiments.trial.predictions import save_predictions
from diffseg3d.experiments.trial.scoring import predict_split, score_sampling_variants, test_means
from tqdm import tqdm

__all__ = ["Report", "TrialError", "run_trial"]

#: `report(metrics, checkpoint_dir)`, e.g. Ray Tune's `tune.report` (`trainable.py`).
Report = Callable[[dict[str, float], str], None]


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
      `params_digest`, `val_dice` (last, when validated) and the test means (`scoring.test_means`).
    """
    if config.method == "nnunet":  # nnU-Net's own pipeline on PyTorch, in child processes
        from diffseg3d.experiments.trial.nnunet.trial import run_nnunet_trial

        return run_nnunet_trial(config, workdir=workdir, tracking_uri=tracking_uri,
                                experiment=experiment, parent_run_id=parent_run_id,
                                resume_from=resume_from, report=report, progress=progress)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run, meta, trial_meta = open_run(config, experiment=experiment, tracking_uri=tracking_uri,
                                     parent_run_id=parent_run_id, resume_from=resume_from)
    chash = trial_meta["config_hash"]
    best = BestValidation.from_meta(config.eval.checkpoint == "best_val", meta,
                                    ties=config.eval.val_ties)
    save = functools.partial(save_checkpoint, workdir / "checkpoints")
    t, batch_size, eval_size = config.train, config.data.batch_size, config.eval_batch_size
    try:
        # ---- data ----
        dataset = PreparedDataset.load(config.data.root)
        if meta is None:  # a new run: its data set as an MLflow dataset input
            run.log_inputs([dataset_input(dataset)])
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
            best.restore_params(resume_from, target.params)
        else:  # one jitted init, compiled for speed; same values (tests/core/train/test_state.py)
            state = run_init(init_state, init_key)
        start_step = int(jax.device_get(state.step))
        if start_step == 0:
            run.log_text(to_yaml(config), record.ARTIFACT_CONFIG)

        # ---- step ----
        step_fn = compile_train_step(build.train_step(config, model, tx, lr_schedule,
                                                      dataset.spacing))
        predict = build.predictor(config, model, dataset.num_classes)
        # Diffusion: validation and test share one compiled sampling pass (with its per-step
        # labels; same padded batch shape), so the sampler is compiled once per trial.
        sample = (build.sampler(config, model, dataset.num_classes)
                  if config.method == "diffusion" else None)
        chain = sampling_eval.batch_sampler(sample) if sample is not None else None
        batches = host_batches = batch_iterator(dataset, "train", batch_size, config.seed,
                                                start_step=start_step)
        mesh = None
        if len(jax.local_devices()) > 1:  # data parallel: state replicated, batches split
            mesh = make_mesh()
            check_batch_divisible(batch_size, mesh)
            check_batch_divisible(eval_size, mesh, "eval.batch_size")
            state = replicate(state, mesh)
            batches = shard_batches(host_batches, mesh)

        # ---- loop (eval and checkpoint every k steps) ----
        bar = tqdm(total=t.steps, initial=start_step, desc=config.name, unit="step",
                   disable=not progress)
        last: dict[str, float] = {}
        window: list[dict] = []
        kept = None if resume_from is None else Path(resume_from)  # the newest checkpoint
        step_flops, train_start = math.nan, time.perf_counter()
        for step in range(start_step + 1, t.steps + 1):  # `step` counts completed steps
            batch, step_key = next(batches), jax.random.fold_in(train_key, step - 1)
            if step == start_step + 1:  # compiled here once; the call below reuses it
                step_flops = trial_cost.step_flops(step_fn, state, batch, step_key)
            state, metrics = step_fn(state, batch, step_key)
            window.append(metrics)
            validate = bool(t.eval_every) and step % t.eval_every == 0
            checkpoint = bool(t.checkpoint_every) and step % t.checkpoint_every == 0
            if step % t.log_every == 0 or validate or checkpoint or step == t.steps:
                means = window_means(window)
                logged = {k: finite_or_nan(v) for k, v in means.items()}
                run.log_metrics(logged, step)
                if t.stop_on_nonfinite:  # before this step's validation and checkpoint
                    check_window(window, means, step, config.name, kept)
                window = []
                last.update(logged)
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{logged.get('loss', math.nan):.4f}")
            if validate:
                preds, labels = _predict_valid(predict, chain, state.params, dataset,
                                               eval_size, jax.random.fold_in(eval_key, step),
                                               mesh)
                last["val_dice"] = finite_or_nan(
                    evaluate.mean_case_dice(preds, labels, dataset.num_classes))
                score = last["val_dice"]
                if config.eval.val_metric != "foreground_dice":
                    score = last["val_score"] = finite_or_nan(validation_score(
                        config.eval.val_metric, preds, labels, dataset.num_classes))
                run.log_metrics({k: last[k] for k in ("val_dice", "val_score") if k in last}, step)
                best.update(step, score, state.params)
            if checkpoint and step < t.steps:
                checkpoint_dir = kept = save(state, {**trial_meta, **best.info()},
                                             best.params)
                if report is not None:
                    report({"step": step, **last}, str(checkpoint_dir))
        bar.close()
        host_batches.close()  # stops the loader's prefetch thread
        train_seconds, eval_start = time.perf_counter() - train_start, time.perf_counter()

        # ---- test ----
        final_step = int(jax.device_get(state.step))
        # Always written by this call, so it never carries another run's trial.json.
        final_dir = save(state, {**trial_meta, **best.info()}, best.params)
        digest = params_digest(state.params)
        test_step = best.step or final_step  # no finite validation Dice: last
        test_params = best.params if test_step != final_step else state.params
        split = config.eval.split
        single = chain
        if config.method == "diffusion":  # one pass: prediction, every step's x0_hat, ensemble
            if config.eval.samples > 1:
                chain = sampling_eval.batch_sampler(sample, config.eval.samples)
            sampled = sampling_eval.sample_split(chain, test_params, dataset, split,
                                                 eval_size, test_key, mesh)
            preds, labels = sampled.preds, sampled.labels
        else:
            preds, labels = predict_split(predict, test_params, dataset, split, eval_size,
                                          test_key, mesh)
        case_ids = dataset.case_ids(split)

        def score(predicted: np.ndarray) -> list[dict]:
            return evaluate.evaluate_cases(case_ids, predicted, labels, dataset.class_names,
                                           dataset.spacing, config.eval.nsd_tolerance_mm)

        rows = score(preds)
        summary = test_means(rows, split, dataset.class_names)
        summary[f"{split}_checkpoint_step"] = test_step
        if config.method == "diffusion":
            summary.update({k: finite_or_nan(v) for k, v in sampling_eval.chain_metrics(
                sampled, dataset.num_classes, "test" if split == "test" else split).items()})
        sampling = score_sampling_variants(config, model, dataset, test_params, test_key, rows,
                                           score, mesh)
        scores = sampled.uncertainty if config.method == "diffusion" else \
            uncertainty.score_softmax_split(functools.partial(predict_unet_probabilities, model),
                                            test_params, dataset, split, eval_size, mesh)
        if scores is not None:
            summary.update({k: finite_or_nan(v) for k, v in scores.summary(
                "test" if split == "test" else split).items()})
        eval_seconds = time.perf_counter() - eval_start
        summary.update({k: finite_or_nan(v) for k, v in _cost(
            config, model, test_params, dataset, predict, single, chain, test_key, step_flops,
            final_step, train_seconds, eval_seconds, mesh).items()})

        # ---- record ----
        csv_path = evaluate.write_per_case_csv(rows, workdir / record.ARTIFACT_PER_CASE)
        run.log_artifact(csv_path)
        images = dataset.arrays(split)[0]
        save_predictions(run, config.name, config.eval.save_predictions, dataset, case_ids,
                         images, labels, preds, rows, workdir)
        for variant, variant_rows in sampling.items():
            evaluate.write_per_case_csv(
                variant_rows, workdir / record.ARTIFACT_SAMPLING / f"{variant}.csv")
            run.log_metrics({f"{record.ARTIFACT_SAMPLING}/{variant}/{k}": v for k, v in
                             test_means(variant_rows, split, dataset.class_names).items()},
                            final_step)
        if sampling:
            run.log_artifacts(workdir / record.ARTIFACT_SAMPLING, record.ARTIFACT_SAMPLING)
        for path in uncertainty.write_scores(scores, workdir) if scores is not None else ():
            run.log_artifact(path)
        run.log_metrics(summary, final_step)
        test_mode = "best_val" if best.step else "last"
        run.set_tags({record.TAG_PARAMS_DIGEST: digest,
                      record.TAG_DEVICE_KIND: jax.devices()[0].device_kind,
                      record.TAG_TEST_CHECKPOINT: f"{test_step} ({test_mode})"})
        run.log_artifacts(final_dir, record.ARTIFACT_CHECKPOINT)
        log_trained_model(run, config, dataset.meta, final_dir, workdir,  # for `predict`
                          metrics=summary, step=final_step)
        result = {"run_id": run.run_id, "trial": config.name, "config_hash": chash,
                  "step": final_step, "checkpoint_dir": str(final_dir),
                  "per_case_csv": str(csv_path), "params_digest": digest,
                  **({"val_dice": last["val_dice"]} if "val_dice" in last else {}), **summary}
        if report is not None:
            numbers = {k: v for k, v in result.items() if isinstance(v, int | float)}
            report({**last, **numbers, "done": True}, str(final_dir))
    except BaseException as err:
        with contextlib.suppress(Exception):  # the store itself may be what failed
            run.set_tags({record.TAG_FAILURE: record.failure_reason(err)})
        run.finish("FAILED")
        raise
    run.finish("FINISHED")
    return result


def _cost(config: Config, model, params, dataset: PreparedDataset, predict: build.Predictor,
          single: sampling_eval.BatchSampler | None, chain: sampling_eval.BatchSampler | None,
          key, step_flops: float, steps_run: int, train_seconds: float,
          eval_seconds: float, mesh=None) -> dict[str, float]:
    """`record.COST_METRICS` of the trial (`trial.cost`); seconds per case from re-running the
    split's first batch through the compiled one-sample and ensemble programs."""
    image = place_batch(next(iter(eval_batches(dataset, config.eval.split,
                                               config.eval_batch_size)))["image"], mesh)
    per_case = 1.0 / config.eval_batch_size
    diffusion = config.method == "diffusion"
    samples = config.eval.samples if diffusion else 1
    if diffusion:  # validation compiled the one-sample pass, unless the trial never validated
        one = trial_cost.timed(single.run, params, image, key, warm=not config.train.eval_every)
        many = trial_cost.timed(chain.run, params, image, key) if samples > 1 else one
    else:
        one = many = trial_cost.timed(predict, params, image, key)
    return trial_cost.trial_cost(
        train_step_flops=step_flops, steps_run=steps_run, train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        forward=trial_cost.forward_flops(model, params, dataset.shape, dataset.num_classes),
        passes_per_sample=config.diffusion.sample_steps if diffusion else 1, samples=samples,
        seconds_per_case_1=one * per_case, seconds_per_case_ensemble=many * per_case)


def _predict_valid(predict: build.Predictor, chain: sampling_eval.BatchSampler | None, params,
                   dataset: PreparedDataset, batch_size: int, key, mesh=None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) label maps of the validation split: through the trial's compiled
    sampling pass for diffusion (the same labels `predict` gives), `predict` for the U-Net;
    batches of `batch_size` split over `mesh` when given."""
    if chain is None:
        return predict_split(predict, params, dataset, "valid", batch_size, key, mesh)
    sampled = sampling_eval.sample_split(chain, params, dataset, "valid", batch_size, key, mesh)
    return sampled.preds, sampled.labels

