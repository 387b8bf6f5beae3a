"""The network of the authors' released code at the tag that matches the paper (ImgX-DiffSeg
v0.1.0, ``imgx/model/unet_3d_time.py``; ``imgx/model/unet_3d.py`` without time), in Flax.

``model.architecture: imgx_v010``. Every choice below is the released one; ``file:line`` refer
to the v0.1.0 tag of https://github.com/mathpluscode/ImgX-DiffSeg.

Layout, for ``channels = (c0, c1, c2, c3)`` (``imgx/conf/config_pelvic_diffusion.yaml:38-39``
and ``config_amos_diffusion.yaml:38-39``: ``unet3d_time.num_channels: [32, 64, 128, 256]``):

- input: ``image (B, *S, 1)`` concatenated on channels with the noisy mask ``x_t (B, *S, C)``
  (``imgx/diffusion/gaussian_diffusion.py:510``; ``imgx/exp/model.py:45``: in_channels
  ``1 + num_classes``); without diffusion, the image only (``imgx/model/unet_3d.py``).
- time: the sinusoid of ``t * time_scale`` with ``4 c0`` components ``[cos | sin]``
  (``unet_3d_time.py:202-203``, ``imgx/model/basic.py:50-75``), **no MLP**: each block applies
  GELU then its own Dense to ``c`` channels (``unet_3d_time.py:54-55``). The released sampler
  feeds the step index k in [0, K) (``gaussian_diffusion.py:503-512``, ``t_batch = [t] *
  batch``), training draws k uniformly in [0, K) (``gaussian_diffusion.py:683-688``); this
  project's ``diffusion.time_input: index`` gives that (``time_scale`` 1).
- stem, full resolution: 3x3x3 conv without bias - InstanceNorm - GELU to ``c0``
  (``unet_3d_time.py:92-97``, ``imgx/model/unet_3d.py:13-39``), then one time block at ``c0``
  (``unet_3d_time.py:98-103``). Kept as skip 0.
- encoder, for each ``c_l`` of ``channels`` (4 times): 2x2x2 stride-2 conv without bias -
  InstanceNorm, no activation (``Conv3dPool``, ``unet_3d.py:80-106``; ``unet_3d_time.py:106-
  109``), then ONE time block at ``c_l`` (``unet_3d_time.py:111-116``). Four down-samplings: the
  bottleneck is at 1/16 of every spatial size with ``c3`` channels, so each spatial size must
  divide by 16 (256x256x48 -> 16x16x3, 192x128x128 -> 12x8x8, 32x32x16 -> 2x2x1). The
  released convs pad "SAME" and crop after up-sampling (``unet_3d_time.py:156-162``), which
  the paper's sizes never need; here any other size is a ValueError naming the shape.
- decoder, widths ``(c0,) + channels[:-1]`` reversed = ``(c2, c1, c0, c0)``
  (``unet_3d_time.py:142-143``): 2x2x2 stride-2 transposed conv with bias to the level's width
  (``unet_3d_time.py:149-155``), the encoder output of that level ADDED (``unet_3d_time.py:
  164``, not concatenated), one time block (``unet_3d_time.py:166-171``).
- head: 1x1x1 conv with bias to ``num_classes`` (``unet_3d_time.py:173-175``), float32 here.

Time block ``(B, *S, c) -> (B, *S, c)`` (``TimeConv3dResBlock``, ``unet_3d_time.py:13-59``)::

    h = GELU(IN(conv3(x)))            # conv without bias
    h = conv3(h) + Dense_c(GELU(t_emb))   # time ADDED per channel, broadcast over space
    y = GELU(IN(h) + x)

``IN`` is InstanceNorm with a learnt scale and offset per channel, epsilon 1e-5, variance as
``jnp.var`` (``imgx/model/basic.py:18-27``; Haiku 0.0.9 ``InstanceNorm`` = ``LayerNorm`` over
the spatial axes, ``use_fast_variance=False``). A property of this block as released: the time
term is a per-channel constant over space added right before an InstanceNorm, which subtracts
the per-channel spatial mean, so ``IN(h + a) = IN(h)`` for any constant ``a``: **the released
network's output does not depend on t** (up to float rounding; the time Dense layers get zero
gradient). ``tests/core/models/test_imgx_v010.py`` checks it. Without diffusion the Dense is
absent (``Conv3dResBlock``, ``unet_3d.py:42-77``).

GELU is ``jax.nn.gelu`` (tanh approximation), the released default (``unet_3d_time.py:25``).
Initialisers are Haiku 0.0.9's defaults: truncated normal in +-2 sd with sd ``1 /
sqrt(fan_in)`` (not rescaled to unit variance) for every conv, transposed conv and Dense
kernel (``haiku/_src/conv.py:196-199, 576-579``, ``basic.py:174-175``), zero biases, InstanceNorm
scale 1 and offset 0. The transposed conv's kernel is stored ``(2, 2, 2, c_in, c_out)`` here
(Haiku: ``(2, 2, 2, c_out, c_in)``): the same number of parameters and the same distribution.

Project options that the released network did not have, with the released values as defaults
where they exist: ``conv_impl`` (how convs are computed, ``conv.py``: same parameters for all),
``remat`` (each time block recomputed in the backward pass; released ``remat: True``,
``config_pelvic_diffusion.yaml:33``), ``dtype`` (``bfloat16`` compute; released mixed precision
``training.mixed_precision.use: True`` with norms computed in float32,
``imgx/exp/mixed_precision.py:30-45, 82-93``; parameters float32 here as there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from diffseg3d.core.models.conv import conv_same, downsample, resolve_conv_impl, upsample
from diffseg3d.core.models.time_embedding import sinusoidal_embedding
from diffseg3d.core.models.unet import _remat_block

#: sd of a standard normal truncated to +-2 sd: Haiku's ``TruncatedNormal(1 / sqrt(fan_in))``
#: is ``variance_scaling(_TRUNCATED_SD ** 2, "fan_in", "truncated_normal")`` in Flax, which
#: divides its sd by this number.
_TRUNCATED_SD = 0.87962566103423978

#: Haiku 0.0.9's default kernel initialiser (conv, transposed conv, Linear).
HAIKU_KERNEL_INIT = nn.initializers.variance_scaling(
    _TRUNCATED_SD**2, "fan_in", "truncated_normal"
)


class _Conv(nn.Module):
    """Conv of the released network: ``"same"`` 3x3x3 stride 1 (no bias), ``"down"`` 2x2x2
    stride 2 (no bias), ``"up"`` 2x2x2 stride-2 transposed (bias), ``"head"`` 1x1x1 (bias)."""

    features: int
    kind: str
    impl: str
    dtype: Any = jnp.float32
    lean: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        rank = x.ndim - 2
        size = {"same": 3, "down": 2, "up": 2, "head": 1}[self.kind]
        kernel = self.param(
            "kernel", HAIKU_KERNEL_INIT, (size,) * rank + (x.shape[-1], self.features),
            jnp.float32,
        )
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if self.kind == "same":
            return conv_same(x, kernel, self.impl, self.lean)
        if self.kind == "down":
            return downsample(x, kernel, self.impl)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        if self.kind == "up":
            y = upsample(x, kernel, self.impl)
        else:
            y = x @ kernel.reshape(x.shape[-1], self.features)
        return y + bias.astype(y.dtype)


def _instance_norm(dtype: Any, name: str) -> nn.Module:
    """Haiku ``InstanceNorm(create_scale=True, create_offset=True)``: per example and channel
    over space, epsilon 1e-5, variance as ``jnp.var``; statistics in float32."""
    return nn.GroupNorm(
        num_groups=None, group_size=1, epsilon=1e-5, use_fast_variance=False, dtype=dtype,
        param_dtype=jnp.float32, name=name,
    )


class TimeResBlock(nn.Module):
    """``TimeConv3dResBlock`` (``t_emb`` given) or ``Conv3dResBlock`` (``t_emb`` None) of
    v0.1.0: ``(B, *S, features) -> (B, *S, features)``; ``t_emb (B, 4 c0)`` is the raw
    sinusoid (module doc)."""

    features: int
    impl: str = "lax3d"
    dtype: Any = jnp.float32
    lean: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, t_emb: jax.Array | None = None) -> jax.Array:
        c = self.features
        if x.shape[-1] != c:
            raise ValueError(f"TimeResBlock adds its input: {x.shape[-1]} channels, expected {c}")
        conv = dict(kind="same", impl=self.impl, dtype=self.dtype, lean=self.lean)
        h = _Conv(c, **conv, name="conv1")(x)
        h = nn.gelu(_instance_norm(self.dtype, "norm1")(h))
        h = _Conv(c, **conv, name="conv2")(h)
        if t_emb is not None:
            t = nn.Dense(c, dtype=self.dtype, param_dtype=jnp.float32,
                         kernel_init=HAIKU_KERNEL_INIT, name="time_proj")(
                nn.gelu(t_emb.astype(self.dtype)))
            h = h + t.reshape(t.shape[0], *([1] * (x.ndim - 2)), c).astype(h.dtype)
        h = _instance_norm(self.dtype, "norm2")(h)
        return nn.gelu(h + x.astype(h.dtype))


def check_spatial(shape: tuple[int, ...], levels: int) -> None:
    """ValueError naming ``shape`` unless it is ``(B, *spatial, C)`` with 2 or 3 spatial sizes
    that each divide by ``2 ** levels`` (``levels`` stride-2 down-samplings)."""
    spatial = shape[1:-1]
    if len(spatial) not in (2, 3):
        raise ValueError(f"ImgXV010UNet expects (batch, *spatial, channels) with 2 or 3 spatial "
                         f"dims, got shape {shape}")
    factor = 2**levels
    bad = [n for n in spatial if n % factor]
    if bad:
        raise ValueError(
            f"ImgXV010UNet down-samples {levels} times, so every spatial size must divide by "
            f"{factor}; got shape {shape} (not divisible: {bad})"
        )


class ImgXV010UNet(nn.Module):
    """The v0.1.0 network; ``__call__(image, x_t=None, t=None) -> (B, *S, num_classes)``.

    Fields (same names and meaning as ``unet.UNet`` where they exist):
      num_classes: output channels = classes incl. background (also the channels of ``x_t``).
      channels: widths ``(c0, ..., c_{L-1})``; the stem works at ``c0`` and each entry adds one
        stride-2 level (released: (32, 64, 128, 256), four down-samplings).
      diffusion: True: image, noisy mask ``x_t`` and time ``t``; False: image only
        (``Unet3d`` of v0.1.0, the U-Net baseline).
      conv_impl: ``"auto"`` | ``"slices"`` | ``"lax3d"`` | ``"lax3d_s2d"`` (``conv.py``).
      remat: rematerialise every residual block in the backward pass (``unet._remat_block``).
      dtype: compute dtype (``jnp.bfloat16`` for mixed precision); float32 parameters, float32
        output.
      time_scale: multiplies ``t`` before the sinusoid: 1 for the released step index k
        (``diffusion.time_input: index``), 1000 for ``t_k / T`` (``fraction``).
    """

    num_classes: int
    channels: Sequence[int] = (32, 64, 128, 256)
    diffusion: bool = True
    conv_impl: str = "auto"
    remat: bool = False
    dtype: Any = jnp.float32
    time_scale: float = 1.0

    def _block(self, ch, impl, name, h, t_emb):
        block = TimeResBlock(ch, impl=impl, dtype=self.dtype, lean=self.remat, name=name)
        if self.remat and not self.is_initializing():
            return _remat_block(block, h, t_emb)
        return block(h, t_emb)

    def _inputs(self, image, x_t, t):
        check_spatial(tuple(image.shape), len(self.channels))
        h = image.astype(jnp.float32)
        if not self.diffusion:
            if x_t is not None or t is not None:
                raise ValueError("ImgXV010UNet(diffusion=False) takes only the image")
            return h, None
        if x_t is None or t is None:
            raise ValueError("ImgXV010UNet(diffusion=True) needs x_t and t: model(image, x_t, t)")
        expected = tuple(image.shape[:-1]) + (self.num_classes,)
        if tuple(x_t.shape) != expected:
            raise ValueError(f"x_t must have shape {expected}, got {tuple(x_t.shape)}")
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (image.shape[0],))
        t_emb = sinusoidal_embedding(t * self.time_scale, 4 * self.channels[0])
        return jnp.concatenate([h, x_t.astype(jnp.float32)], axis=-1), t_emb

    @nn.compact
    def __call__(
        self, image: jax.Array, x_t: jax.Array | None = None, t: jax.Array | None = None
    ) -> jax.Array:
        if len(self.channels) < 1:
            raise ValueError(f"ImgXV010UNet needs >= 1 channel width, got {self.channels}")
        impl = resolve_conv_impl(self.conv_impl)
        h, t_emb = self._inputs(image, x_t, t)
        c0 = self.channels[0]
        h = _Conv(c0, "same", impl, self.dtype, self.remat, name="stem_conv")(h)
        h = nn.gelu(_instance_norm(self.dtype, "stem_norm")(h))
        h = self._block(c0, impl, "stem_block", h, t_emb)
        self.sow("intermediates", "encoder0", h)
        skips = [h]
        for level, ch in enumerate(self.channels, start=1):
            h = _Conv(ch, "down", impl, self.dtype, name=f"down{level}_conv")(h)
            h = _instance_norm(self.dtype, f"down{level}_norm")(h)
            h = self._block(ch, impl, f"down{level}_block", h, t_emb)
            self.sow("intermediates", f"encoder{level}", h)
            skips.append(h)
        skips.pop()  # the bottleneck is h itself
        widths = (c0, *self.channels[:-1])
        for level in reversed(range(len(self.channels))):
            ch = widths[level]
            h = _Conv(ch, "up", impl, self.dtype, name=f"up{level}_conv")(h)
            h = h + skips.pop().astype(h.dtype)
            h = self._block(ch, impl, f"up{level}_block", h, t_emb)
            self.sow("intermediates", f"decoder{level}", h)
        return _Conv(self.num_classes, "head", impl, jnp.float32, name="head")(
            h.astype(jnp.float32)
        )
