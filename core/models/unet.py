"""The 3D (or 2D) U-Net of paper sec. 4, for diffusion and for plain supervised segmentation.

Architecture, for ``L = len(channels)`` levels (paper: 32/64/128/256, 2 residual blocks):

- input: ``image (batch, *S, 1)``; with ``diffusion=True`` the noisy mask
  ``x_t (batch, *S, num_classes)`` is concatenated on channels (paper sec. 4) and the time
  ``t (batch,)`` (= t_k / T) goes through a sinusoidal embedding + MLP of width ``4 channels[0]``;
- stem: 3x3x3 conv to ``channels[0]``;
- encoder level ``l``: ``num_res_blocks`` residual blocks at ``channels[l]``; between levels a
  2x2x2 stride-2 conv to ``channels[l + 1]`` halves *every* spatial dim, so each spatial size
  must be divisible by ``2 ** (L - 1)`` (8 for four levels: 256x256x48 -> ... -> 32x32x6,
  192x128x128 -> 24x16x16, 32x32x16 -> 4x4x2); otherwise ``__call__`` raises a ValueError
  naming the shape;
- decoder level ``l``: 2x2x2 stride-2 transposed conv to ``channels[l]``, concatenation with the
  encoder output of level ``l`` (skip), ``num_res_blocks`` residual blocks at ``channels[l]``;
- head: 1x1 conv to ``num_classes`` in float32; output float32 ``(batch, *S, num_classes)``
  (logits for mask prediction, eps for noise prediction).

Residual block: ``conv3 - norm - [scale-shift by time] - SiLU - conv3 - norm``, plus the input
(1x1 projection when channels change), then SiLU. The time embedding is injected in every block
as a per-channel scale and shift after the first norm, ``h * (1 + scale) + shift`` with
``(scale, shift) = Dense(2 C)(SiLU(t_emb))`` (FiLM / "scale-shift norm" of Dhariwal & Nichol
2021 and ImgX-DiffSeg).

Spatial rank is inferred from the input: 3D volumes ``(batch, X, Y, Z, C)`` and 2D images
``(batch, X, Y, C)`` use the same module and parameter names (kernels are 3x3x3 or 3x3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from diffseg3d.core.models.conv import conv_same, downsample, resolve_conv_impl, upsample
from diffseg3d.core.models.norm import NORMS, make_norm
from diffseg3d.core.models.ordering import after
from diffseg3d.core.models.time_embedding import TimeEmbedding

_KERNEL_INIT = nn.initializers.lecun_normal()


class Conv(nn.Module):
    """``k x ... x k`` "SAME" conv with stride 1, or the stride-2 2x..x2 down-/up-sampling conv.

    ``kind``: ``"same"`` (kernel ``(k,)*rank + (cin, features)``), ``"down"`` or ``"up"``
    (kernel ``(2,)*rank + (cin, features)``). ``impl`` is a resolved form (``"slices"``,
    ``"lax3d"`` or ``"lax3d_s2d"``, see ``conv.py``); the parameters do not depend on it.
    """

    features: int
    kernel_size: int = 3
    kind: str = "same"
    impl: str = "lax3d"
    dtype: Any = jnp.float32  # compute dtype; parameters are float32
    lean: bool = False  # slice form: low-memory kernel gradient (conv.conv3d_slices)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        rank = x.ndim - 2
        size = self.kernel_size if self.kind == "same" else 2
        kernel = self.param(
            "kernel", _KERNEL_INIT, (size,) * rank + (x.shape[-1], self.features), jnp.float32
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        x = x.astype(self.dtype)
        kernel = kernel.astype(self.dtype)
        if self.kind == "same":
            y = conv_same(x, kernel, self.impl, self.lean)
        elif self.kind == "down":
            y = downsample(x, kernel, self.impl)
        elif self.kind == "up":
            y = upsample(x, kernel, self.impl)
        else:
            raise ValueError(f"Conv.kind must be 'same', 'down' or 'up', got {self.kind!r}")
        return y + bias.astype(self.dtype)


class ResBlock(nn.Module):
    """Residual block ``(batch, *S, cin) -> (batch, *S, features)``, time via scale-shift."""

    features: int
    norm: str = "group"
    num_groups: int = 8
    impl: str = "lax3d"
    dtype: Any = jnp.float32
    lean: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, t_emb: jax.Array | None = None) -> jax.Array:
        c = self.features
        conv = dict(impl=self.impl, dtype=self.dtype, lean=self.lean)
        h = Conv(c, 3, **conv, name="conv1")(x)
        h = make_norm(self.norm, c, self.num_groups, self.dtype, name="norm1")(h)
        if t_emb is not None:
            ss = nn.Dense(2 * c, dtype=self.dtype, param_dtype=jnp.float32, name="time_proj")(
                nn.silu(t_emb)
            )
            ss = ss.reshape(ss.shape[0], *([1] * (x.ndim - 2)), 2 * c)
            scale, shift = jnp.split(ss, 2, axis=-1)
            h = h * (1 + scale) + shift
        h = nn.silu(h)
        h = Conv(c, 3, **conv, name="conv2")(h)
        h = make_norm(self.norm, c, self.num_groups, self.dtype, name="norm2")(h)
        skip = x
        if x.shape[-1] != c:
            skip = nn.Dense(c, dtype=self.dtype, param_dtype=jnp.float32, name="skip_proj")(x)
        return nn.silu(h + skip.astype(h.dtype))


def _remat_block(block: nn.Module, x: jax.Array, t_emb: jax.Array | None) -> jax.Array:
    """``block(x, t_emb)`` whose backward pass recomputes the block's forward (rematerialisation).

    Like ``nn.remat(ResBlock)`` (same outputs, parameters and gradients), but the recomputation
    is made data-dependent on the output cotangent. ``jax.checkpoint`` ties the recomputation to
    the backward pass with an ``optimization_barrier``, which XLA:CPU removes early in its
    pipeline; its scheduler then computes the "recomputed" activations during the forward pass
    (or CSE merges them with the forward ones) and the compiled temp memory does not drop.
    Saved for the backward pass: the block's input, ``t_emb`` and its parameters only.
    """
    clone = block.clone(parent=None, name=None)

    def apply(params, x, t_emb):
        return clone.apply({"params": params}, x, t_emb)

    def fn(mdl, x, t_emb):
        return mdl(x, t_emb)

    def fwd(mdl, x, t_emb):
        return mdl(x, t_emb), (mdl.variables["params"], x, t_emb)

    def bwd(res, g):
        params, x, t_emb = res
        x = after(x, g)
        _, vjp = jax.vjp(apply, params, x, t_emb)
        g_params, g_x, g_t = vjp(g)
        return {"params": g_params}, g_x, g_t

    return nn.custom_vjp(fn, forward_fn=fwd, backward_fn=bwd)(block, x, t_emb)


def _check_spatial(shape: tuple[int, ...], levels: int, what: str) -> None:
    factor = 2 ** (levels - 1)
    spatial = shape[1:-1]
    if len(spatial) not in (2, 3):
        raise ValueError(
            f"UNet expects {what} of shape (batch, *spatial, channels) with 2 or 3 spatial dims,"
            f" got shape {shape}"
        )
    bad = [n for n in spatial if n % factor]
    if bad:
        raise ValueError(
            f"UNet with {levels} levels halves every spatial dim {levels - 1} times, so each "
            f"spatial size must be divisible by {factor}; {what} has shape {shape} "
            f"(spatial {tuple(spatial)}, not divisible: {bad})"
        )


class UNet(nn.Module):
    """U-Net of paper sec. 4; ``__call__(image, x_t=None, t=None) -> (batch, *S, num_classes)``.

    Fields (ARCHITECTURE.md contract):
      num_classes: output channels = classes incl. background (also the channels of ``x_t``).
      channels: channels per level; ``len(channels)`` levels (paper: (32, 64, 128, 256)).
      num_res_blocks: residual blocks per level in encoder and decoder (paper code: 2).
      norm: ``"group"`` (GroupNorm, ``num_groups`` clipped to divide the channels) or
        ``"instance"``.
      num_groups: GroupNorm groups before clipping.
      diffusion: True: inputs are image, noisy mask ``x_t`` and time ``t``; False: image only
        (the non-diffusion baseline; no time embedding, no mask channels).
      conv_impl: ``"auto"`` | ``"slices"`` | ``"lax3d"`` | ``"lax3d_s2d"`` (``conv.py``: how
        the 3x3x3 and the down/up convs are computed; same parameters for all).
      remat: rematerialise each residual block in the backward pass (``_remat_block``, a
        custom VJP whose recomputation depends on the block's output cotangent): same
        parameters and outputs, gradients equal to float rounding, one extra forward pass per
        block, no forward-mode (``jvp``) differentiation. The slice-form convs then run
        ``lean`` (``conv.conv3d_slices``: X-blocks, 27-tap kernel gradient). Cuts XLA:CPU's
        compiled temp memory, where ``nn.remat`` did not (its ``optimization_barrier`` is
        dropped by XLA:CPU), so that a paper-size step fits a CPU machine's memory (planned and
        measured peaks: ``benchmarks/probes/memory_plan.py``, ``docs/BENCHMARKS.md``).
      dtype: compute dtype (``jnp.bfloat16`` for mixed precision); parameters are float32
        always and the output is float32.
      time_scale: multiplies ``t`` (= t_k / T) before the sinusoid; 1000 makes it the
        integer DDPM timestep for T = 1000.
    """

    num_classes: int
    channels: Sequence[int] = (32, 64, 128, 256)
    num_res_blocks: int = 2
    norm: str = "group"
    num_groups: int = 8
    diffusion: bool = True
    conv_impl: str = "auto"
    remat: bool = False
    dtype: Any = jnp.float32
    time_scale: float = 1000.0

    def _validate(self, image, x_t, t) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"UNet.norm must be one of {NORMS}, got {self.norm!r}")
        if len(self.channels) < 1 or self.num_res_blocks < 1:
            raise ValueError(
                f"UNet needs >= 1 level and >= 1 res block, got channels={self.channels}, "
                f"num_res_blocks={self.num_res_blocks}"
            )
        _check_spatial(tuple(image.shape), len(self.channels), "image")
        if not self.diffusion:
            if x_t is not None or t is not None:
                raise ValueError("UNet(diffusion=False) takes only the image; got x_t or t")
            return
        if x_t is None or t is None:
            raise ValueError("UNet(diffusion=True) needs x_t and t: model(image, x_t, t)")
        expected = tuple(image.shape[:-1]) + (self.num_classes,)
        if tuple(x_t.shape) != expected:
            raise ValueError(
                f"x_t must have shape {expected} (image spatial + num_classes), got {x_t.shape}"
            )
        if jnp.ndim(t) > 1 or (jnp.ndim(t) == 1 and jnp.shape(t)[0] != image.shape[0]):
            raise ValueError(
                f"t must be a scalar or shape ({image.shape[0]},), got shape {jnp.shape(t)}"
            )

    def _block(self, ch, kw, name, h, t_emb):
        block = ResBlock(ch, **kw, name=name)
        if self.remat and not self.is_initializing():
            return _remat_block(block, h, t_emb)
        return block(h, t_emb)

    @nn.compact
    def __call__(
        self, image: jax.Array, x_t: jax.Array | None = None, t: jax.Array | None = None
    ) -> jax.Array:
        self._validate(image, x_t, t)
        impl = resolve_conv_impl(self.conv_impl)
        kw = dict(norm=self.norm, num_groups=self.num_groups, impl=impl, dtype=self.dtype,
                  lean=self.remat)
        levels = len(self.channels)

        t_emb = None
        h = image.astype(jnp.float32)
        if self.diffusion:
            h = jnp.concatenate([h, x_t.astype(jnp.float32)], axis=-1)
            t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (image.shape[0],))
            t_emb = TimeEmbedding(
                self.channels[0], self.time_scale, dtype=self.dtype, name="time_embedding"
            )(t)

        h = Conv(self.channels[0], 3, impl=impl, dtype=self.dtype, lean=self.remat, name="stem")(h)
        skips = []
        for level, ch in enumerate(self.channels):
            for i in range(self.num_res_blocks):
                h = self._block(ch, kw, f"down{level}_block{i}", h, t_emb)
            if level < levels - 1:
                skips.append(h)
                h = Conv(
                    self.channels[level + 1],
                    kind="down",
                    impl=impl,
                    dtype=self.dtype,
                    name=f"down{level}_downsample",
                )(h)
        for level in reversed(range(levels - 1)):
            ch = self.channels[level]
            h = Conv(ch, kind="up", impl=impl, dtype=self.dtype, name=f"up{level}_upsample")(h)
            h = jnp.concatenate([h, skips.pop().astype(h.dtype)], axis=-1)
            for i in range(self.num_res_blocks):
                h = self._block(ch, kw, f"up{level}_block{i}", h, t_emb)
        out = nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32, name="head")(
            h.astype(jnp.float32)
        )
        return out
