"""Parts of the GPU benchmark -> configurations, in the order they run.

A *part* is what a user names with ``--only`` (``forward``, ``paper_step``, ...); it expands to
one or more `GpuConfig`, each measured in its own process with its own time limit. The order
of `PARTS` is the priority under the time budget: the figures of #10's targets come first, the
diagnostics (HLO dump, conv layers) and the test run last, so a lease cut short loses those.

Sizes: the paper's prostate MR volume 256x256x48 (9 classes) and AMOS CT 192x128x128 (16
classes), the paper U-Net (channels 32/64/128/256, 2 residual blocks). ``small`` shrinks every
size, batch and the network (2 levels, 1 residual block) so the whole plan runs on a CPU in
minutes; its figures are a rehearsal of the harness, never speed figures.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

#: Parts in run order (the priority under the budget).
PARTS = (
    "forward", "step_b1", "paper_step", "monai_plain", "recycling", "monai_recycling",
    "amos_step", "monai_amos", "hlo", "sampling", "test_gpu", "conv_layers",
)

#: What each configuration does in its process (`child.py` runs the first six; the parent runs
#: ``conv_layers`` and ``pytest`` as commands).
KINDS = ("forward", "step", "profile_step", "sample", "hlo", "monai", "conv_layers", "pytest")

PROSTATE = ((256, 256, 48), 9)
AMOS = ((192, 128, 128), 16)
PAPER_CHANNELS = (32, 64, 128, 256)
#: Voxel spacing in mm of the prepared data (paper profile comment); the augmentation's
#: rotations are rigid in mm, so the profile's step needs it.
SPACING = {PROSTATE[0]: (0.75, 0.75, 2.5), AMOS[0]: (1.5, 1.5, 5.0)}

SMALL_PROSTATE = ((16, 16, 8), 3)
SMALL_AMOS = ((8, 16, 16), 4)
SMALL_CHANNELS = (8, 16)
SMALL_BATCH = 2

#: Time limit per configuration in seconds (full size, one H200). The 2026-11-28 baseline: a
#: batch-1 step took init 28 s + compile 48 s; batch 8 compiled for 134 s. A limit is cut to the
#: budget left when that is shorter.
TIMEOUTS = {
    "forward": 120, "step": 180, "profile_step": 240, "sample": 120, "hlo": 150, "monai": 120,
    "conv_layers": 150, "pytest": 240,
}
SMALL_TIMEOUT_S = 90


@dataclass(frozen=True)
class GpuConfig:
    """One measured configuration.

    name: unique id (record key); part: the `PARTS` entry it belongs to; kind: one of `KINDS`.
    size: spatial (X, Y, Z); num_classes incl. background; batch: volumes per step.
    channels, num_res_blocks: the U-Net; remat, recycling: step levers (``step``/``monai``).
    accum: gradient-accumulation microbatches forced on the profile step; 0 = as the profile
      sets it (its own ``train.grad_accum_steps``).
    timeout_s: this configuration's time limit; small: the CPU rehearsal sizes.
    warmup, steps: untimed then timed calls (median reported).
    """

    name: str
    part: str
    kind: str
    size: tuple[int, int, int] = PROSTATE[0]
    num_classes: int = PROSTATE[1]
    batch: int = 1
    channels: tuple[int, ...] = PAPER_CHANNELS
    num_res_blocks: int = 2
    remat: bool = False
    recycling: bool = False
    accum: int = 0
    timeout_s: float = 120.0
    small: bool = False
    warmup: int = 2
    steps: int = 5
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.part not in PARTS:
            raise ValueError(f"GpuConfig {self.name!r}: part {self.part!r} not in {PARTS}")
        if self.kind not in KINDS:
            raise ValueError(f"GpuConfig {self.name!r}: kind {self.kind!r} not in {KINDS}")
        if self.batch < 1 or self.accum < 0 or (self.accum and self.batch % self.accum):
            raise ValueError(f"GpuConfig {self.name!r}: batch {self.batch} must be a positive "
                             f"multiple of accum {self.accum} (0: the profile's)")

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing (mm) of the data set this size stands for (prostate when small)."""
        return SPACING.get(self.size, SPACING[AMOS[0]] if self.num_classes == AMOS[1]
                           else SPACING[PROSTATE[0]])

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> GpuConfig:
        raw = json.loads(text)
        raw["size"], raw["channels"] = tuple(raw["size"]), tuple(raw["channels"])
        return cls(**raw)


def size_tag(size: tuple[int, ...]) -> str:
    """(256, 256, 48) -> "256x256x48"."""
    return "x".join(str(n) for n in size)


