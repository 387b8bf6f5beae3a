"""``model.architecture`` -> the network: this project's U-Net or the released v0.1.0 network.

- ``"diffseg3d"``: ``unet.UNet`` (GroupNorm, SiLU, scale-shift time conditioning through an
  MLP, concatenated skips, ``num_res_blocks`` blocks per level, ``len(channels) - 1``
  down-samplings);
- ``"imgx_v010"``: ``imgx_v010.ImgXV010UNet``, the network of the authors' code at the tag
  that matches the paper (full-resolution stem, one block per level, ``len(channels)``
  down-samplings, InstanceNorm, GELU, additive time and skips). Its ``num_res_blocks`` (1) and
  norm (instance) are fixed by the release; the arguments of those names are not used.

Both take ``(image, x_t, t)`` (or the image alone with ``diffusion=False``) and return
``(batch, *spatial, num_classes)`` float32, and both multiply ``t`` by ``time_scale`` before
their sinusoid, which ``time_scale_for`` sets from ``diffusion.time_input``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from diffseg3d.core.models.imgx_v010 import ImgXV010UNet
from diffseg3d.core.models.unet import UNet

ARCHITECTURES = ("diffseg3d", "imgx_v010")

#: ``diffusion.time_input`` (``core.diffusion.schedule.TIME_INPUTS``; the models and the
#: diffusion maths do not import each other, a test keeps the keys equal) -> ``time_scale``:
#: ``"fraction"`` t_k / T times 1000 is the integer DDPM time t_k for T = 1000, the range the
#: sinusoid's frequencies are made for; ``"index"`` k goes to the sinusoid as it is, as in the
#: released code.
TIME_SCALES = {"fraction": 1000.0, "index": 1.0}


def time_scale_for(time_input: str) -> float:
    """The networks' ``time_scale`` for ``diffusion.time_input`` (``TIME_SCALES``); ValueError
    naming the value otherwise."""
    if time_input not in TIME_SCALES:
        raise ValueError(f"time_input must be one of {tuple(TIME_SCALES)}, got {time_input!r}")
    return TIME_SCALES[time_input]


def build_network(
    architecture: str,
    *,
    num_classes: int,
    channels: Sequence[int],
    diffusion: bool,
    conv_impl: str = "auto",
    remat: bool = False,
    dtype: Any = jnp.float32,
    time_input: str = "fraction",
    num_res_blocks: int = 2,
    norm: str = "group",
) -> nn.Module:
    """The network of ``architecture`` (one of ``ARCHITECTURES``; ValueError naming it
    otherwise) with ``time_scale_for(time_input)``. ``num_res_blocks`` and ``norm`` apply to
    ``"diffseg3d"`` only."""
    scale = time_scale_for(time_input)
    if architecture == "diffseg3d":
        return UNet(num_classes=num_classes, channels=tuple(channels),
                    num_res_blocks=num_res_blocks, norm=norm, diffusion=diffusion,
                    conv_impl=conv_impl, remat=remat, dtype=dtype, time_scale=scale)
    if architecture == "imgx_v010":
        return ImgXV010UNet(num_classes=num_classes, channels=tuple(channels),
                            diffusion=diffusion, conv_impl=conv_impl, remat=remat, dtype=dtype,
                            time_scale=scale)
    raise ValueError(f"model.architecture must be one of {ARCHITECTURES}, got {architecture!r}")
