"""A diffusion trial's test split sampled once with its trajectory, and optionally as an ensemble.

`sample_split` runs the K-step sampler (paper 3.1) over the split's padded batches with
`return_trajectory=True` (compiled once per trial by `batch_sampler`), so one pass gives
  - the prediction: the sampler's label (argmax of the last x0_hat), as `build.predictor` gives;
  - the label map of every step's x0_hat (quality along the sampling chain: does recycling,
    paper 3.2, make the early steps better?); the last step's map IS the prediction;
  - with `samples = N`, the N-sample ensemble (`core.infer.ensemble.ensemble_maps`): sample 0 is
    that same pass's final x0_hat, samples 1..N-1 are drawn in one batched (vmapped) call, so
    the 1-sample and N-sample scores are paired on the same first sample.

Keys: batch j of the split uses kj = fold_in(key, j) (as the trial's `_predict`), ensemble sample
s >= 1 of that batch fold_in(kj, s).

`chain_metrics` turns a `SplitSamples` into MLflow metrics (`<split>_dice_step_<k>`, k = 1..K in
sampling order; `<split>_dice_ensemble`; `<split>_uncertainty_dice_spearman`), all with the
definition of `test_dice` (`core.metrics.evaluate.mean_case_dice`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.loader import eval_batches
from diffseg3d.core.diffusion import mask_to_label
from diffseg3d.core.infer.ensemble import ensemble_maps, sample_probabilities
from diffseg3d.core.metrics.evaluate import case_mean_dice, mean_case_dice, mean_case_dice_per_step
from diffseg3d.core.metrics.uncertainty import uncertainty_dice_spearman
from diffseg3d.core.train.sharding import place_batch
from diffseg3d.experiments.trial.uncertainty import UncertaintyScores
from jax.sharding import Mesh


@dataclasses.dataclass(frozen=True)
class SplitSamples:
    """One sampling pass over a split, cases in `dataset.case_ids(split)` order.

    preds: (cases, *S) int32, the sampler's labels (the test prediction).
    labels: (cases, *S) int32 ground truth.
    step_preds: (K, cases, *S) int32, argmax of the x0_hat of each sampling step, in sampling
      order (row 0 from x_K); `step_preds[-1]` equals `preds`.
    ensemble: (cases, *S) int32 label of the N-sample ensemble, or None when not asked for.
    entropy: (cases,) float32 mean over voxels of the ensemble's entropy (nats), or None.
    samples: N of the ensemble (0 without one).
    uncertainty: with an ensemble of N >= 2, its per-case sample-set, calibration and
      error-detection scores (`trial.uncertainty`), else None.
    by_size: with an ensemble, (sizes, cases, *S) int32 labels of the ensembles of the first
      n samples for n in `ensemble_sizes(N)`, else None.
    """

    preds: np.ndarray
    labels: np.ndarray
    step_preds: np.ndarray
    ensemble: np.ndarray | None = None
    entropy: np.ndarray | None = None
    samples: int = 0
    uncertainty: UncertaintyScores | None = None
    by_size: np.ndarray | None = None


def ensemble_sizes(samples: int) -> tuple[int, ...]:
    """1, 2, 4, ... below N, then N: the ensemble sizes scored for Dice against cost."""
    sizes = [1]
    while sizes[-1] * 2 < samples:
        sizes.append(sizes[-1] * 2)
    return tuple(sizes) + ((samples,) if samples > 1 else ())


@dataclasses.dataclass(frozen=True)
class BatchSampler:
    """A compiled `run(params, image (B, *S, 1), key) -> (label (B, *S), step labels (K, B, *S),
    ensemble label (B, *S) | None, mean entropy (B,) | None, maps | None)` and its ensemble
    size; `maps` holds the ensemble's `probs` (B, *S, C), `entropy` and `disagreement` (B, *S),
    `sample_labels` (N, B, *S) and `by_size` (sizes, B, *S).

    Build it once per trial (`batch_sampler`) and give it to every `sample_split` call: the
    validation passes and the test pass then share one compiled program (same padded batch
    shape), instead of compiling the sampler again for each."""

    run: Callable
    samples: int | None = None


def batch_sampler(sample: Callable[..., Any], samples: int | None = None) -> BatchSampler:
    """Jit one batch of `sample` with its trajectory (and an N-sample ensemble when `samples`).

    Args:
      sample: `make_sampler`'s `sample(params, image, key, return_trajectory=False)`
        (`build.sampler`).
      samples: N >= 1 for an N-sample ensemble as well (N = 1 gives the prediction itself);
        None: no ensemble (the ensemble outputs are None).
    """
    if samples is not None and samples < 1:
        raise ValueError(f"samples must be >= 1 or None, got {samples}")

    def run(params, image, key):
        label, x0_hats = sample(params, image, key, return_trajectory=True)
        steps = mask_to_label(x0_hats)  # (K, B, *S): argmax over classes of every step
        if samples is None:
            return label, steps, None, None, None
        keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(1, samples))
        others = jax.vmap(lambda k: sample(params, image, k, return_trajectory=True)[1][-1])(keys)
        finals = jnp.concatenate([x0_hats[-1][None], others])  # (N, B, *S, C)
        ensemble, entropy, disagreement = ensemble_maps(finals)
        probs = sample_probabilities(finals)
        # The ensembles of the first n samples, n = 1, 2, 4, ..., N (Dice against cost).
        sizes = ensemble_sizes(samples)
        firsts = jnp.stack([jnp.argmax(probs[:n].mean(axis=0), axis=-1) for n in sizes])
        maps = {"probs": probs.mean(axis=0), "entropy": entropy, "disagreement": disagreement,
                "sample_labels": jnp.argmax(finals, axis=-1).astype(jnp.int32),
                "by_size": firsts.astype(jnp.int32)}
        return label, steps, ensemble, entropy.mean(axis=tuple(range(1, entropy.ndim))), maps

    return BatchSampler(run=jax.jit(run), samples=samples)


def sample_split(
    sampler: BatchSampler,
    params: Any,
    dataset: PreparedDataset,
    split: str,
    batch_size: int,
    key: jax.Array,
    mesh: Mesh | None = None,
) -> SplitSamples:
    """Sample every case of `split` once with its trajectory (and as `sampler`'s ensemble).

    Args:
      sampler: `batch_sampler(build.sampler(...), samples)`.
      params: the model parameters.
      dataset, split, batch_size: the cases, in padded batches of `batch_size`
        (`loader.eval_batches`; one compiled shape for every split).
      key: the split's key; batch j uses fold_in(key, j).
      mesh: data parallel (`core/train/sharding.make_mesh`): each batch's images are split
        over its devices (`batch_size` a multiple of their number) beside the replicated
        parameters, so each device samples its share only; None: one device.
    """
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("preds", "labels", "steps", "ens",
                                                          "entropy", "by_size")}
    # Per-voxel maps are scored batch by batch on the host and not kept (paper-size volumes).
    scores = UncertaintyScores() if (sampler.samples or 0) >= 2 else None
    case_ids = iter(dataset.case_ids(split))
    for j, batch in enumerate(eval_batches(dataset, split, batch_size)):
        valid = batch["valid"]
        label, steps, ensemble, entropy, maps = jax.device_get(
            sampler.run(params, place_batch(batch["image"], mesh), jax.random.fold_in(key, j)))
        if maps is not None:
            parts["by_size"].append(np.asarray(maps["by_size"])[:, valid])
        if scores is not None:
            for i in np.flatnonzero(valid):
                scores.add(next(case_ids), dataset.class_names, maps["probs"][i],
                           batch["label"][i], maps["entropy"][i], maps["disagreement"][i],
                           maps["sample_labels"][:, i], batch["image"][i])
        parts["preds"].append(np.asarray(label)[valid])
        parts["labels"].append(batch["label"][valid])
        parts["steps"].append(np.asarray(steps)[:, valid])
        if sampler.samples is not None:
            parts["ens"].append(np.asarray(ensemble)[valid])
            parts["entropy"].append(np.asarray(entropy)[valid])
    join = {k: (np.concatenate(v, axis=1 if k in ("steps", "by_size") else 0) if v else None)
            for k, v in parts.items()}
    return SplitSamples(
        preds=join["preds"].astype(np.int32), labels=join["labels"],
        step_preds=join["steps"].astype(np.int32),
        ensemble=None if join["ens"] is None else join["ens"].astype(np.int32),
        entropy=join["entropy"], samples=sampler.samples or 0, uncertainty=scores,
        by_size=join["by_size"],
    )


def chain_metrics(sampled: SplitSamples, num_classes: int, prefix: str = "test"
                  ) -> dict[str, float]:
    """Dice per sampling step and, with an ensemble, its Dice and the uncertainty-Dice Spearman r.

    Keys: `<prefix>_dice_step_<k>` for k = 1..K (k = K is the prediction, equal to
    `<prefix>_dice`); with an ensemble `<prefix>_ensemble_samples` (N),
    `<prefix>_dice_ensemble` (the ensemble label's mean case Dice, next to the 1-sample
    `<prefix>_dice`) and `<prefix>_uncertainty_dice_spearman`
    (Spearman r between each case's mean voxel entropy and its ensemble Dice; negative when the
    uncertainty flags the poor cases), `<prefix>_dice_ensemble_n<n>` for the ensembles of the
    first n = 1, 2, 4, ..., N samples, and with N >= 2 the means of `trial.uncertainty`
    (`<prefix>_ged`, `<prefix>_ece`, `<prefix>_auroc_entropy`, ...). NaN where undefined
    (`core.metrics`).
    """
    per_step = mean_case_dice_per_step(sampled.step_preds, sampled.labels, num_classes)
    out = {f"{prefix}_dice_step_{k}": value for k, value in enumerate(per_step, start=1)}
    if sampled.ensemble is not None:
        out[f"{prefix}_ensemble_samples"] = float(sampled.samples)
        out[f"{prefix}_dice_ensemble"] = mean_case_dice(sampled.ensemble, sampled.labels,
                                                        num_classes)
        out[f"{prefix}_uncertainty_dice_spearman"] = uncertainty_dice_spearman(
            sampled.entropy, case_mean_dice(sampled.ensemble, sampled.labels, num_classes))
        for n, labels in zip(ensemble_sizes(sampled.samples), sampled.by_size, strict=True):
            out[f"{prefix}_dice_ensemble_n{n}"] = mean_case_dice(labels, sampled.labels,
                                                                 num_classes)
    if sampled.uncertainty is not None:
        out.update(sampled.uncertainty.summary(prefix))
    return out
