"""A trial's jitted programs, built by the trial's own builders, with abstract arguments placed on
a device: what `plan.py` compiles for a GPU the machine does not have.

The functions are exactly those `trial.run_trial` jits, from the same builders
(`experiments/trial/build.py`, `core/train/loop.py`, `trial/sampling_eval.py`,
`core/infer/predict.py`):

- ``train_step``: `compile_train_step(build.train_step(...))`, the state donated, on a batch
  of ``data.batch_size`` volumes in ``train.grad_accum_steps`` microbatches;
- ``validation``: the pass that scores the validation (and test) split: for diffusion the
  K-step sampler with its per-step labels (`sampling_eval.batch_sampler`), for the U-Net one
  forward pass and argmax, on an evaluation batch of ``eval.batch_size`` volumes
  (``data.batch_size`` when null);
- ``sample``: one case as `diffseg3d predict` segments it (batch 1): the K-step sampler of
  `build.sampler` for diffusion, the forward pass and argmax for the U-Net.

Everything is traced for the target's backend (``with conv.target_backend(backend)``: ``"gpu"``,
or ``"tpu"`` for a TPU topology), so ``model.conv_impl: auto`` resolves as on that device, not as
on this CPU.

The arguments go on one ``device`` (a GPU card), or on a ``mesh`` (`core/train/sharding.make_mesh`
over a TPU topology's devices) as `trial.run_trial` places them when it has several devices: the
train state replicated, the training batch and the validation's evaluation batch split along
their first axis (`sharding.batch_sharding`, as `sharding.place_batch` puts them), so each
device holds its share of either; the one-case program gets its image beside replicated
parameters, so every device holds that one case.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from diffseg3d.core.infer.predict import jit_predictor
from diffseg3d.core.models.conv import target_backend
from diffseg3d.core.train.loop import compile_train_step
from diffseg3d.core.train.sharding import batch_sharding, replicated_sharding
from diffseg3d.core.train.state import create_train_state
from diffseg3d.experiments.config.schema import Config
from diffseg3d.experiments.trial import build, sampling_eval

PROGRAMS = ("train_step", "validation", "sample")


@dataclass(frozen=True)
class Program:
    """One jitted function and the abstract arguments it is lowered with."""

    name: str
    fn: Callable
    args: tuple
    backend: str = "gpu"

    def lower(self, backend: str | None = None) -> Any:
        with target_backend(backend or self.backend):
            return self.fn.lower(*self.args)


def _placed(sharding: Any, tree: Any) -> Any:
    """Abstract values of ``tree``'s leaves with ``sharding``."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        tree)


def _batch(batch_size: int, shape: Sequence[int]) -> dict[str, jax.ShapeDtypeStruct]:
    """The training batch of `loader.batch_iterator`: image (B, *S, 1) float32, label (B, *S)
    int32."""
    return {"image": jax.ShapeDtypeStruct((batch_size, *shape, 1), jnp.float32),
            "label": jax.ShapeDtypeStruct((batch_size, *shape), jnp.int32)}


def trial_programs(config: Config, *, num_classes: int, shape: Sequence[int],
                   spacing: Sequence[float], device: Any = None, mesh: Any = None,
                   backend: str = "gpu", names: Sequence[str] = PROGRAMS) -> dict[str, Program]:
    """The `PROGRAMS` of one trial config on a data set of ``shape`` (spatial), ``num_classes``
    (background included) and ``spacing`` (mm), with arguments on ``device`` or, data
    parallel, on ``mesh`` (one of the two), traced for ``backend``."""
    unknown = set(names) - set(PROGRAMS)
    if unknown:
        raise ValueError(f"unknown programs {sorted(unknown)}; known: {PROGRAMS}")
    if (device is None) == (mesh is None):
        raise ValueError("trial_programs needs exactly one of device and mesh")
    if mesh is None:
        whole = split = jax.sharding.SingleDeviceSharding(device)
    else:
        whole, split = replicated_sharding(mesh), batch_sharding(mesh)
    b, eb = config.data.batch_size, config.eval_batch_size
    key = _placed(whole, jax.eval_shape(lambda: jax.random.PRNGKey(0)))
    with target_backend(backend):
        model = build.model(config, num_classes)
        tx, lr_schedule = build.optimizer(config)
        init = functools.partial(create_train_state, model, tx, diffusion=model.diffusion,
                                 image_shape=(b, *shape, 1))
        state = _placed(whole, jax.eval_shape(init, jax.random.PRNGKey(0)))
    params = state.params
    image = {1: _placed(whole, jax.ShapeDtypeStruct((1, *shape, 1), jnp.float32)),
             "eval": _placed(split, jax.ShapeDtypeStruct((eb, *shape, 1), jnp.float32))}
    out: dict[str, Program] = {}
    if "train_step" in names:
        step = compile_train_step(build.train_step(config, model, tx, lr_schedule, spacing))
        out["train_step"] = Program("train_step", step,
                                    (state, _placed(split, _batch(b, shape)), key), backend)
    diffusion = config.method == "diffusion"
    if diffusion and ("validation" in names or "sample" in names):
        sample = build.sampler(config, model, num_classes)
        if "validation" in names:
            chain = sampling_eval.batch_sampler(sample).run
            out["validation"] = Program("validation", chain, (params, image["eval"], key),
                                        backend)
        if "sample" in names:
            out["sample"] = Program("sample", jax.jit(sample), (params, image[1], key),
                                    backend)
    elif not diffusion:
        predict = jit_predictor(model)
        for name, n in (("validation", "eval"), ("sample", 1)):
            if name in names:
                out[name] = Program(name, predict, (params, image[n]), backend)
    return out