def _part_configs(part: str, *, small: bool, accum: tuple[int, ...],
                  monai_batch: int) -> list[GpuConfig]:
    """The configurations of one part at full or small size (time limits not yet applied)."""
    (p_size, p_cls), (a_size, a_cls) = (SMALL_PROSTATE, SMALL_AMOS) if small else (PROSTATE, AMOS)
    net = {"channels": SMALL_CHANNELS, "num_res_blocks": 1, "small": True} if small else {}
    paper_batch = SMALL_BATCH if small else 8
    mb = monai_batch
    prostate = {"size": p_size, "num_classes": p_cls, **net}
    amos = {"size": a_size, "num_classes": a_cls, **net}
    tag, atag = "256x256x48", "192x128x128"  # the #10 names, also for the small rehearsal

    def profile_steps(name: str, sizes: dict) -> list[GpuConfig]:
        # The profile as it is, then the forced accumulation variants whose microbatches
        # split the batch evenly (the small batch of 2 drops e.g. 4).
        return [GpuConfig(name if n == 0 else f"{name}_accum{n}", part, "profile_step",
                          batch=paper_batch, accum=n, **sizes)
                for n in (0, *accum) if n == 0 or paper_batch % n == 0]

    def monai(size_tag_: str, sizes: dict, recycling: bool) -> list[GpuConfig]:
        # The MONAI peer, plus ours' plain step at the same batch and size where that is not
        # the step_b1 configuration measured anyway.
        kind = "recycling" if recycling else "plain"
        out = [GpuConfig(f"monai_{kind}_{size_tag_}_b{mb}", part, "monai", batch=mb,
                         recycling=recycling, **sizes)]
        if not recycling and (mb != 1 or size_tag_ != tag):
            out.append(ours(size_tag_, sizes, False))
        return out

    def ours(size_tag_: str, sizes: dict, recycling: bool) -> GpuConfig:
        kind = "recycling" if recycling else "plain"
        return GpuConfig(f"ours_{kind}_{size_tag_}_b{mb}", part, "step", batch=mb,
                         recycling=recycling, **sizes)

    table = {
        "forward": lambda: [GpuConfig(f"forward_{tag}_b1", part, "forward", steps=7,
                                      **prostate)],
        "step_b1": lambda: [GpuConfig(f"step_{tag}_b1", part, "step", **prostate)],
        "paper_step": lambda: profile_steps("paper_step", prostate),
        "monai_plain": lambda: monai(tag, prostate, False),
        "recycling": lambda: [ours(tag, prostate, True)],
        "monai_recycling": lambda: monai(tag, prostate, True),
        "amos_step": lambda: profile_steps("amos_step", amos),
        "monai_amos": lambda: monai(atag, amos, False),
        "hlo": lambda: [GpuConfig(f"hlo_step_{tag}_b1", part, "hlo", **prostate)],
        "sampling": lambda: [GpuConfig(f"sample5_{tag}_b1", part, "sample", steps=4,
                                       **prostate)],
        "test_gpu": lambda: [GpuConfig("test_gpu", part, "pytest", small=small)],
        "conv_layers": lambda: [GpuConfig("conv_layers", part, "conv_layers", small=small)],
    }
    return table[part]()


def _with_timeout(cfg: GpuConfig, overrides: dict[str, float]) -> GpuConfig:
    """``cfg`` with its time limit (an override by config or part name, else the kind's) and,
    small, the fewest calls that still time a step after a warm one."""
    default = SMALL_TIMEOUT_S if cfg.small else TIMEOUTS[cfg.kind]
    limit = float(overrides.get(cfg.name, overrides.get(cfg.part, default)))
    calls = {"warmup": 1, "steps": 2} if cfg.small else {}
    return dataclasses.replace(cfg, timeout_s=limit, **calls)


def plan(parts: tuple[str, ...] = PARTS, *, small: bool = False, accum: tuple[int, ...] = (),
         monai_batch: int = 1, timeouts: dict[str, float] | None = None) -> list[GpuConfig]:
    """All configurations of ``parts`` in `PARTS` order, each with its time limit.

    ``accum``: gradient-accumulation microbatch counts forced on extra variants of the profile
    steps (``paper_step_accum2``...); the profile as it is always runs first;
    ``monai_batch``: the batch of the side-by-side comparison (1 or 2: one that fits both);
    ``timeouts``: seconds by config or part name, over `TIMEOUTS`.
    """
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; known: {list(PARTS)}")
    return [_with_timeout(cfg, timeouts or {})
            for part in PARTS if part in parts
            for cfg in _part_configs(part, small=small, accum=accum, monai_batch=monai_batch)]
