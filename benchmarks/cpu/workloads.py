"""Build the jitted callable and its arguments for one `BenchConfig` (runs inside the child).

Every workload is returned as ``Workload(fn, args, donate_argnums, advance)``: ``fn`` is jitted
and compiled by the timer, ``advance(out, args, i) -> args`` feeds step ``i``'s output back (a
training step's new state, a fresh ``fold_in(key, i)``), so a timed step is exactly what a
training loop or an inference call does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from diffseg3d.core.diffusion import make_schedule
from diffseg3d.core.infer import make_sampler
from diffseg3d.core.models import UNet
from diffseg3d.core.models.conv import conv3d_slices, conv_lax
from diffseg3d.core.train import create_train_state, make_optimizer, make_train_step
from diffseg3d.core.train.state import init_params
from jax import lax

from benchmarks.cpu.configs import BenchConfig
from benchmarks.cpu.reference_unet import ReferenceUNet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclass
class Workload:
    fn: Callable
    args: tuple
    donate_argnums: tuple[int, ...]
    advance: Callable[[Any, tuple, int], tuple]


def make_model(cfg: BenchConfig, diffusion: bool):
    """``UNet`` with the config's levers, or the float32 ``ReferenceUNet`` of the same shape."""
    if cfg.model == "reference":
        return ReferenceUNet(num_classes=cfg.num_classes, channels=cfg.channels,
                             diffusion=diffusion)
    return UNet(num_classes=cfg.num_classes, channels=cfg.channels, diffusion=diffusion,
                conv_impl=cfg.conv_impl, remat=cfg.remat, dtype=DTYPES[cfg.dtype])


def _inputs(cfg: BenchConfig, key: jax.Array):
    """Random image ``(1, *size, 1)``, label ``(1, *size)`` and noisy mask ``(1, *size, C)``."""
    k1, k2, k3 = jax.random.split(key, 3)
    shape = (1, *cfg.size)
    image = jax.random.normal(k1, (*shape, 1), jnp.float32)
    label = jax.random.randint(k2, shape, 0, cfg.num_classes, jnp.int32)
    x_t = jax.random.uniform(k3, (*shape, cfg.num_classes), jnp.float32, -1.0, 1.0)
    return image, label, x_t


def train_workload(cfg: BenchConfig, key: jax.Array) -> Workload:
    """fwd + bwd + AdamW: ``core.train.make_train_step`` on the model (ours or reference)."""
    diffusion = cfg.method == "diffusion"
    model = make_model(cfg, diffusion)
    tx, lr = make_optimizer(1e-4, warmup_steps=10, total_steps=1000, weight_decay=1e-4,
                            grad_clip_norm=1.0)
    step = make_train_step(
        model, tx, lr, method=cfg.method, recycling=cfg.recycling,
        schedule=make_schedule(1000, 5) if diffusion else None,
    )
    state = create_train_state(model, tx, key, (1, *cfg.size, 1), diffusion)
    image, label, _ = _inputs(cfg, jax.random.fold_in(key, 1))
    batch = {"image": image, "label": label}

    def advance(out, args, i):
        return (out[0], args[1], jax.random.fold_in(key, i))

    return Workload(step, (state, batch, key), (0,) if cfg.donate else (), advance)


def forward_workload(cfg: BenchConfig, key: jax.Array) -> Workload:
    """One diffusion forward ``model.apply(params, image, x_t, t)``."""
    model = make_model(cfg, True)
    params = init_params(model, key, (1, *cfg.size, 1), True)
    image, _, x_t = _inputs(cfg, jax.random.fold_in(key, 1))
    t = jnp.full((1,), 0.5, jnp.float32)

    def forward(params, image, x_t, t):
        return model.apply({"params": params}, image, x_t, t)

    return Workload(forward, (params, image, x_t, t), (), lambda out, args, i: args)


def sample_workload(cfg: BenchConfig, key: jax.Array) -> Workload:
    """``cfg.sample_steps``-step DDPM sampling of the whole volume (``core.infer.make_sampler``)."""
    model = make_model(cfg, True)
    params = init_params(model, key, (1, *cfg.size, 1), True)
    image, _, _ = _inputs(cfg, jax.random.fold_in(key, 1))
    sampler = make_sampler(model, make_schedule(1000, cfg.sample_steps))

    def sample(params, image, key):
        return sampler(params, image, key)

    def advance(out, args, i):
        return (args[0], args[1], jax.random.fold_in(key, i))

    return Workload(sample, (params, image, key), (), advance)


def conv_workload(cfg: BenchConfig, key: jax.Array) -> Workload:
    """One 3x3x3 "SAME" conv, value and grad w.r.t. input and kernel (what a training step does
    per conv), in the configured form (``slices``/``lax3d``) and layout."""
    cin, cout = cfg.conv_channels
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, (1, *cfg.size, cin), jnp.float32)
    w = jax.random.normal(k2, (3, 3, 3, cin, cout), jnp.float32) * 0.05
    if cfg.layout == "channels_first":
        x = jnp.moveaxis(x, -1, 1)

        def conv(x, w):
            return lax.conv_general_dilated(x, w, (1, 1, 1), "SAME",
                                            dimension_numbers=("NCHWD", "HWDIO", "NCHWD"))
    elif cfg.conv_impl == "slices":
        conv = conv3d_slices
    else:
        conv = conv_lax

    def loss_and_grads(x, w):
        return jax.value_and_grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1))(x, w)

    return Workload(loss_and_grads, (x, w), (), lambda out, args, i: args)


BUILDERS = {
    "train": train_workload,
    "forward": forward_workload,
    "sample": sample_workload,
    "conv": conv_workload,
}


def build(cfg: BenchConfig, seed: int = 0) -> Workload:
    """The workload of ``cfg`` with all randomness from ``PRNGKey(seed)``."""
    return BUILDERS[cfg.workload](cfg, jax.random.PRNGKey(seed))
