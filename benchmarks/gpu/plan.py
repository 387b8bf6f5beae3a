"""Parts of the GPU benchmark -> configurations, in the order they run, and the run's estimate.

A *part* is what a user names with ``--only`` (``step_b1``, ``paper_step``, ...); it expands to
one or more `GpuConfig`, each measured in its own process with its own time limit. The order
of `PARTS` is the priority under the time budget, ordered by what each part decides:

1. ``step_b1``: the batch-1 train step at 256x256x48 in the accelerator form ``lax3d_s2d`` (its
   process also times one forward pass: step / forward), then in ``lax3d``: their ratio says
   whether the form ``auto`` picks fixes the slow step;
2. ``hlo``: the HLO summary of both steps (from the optimized HLO their processes wrote): does
   ``lax3d`` hold the flagged conv, and ``lax3d_s2d`` none;
3. ``conv_updown``: ``conv_layers`` for the down/up rows of the top three levels, both forms;
4. ``paper_step``: the ``paper`` profile's accumulated batch-8 step (the training speed);
5. ``monai_paper``: MONAI's ``DiffusionModelUNet`` at the same batch and accumulation;
6. the rest, while time remains: the batch-1 MONAI side by side, recycling, sampling, the AMOS
   size, every conv layer, the core tests on the GPU.

Sizes: the paper's prostate MR volume 256x256x48 (9 classes) and AMOS CT 192x128x128 (16
classes), the paper U-Net (channels 32/64/128/256, 2 residual blocks). ``small`` shrinks every
size, batch and the network (2 levels, 1 residual block) so the whole plan runs on a CPU in
minutes; its figures are a rehearsal of the harness, never speed figures.

`estimate` gives each configuration's expected seconds on one H100/H200 (`ESTIMATE_S`, from
the 2026-11-28 H200 measurements of the ``lax3d`` step: init 18-28 s, compile 13-48 s, 0.88 s a
step) and which fit the budget; ``python -m benchmarks.gpu_bench --list`` prints it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from diffseg3d.core.models.conv import resolve_conv_impl

#: Parts in run order (the priority under the budget; see the module docstring).
PARTS = (
    "step_b1", "hlo", "conv_updown", "paper_step", "monai_paper",
    "monai_plain", "recycling", "monai_recycling", "sampling", "amos_step", "monai_amos",
    "conv_layers", "test_gpu",
)
#: The two forms the batch-1 step is measured in: the accelerator pick first, then the old one.
GPU_FORM = resolve_conv_impl("auto", "gpu")
STEP_FORMS = (GPU_FORM, "lax3d")
#: Rows of ``conv_updown``: the down/up convs of the top three U-Net levels.
UPDOWN = {"kinds": ["down", "up"], "levels": [0, 1, 2]}
#: Gradient-accumulation microbatches of the ``paper`` profile (``train.grad_accum_steps``; a
#: test checks it against the profile), used for MONAI's step at the same batch: 1, the batch
#: of 8 in one pass (the profile's memory plan, ``make gpu-plan``).
PAPER_ACCUM = 1

#: What each configuration does in its process (`child.py` runs the first five; the parent runs
#: ``conv_layers`` and ``pytest`` as commands, and summarises ``hlo`` texts a step wrote).
KINDS = ("step", "profile_step", "sample", "hlo", "monai", "conv_layers", "pytest")

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

#: Time limit per configuration in seconds (full size, one GPU); cut to the budget left when
#: that is shorter.
TIMEOUTS = {
    "step": 100, "profile_step": 150, "sample": 60, "hlo": 90, "monai": 90,
    "conv_layers": 150, "pytest": 240,
}
SMALL_TIMEOUT_S = 120
#: The GPU run's wall-clock budget (6 minutes) and the CPU rehearsal's.
BUDGET_S = 360.0
SMALL_BUDGET_S = 780.0
#: Expected seconds per configuration kind on one H100/H200, process start (python, jax, CUDA;
#: about 10 s) included: a step = start + init (~15 s) + compile (~30 s) + 4 calls; the
#: profile's accumulated batch-8 step compiles longer and runs 8 microbatches a call. ``hlo``
#: reads the text the step wrote (60 s if it must compile it itself). By name where a kind's
#: configurations differ (``conv_updown`` measures 12 layers, ``conv_layers`` all of them); a
#: configuration's ``extra["estimate_s"]`` first (the step that also times a forward pass).
ESTIMATE_S = {
    "step": 60, "profile_step": 100, "sample": 45, "hlo": 2, "monai": 45,
    "conv_layers": 150, "pytest": 240, "conv_updown": 60, "monai_paper": 60,
}


@dataclass(frozen=True)
class GpuConfig:
    """One measured configuration.

    name: unique id (record key); part: the `PARTS` entry it belongs to; kind: one of `KINDS`.
    size: spatial (X, Y, Z); num_classes incl. background; batch: volumes per step.
    channels, num_res_blocks: the U-Net; remat, recycling: step levers (``step``/``monai``).
    conv_impl: our U-Net's conv form (``core/models/conv.py``); the profile step uses the
      profile's own (``auto``).
    accum: gradient-accumulation microbatches: forced on the profile step (0 = as the profile
      sets it, its own ``train.grad_accum_steps``); MONAI's step accumulates as many (0: none).
    timeout_s: this configuration's time limit; small: the CPU rehearsal sizes.
    warmup, steps: untimed then timed calls (median reported).
    extra: kind-specific options (``conv_layers``: ``kinds``, ``levels``; ``hlo``: ``step``,
      the step configuration whose optimized HLO it summarises).
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
    conv_impl: str = "auto"
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
    tag, atag = "256x256x48", "192x128x128"  # the full-size names, also for the rehearsal
    quick = {"warmup": 1, "steps": 3}  # the step_b1 pair: the answer in the first minutes

    def step_name(form: str) -> str:
        return f"step_{tag}_b1_{form}"

    def profile_steps(name: str, sizes: dict) -> list[GpuConfig]:
        # The profile as it is, then the forced accumulation variants whose microbatches
        # split the batch evenly (the small batch of 2 drops e.g. 4).
        return [GpuConfig(name if n == 0 else f"{name}_accum{n}", part, "profile_step",
                          batch=paper_batch, accum=n, warmup=1, steps=3, **sizes)
                for n in (0, *accum) if n == 0 or paper_batch % n == 0]

    def ours(size_tag_: str, sizes: dict, recycling: bool) -> GpuConfig:
        kind = "recycling" if recycling else "plain"
        return GpuConfig(f"ours_{kind}_{size_tag_}_b{mb}", part, "step", batch=mb,
                         recycling=recycling, conv_impl=GPU_FORM, **sizes)

    def monai(size_tag_: str, sizes: dict, recycling: bool) -> list[GpuConfig]:
        # The MONAI peer, plus ours' plain step at the same batch and size where that is not
        # a step_b1 configuration measured anyway.
        kind = "recycling" if recycling else "plain"
        out = [GpuConfig(f"monai_{kind}_{size_tag_}_b{mb}", part, "monai", batch=mb,
                         recycling=recycling, **sizes)]
        if not recycling and (mb != 1 or size_tag_ != tag):
            out.append(ours(size_tag_, sizes, False))
        return out

    table = {
        # The accelerator form's process also times one forward pass (+ compile, ~15 s).
        "step_b1": lambda: [GpuConfig(step_name(f), part, "step", conv_impl=f, **quick,
                                      extra={"forward": True, "estimate_s": 75}
                                      if f == GPU_FORM else {}, **prostate)
                            for f in STEP_FORMS],
        "hlo": lambda: [GpuConfig(f"hlo_{step_name(f)}", part, "hlo", conv_impl=f,
                                  extra={"step": step_name(f)}, **prostate)
                        for f in STEP_FORMS],
        "conv_updown": lambda: [GpuConfig("conv_updown", part, "conv_layers", small=small,
                                          extra=dict(UPDOWN))],
        "paper_step": lambda: profile_steps("paper_step", prostate),
        "monai_paper": lambda: [GpuConfig(
            f"monai_paper_{tag}_b{paper_batch}", part, "monai", batch=paper_batch,
            accum=math.gcd(PAPER_ACCUM, paper_batch), warmup=1, steps=3, **prostate)],
        "monai_plain": lambda: monai(tag, prostate, False),
        "recycling": lambda: [ours(tag, prostate, True)],
        "monai_recycling": lambda: monai(tag, prostate, True),
        "sampling": lambda: [GpuConfig(f"sample5_{tag}_b1", part, "sample", steps=4,
                                       conv_impl=GPU_FORM, **prostate)],
        "amos_step": lambda: profile_steps("amos_step", amos),
        "monai_amos": lambda: monai(atag, amos, False),
        "conv_layers": lambda: [GpuConfig("conv_layers", part, "conv_layers", small=small)],
        "test_gpu": lambda: [GpuConfig("test_gpu", part, "pytest", small=small)],
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


def estimate_s(cfg: GpuConfig) -> float:
    """Expected seconds of ``cfg`` on one GPU (`ESTIMATE_S`), never above its time limit."""
    guess = cfg.extra.get("estimate_s", ESTIMATE_S.get(cfg.part, ESTIMATE_S[cfg.kind]))
    return float(min(guess, cfg.timeout_s))


def estimate(configs: list[GpuConfig], budget_s: float = BUDGET_S,
             min_start_s: float = 20.0) -> dict:
    """The GPU run of ``configs`` as expected: ``{"rows": [(name, part, seconds, cumulative,
    fits)], "total_s": seconds of those that fit, "skipped": [names expected past the
    budget]}``. A configuration fits when it can start with ``min_start_s`` left, as the runner
    decides; it then takes at most the budget left."""
    rows, t = [], 0.0
    for cfg in configs:
        fits = budget_s - t >= min_start_s
        took = min(estimate_s(cfg), budget_s - t) if fits else 0.0
        t += took
        rows.append((cfg.name, cfg.part, took, t, fits))
    return {"rows": rows, "total_s": t, "budget_s": budget_s,
            "skipped": [r[0] for r in rows if not r[4]]}


def format_estimate(est: dict) -> str:
    """The estimate as a table with the total, for ``--list`` and the start of a run."""
    lines = [f"{'configuration':<36} {'part':<16} {'est. s':>7} {'cum. s':>7}"]
    for name, part, took, cum, fits in est["rows"]:
        lines.append(f"{name:<36} {part:<16} {took:7.0f} {cum:7.0f}"
                     + ("" if fits else "  (expected past the budget: skipped)"))
    lines.append(f"estimated GPU run: {est['total_s']:.0f} s of the {est['budget_s']:.0f} s "
                 f"budget ({est['total_s'] / 60:.1f} min); expected skipped: "
                 f"{len(est['skipped'])}")
    return "\n".join(lines)
