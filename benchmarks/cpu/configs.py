"""The benchmark configurations: what `make bench` times, one fresh subprocess per entry.

A `BenchConfig` names one jitted callable (a training step, one forward pass, K-step sampling,
or one convolution layer) at one input size with one set of levers. `plan(...)` lists them in
the order they run: the ones the output contract (`latest.json` summary keys) needs first, then
the levers, so a run cut short by the time budget loses levers, not contract keys.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from diffseg3d.core.models.conv import CONV_IMPLS

WORKLOADS = ("train", "forward", "sample", "conv")
MODELS = ("ours", "reference")
GROUPS = ("contract", "levers", "memory", "gpu")

#: Paper channels per level (paper sec. 4).
PAPER_CHANNELS = (32, 64, 128, 256)

#: Prostate MR: 8 organs + background (DESIGN.md); AMOS CT: 15 organs + background.
PROSTATE_CLASSES = 9
AMOS_CLASSES = 16


@dataclass(frozen=True)
class BenchConfig:
    """One timed configuration.

    name: unique id, used by ``--only`` and as the record key.
    workload: "train" (fwd + bwd + AdamW via ``core.train.make_train_step``), "forward" (one
      ``model.apply``), "sample" (``core.infer.make_sampler``, ``sample_steps`` steps) or
      "conv" (one 3x3x3 conv layer, value and grad w.r.t. input and kernel).
    method: "unet" (supervised, no mask/time input) or "diffusion".
    recycling: diffusion step with recycling (paper 3.2).
    model: "ours" (``core.models.UNet``) or "reference" (``benchmarks.cpu.reference_unet``).
    size: spatial size (X, Y, Z); batch is always 1.
    channels, num_classes: network width per level and classes incl. background.
    conv_impl, remat, dtype: ``UNet`` fields ("auto"|"slices"|"lax3d", bool, "float32"|
      "bfloat16"); ignored by the reference, which is float32 ``nn.Conv`` by definition.
    donate: jit the training step with the state donated (``donate_argnums=0``).
    xla_flags: extra ``XLA_FLAGS`` for this subprocess only (e.g. "--xla_cpu_use_onednn=true").
    layout: "conv" workload only: "channels_last" (NDHWC) or "channels_first" (NCDHW).
    conv_channels: "conv" workload only: (in, out) channels of the layer.
    warmup, steps: untimed calls after compiling, then timed calls (median reported).
    sample_steps: K of the sampler.
    group: "contract" | "levers" | "memory" | "gpu" (GPU-only sizes).
    note: one line saying what the configuration shows.
    """

    name: str
    workload: str = "train"
    method: str = "diffusion"
    recycling: bool = False
    model: str = "ours"
    size: tuple[int, int, int] = (32, 32, 16)
    channels: tuple[int, ...] = PAPER_CHANNELS
    num_classes: int = PROSTATE_CLASSES
    conv_impl: str = "auto"
    remat: bool = False
    dtype: str = "float32"
    donate: bool = True
    xla_flags: str = ""
    layout: str = "channels_last"
    conv_channels: tuple[int, int] = (32, 32)
    warmup: int = 1
    steps: int = 5
    sample_steps: int = 5
    group: str = "contract"
    note: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        checks = {
            "workload": (self.workload, WORKLOADS),
            "model": (self.model, MODELS),
            "group": (self.group, GROUPS),
            "method": (self.method, ("unet", "diffusion")),
            "dtype": (self.dtype, ("float32", "bfloat16")),
            "conv_impl": (self.conv_impl, CONV_IMPLS),
            "layout": (self.layout, ("channels_last", "channels_first")),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"BenchConfig {self.name!r}: {key}={value!r} not in {allowed}")
        if self.steps < 1 or self.warmup < 0:
            raise ValueError(f"BenchConfig {self.name!r}: need steps >= 1 and warmup >= 0")
        if self.recycling and self.method != "diffusion":
            raise ValueError(f"BenchConfig {self.name!r}: recycling needs method='diffusion'")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BenchConfig:
        raw = json.loads(text)
        for key in ("size", "channels", "conv_channels"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


#: Ratios measured with ``benchmarks.cpu.paired`` (both configurations in ONE process, steps
#: interleaved, median of per-round ratios), run by ``benchmarks.run`` right after A has been
#: measured in its own process: summary key -> (A = denominator, B = numerator). Separate
#: processes minutes apart see different load and memory placement, so a ratio of two such
#: timings scatters from run to run far more than the interleaved rounds of one run do.
PAIRS = {
    "recycling_over_plain": ("train_diffusion_64x64x16", "train_recycling_64x64x16"),
}


def size_tag(size: tuple[int, ...]) -> str:
    """(64, 64, 16) -> "64x64x16"."""
    return "x".join(str(n) for n in size)


def _contract(size: tuple[int, int, int], *, full: bool) -> list[BenchConfig]:
    """Training steps (ours: U-Net, diffusion, recycling; reference: diffusion), forward, sampling.

    ``full=False`` keeps only what the summary keys need at this size (the 96x96x32 steps are
    slow, so the U-Net / recycling / inference there would break the time budget).
    """
    tag = size_tag(size)
    out = [
        BenchConfig(f"train_diffusion_{tag}", size=size, note="plain diffusion step (ours)"),
        BenchConfig(f"reference_train_diffusion_{tag}", size=size, model="reference",
                    note="straightforward nn.Conv U-Net, same step"),
    ]
    if full:
        out += [
            BenchConfig(f"train_recycling_{tag}", size=size, recycling=True,
                        note="diffusion step with recycling (extra stop-grad forward)"),
            BenchConfig(f"train_unet_{tag}", size=size, method="unet",
                        note="supervised U-Net step"),
            BenchConfig(f"forward_{tag}", size=size, workload="forward", steps=7,
                        note="one diffusion forward pass"),
            BenchConfig(f"sample5_{tag}", size=size, workload="sample",
                        note="5-step DDPM sampling, one jitted scan"),
        ]
    return out


def _levers(size: tuple[int, int, int]) -> list[BenchConfig]:
    """Levers on the plain diffusion step, each one change from the default."""
    tag = size_tag(size)
    return [
        BenchConfig(f"lever_lax3d_{tag}", size=size, conv_impl="lax3d", group="levers",
                    note="conv form: native 3D lax.conv instead of 2D slices"),
        BenchConfig(f"lever_bf16_{tag}", size=size, dtype="bfloat16", group="levers",
                    note="bfloat16 compute, float32 params"),
        BenchConfig(f"lever_remat_{tag}", size=size, remat=True, group="levers",
                    note="remat every residual block"),
        BenchConfig(f"lever_no_donate_{tag}", size=size, donate=False, group="levers",
                    note="state not donated"),
        BenchConfig(f"lever_onednn_{tag}", size=size, xla_flags="--xla_cpu_use_onednn=true",
                    group="levers", note="XLA:CPU oneDNN flag"),
        BenchConfig(f"lever_onednn_lax3d_{tag}", size=size, conv_impl="lax3d",
                    xla_flags="--xla_cpu_use_onednn=true", group="levers",
                    note="oneDNN flag with the native 3D conv"),
    ]


def _conv_layers(size: tuple[int, int, int]) -> list[BenchConfig]:
    """One 3x3x3 conv (fwd + both grads) per U-Net level at ``size``: the per-op profile.

    The level-l layer sees ``size / 2**l`` with ``channels[l]`` in and out; timing it alone, in
    both conv forms and layouts, shows where the step's time goes and what rate convs reach.
    """
    out = []
    for level, ch in enumerate(PAPER_CHANNELS):
        lsize = tuple(n // 2**level for n in size)
        tag = f"L{level}_{size_tag(lsize)}x{ch}"
        for impl in ("slices", "lax3d"):
            out.append(BenchConfig(
                f"conv_{impl}_{tag}", workload="conv", size=lsize, conv_impl=impl,
                conv_channels=(ch, ch), group="levers", steps=5,
                note=f"level {level} 3x3x3 conv, fwd+bwd, {impl}",
            ))
    lsize = size
    out.append(BenchConfig(
        f"conv_lax3d_channels_first_L0_{size_tag(lsize)}x32", workload="conv", size=lsize,
        conv_impl="lax3d", layout="channels_first", conv_channels=(32, 32), group="levers",
        note="level 0 conv, NCDHW layout",
    ))
    return out


def plan(quick: bool = False, gpu: bool = False) -> list[BenchConfig]:
    """All configurations in run order. ``quick``: only 32x32x16 (a smoke run of the harness).

    CPU: 64x64x16 (all workloads), 96x96x32 (ours + reference diffusion step), the single
    remat step at 256x256x48 for peak RSS, 32x32x16 (all workloads), then (group "levers")
    the levers at 64x64x16 and the conv-layer profile at 96x96x32. GPU adds 256x256x48 and
    192x128x128 (AMOS, 16 classes) steps.
    """
    small = (32, 32, 16)
    if quick:
        return _contract(small, full=True) + _levers(small)[:2]
    # Summary-key configurations first (64x64x16, 96x96x32, the 256x256x48 memory step), the
    # 32x32x16 set last: if a slow machine runs out of budget it loses the smallest size. The
    # recycling / U-Net steps at 64x64x16 in their own processes come after the memory step:
    # the contract's recycling ratio is the interleaved pair (PAIRS), run after the plain step.
    first64 = _contract((64, 64, 16), full=True)
    later = {"train_recycling_64x64x16", "train_unet_64x64x16"}
    configs = [c for c in first64 if c.name not in later] + _contract((96, 96, 32), full=gpu)
    if gpu:
        for size, classes in (((256, 256, 48), PROSTATE_CLASSES), ((192, 128, 128), AMOS_CLASSES)):
            tag = size_tag(size)
            configs += [
                BenchConfig(f"train_diffusion_{tag}", size=size, num_classes=classes, group="gpu"),
                BenchConfig(f"train_recycling_{tag}", size=size, num_classes=classes,
                            recycling=True, group="gpu"),
                BenchConfig(f"train_diffusion_bf16_{tag}", size=size, num_classes=classes,
                            dtype="bfloat16", group="gpu"),
                BenchConfig(f"sample5_{tag}", size=size, num_classes=classes,
                            workload="sample", group="gpu"),
            ]
    else:
        # bfloat16 compute (float32 parameters and optimiser): the mixed precision a user
        # training at paper size picks; on XLA:CPU it halves the saved activations (its convs
        # and dots still run in float32). The float32 variant is in the "levers" group.
        configs.append(BenchConfig(
            "memory_remat_256x256x48", size=(256, 256, 48), remat=True, dtype="bfloat16",
            warmup=0, steps=1, group="memory",
            note="one remat diffusion step at paper size, bf16 compute: peak host RSS",
        ))
    configs += [c for c in first64 if c.name in later]
    configs += _contract(small, full=True)
    configs += _levers((64, 64, 16))
    configs += _conv_layers((96, 96, 32))
    if not gpu:
        configs.append(BenchConfig(
            "lever_memory_remat_f32_256x256x48", size=(256, 256, 48), remat=True, warmup=0,
            steps=1, group="levers", note="the paper-size remat step in float32: peak host RSS",
        ))
    return configs
