"""Scoring a split with trained parameters: predicted label maps, the split's means and spreads as
MLflow metrics, and the sampling variants of `eval.samplers` (Table 4), which re-score the same
parameters with another sampler under the same key (common random numbers for the paired
comparison)."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import numpy as np
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.loader import eval_batches
from diffseg3d.core.metrics import evaluate
from diffseg3d.core.train.sharding import place_batch
from diffseg3d.experiments.config.schema import Config
from diffseg3d.experiments.config.sections import DiffusionConfig
from diffseg3d.experiments.tracking.mlflow_runs import finite_or_nan
from diffseg3d.experiments.trial import build
from jax.sharding import Mesh

#: The split's means logged as `test_<name>`: name -> key of `core.metrics.summarise`.
_TEST_MEANS = {"dice": "mean_case_dice", "hd95": "mean_case_hd95", "nsd": "mean_case_nsd",
               "n_nan_dice": "n_nan_dice", "n_nan_hd95": "n_nan_hd95", "n_nan_nsd": "n_nan_nsd",
               "n_cases": "n_cases"}
#: Metrics whose std over cases is logged as `test_<m>_std` (`std_over_cases`).
_TEST_STDS = ("dice", "hd95", "nsd")


def predict_split(
    predict: build.Predictor, params, dataset: PreparedDataset, split: str, batch_size: int, key,
    mesh: Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) label maps, both (N, *S) int32 in `case_ids(split)` order. One compiled
    shape serves all batches (`eval_batches` pads the last one); batch j is keyed fold_in(key, j).
    With a `mesh` each batch's images are split over its devices (`sharding.place_batch`).
    """
    preds, labels = [], []
    for j, batch in enumerate(eval_batches(dataset, split, batch_size)):
        out = predict(params, place_batch(batch["image"], mesh), jax.random.fold_in(key, j))
        preds.append(np.asarray(jax.device_get(out))[batch["valid"]])
        labels.append(batch["label"][batch["valid"]])
    return np.concatenate(preds).astype(np.int32), np.concatenate(labels)


def test_means(rows: list[dict], split: str, class_names) -> dict[str, float]:
    """The split's means as MLflow metrics: `test_dice`, `test_hd95` (means over cases of the
    per-case class means), their std over cases (`std_over_cases`, as the tables), NaN counts,
    `test_n_cases`, and `test_dice/<class>`, `test_hd95/<class>`; the same for `test_nsd` (at
    `eval.nsd_tolerance_mm`). The prefix is the split's name unless test."""
    s, prefix = evaluate.summarise(rows), "test" if split == "test" else split
    out = {f"{prefix}_{name}": s[key] for name, key in _TEST_MEANS.items()}
    out.update({f"{prefix}_{m}_std": std_over_cases(rows, m) for m in _TEST_STDS})
    out.update({f"{prefix}_{m}/{c}": s[f"{m}/{c}"] for c in class_names
                for m in evaluate.SUMMARY_METRICS})
    return {k: finite_or_nan(v) for k, v in out.items()}


def std_over_cases(rows: list[dict], metric: str) -> float:
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


def sampling_variant(diffusion: DiffusionConfig) -> str:
    """The `eval.samplers` name of the sampler a config trains for: `ddim` or `ddpm_<variance>`."""
    return "ddim" if diffusion.sampler == "ddim" else f"ddpm_{diffusion.variance}"


def with_sampling_variant(config: Config, variant: str) -> Config:
    """`config` with the sampler and variance of an `eval.samplers` variant (DDIM keeps the
    variance, which it ignores); training settings unchanged."""
    sampler, variance = ("ddim", config.diffusion.variance) if variant == "ddim" else \
        ("ddpm", variant.removeprefix("ddpm_"))
    diffusion = config.diffusion.model_copy(update={"sampler": sampler, "variance": variance})
    return config.model_copy(update={"diffusion": diffusion})


def score_sampling_variants(
    config: Config, model, dataset: PreparedDataset, params, key, trained_rows: list[dict],
    score: Callable[[np.ndarray], list[dict]], mesh: Mesh | None = None,
) -> dict[str, list[dict]]:
    """`eval.samplers` variant -> per-case rows of `params` on `eval.split` sampled that way
    (batches of `eval_batch_size`, split over `mesh` if given), each with `key`; the trained
    variant reuses `trained_rows` (the main evaluation). Empty unless the method is
    diffusion."""
    variants = config.eval.samplers if config.method == "diffusion" else []
    return {v: trained_rows if v == sampling_variant(config.diffusion) else score(predict_split(
        build.predictor(with_sampling_variant(config, v), model, dataset.num_classes),
        params, dataset, config.eval.split, config.eval_batch_size, key, mesh)[0])
        for v in variants}
