"""The GPU plan of the paper grid, compiled on a machine without a GPU: per card, data set,
network, trial and program, the planned device memory, the conv verdict, FLOPs and bytes, the
roofline bound and the compile time.

Everything here is a compile-time plan and a bound, never a measurement: the buffer plan is
what XLA allocates for the program (the device's real peak adds the allocator's rounding and
fragmentation, and cuDNN workspaces chosen by autotuning, which a deviceless compile cannot
run), and the bound is what the card's peaks allow (`core/cost/roofline.py`).

The rows (`plan_rows`): for every trial of ``experiments/grids/paper.yaml`` under the ``paper``
profile, on prostate MR (256x256x48, 9 classes) and AMOS CT (192x128x128, 16 classes), with the
profile's network (``imgx_v010``): the train step as configured; for the default diffusion
model and the U-Net also the other train-step forms (`TRAIN_FORMS`: batch 8 in one pass with
and without remat, and 8 accumulated microbatches of one volume); the validation pass and the
one-case sampler (`programs.PROGRAMS`). With the ``diffseg3d`` network the same for the
default diffusion model and the U-Net. Trials that compile to the same programs (the 1000-step
model's train step differs from the 5-step one's only in constants) are compiled anyway: a
row is a fact about its own config.

The TPU rows (`tpu_rows`, the `tpu.TOPOLOGIES`: 4 chips of v5e, v4 and v3, compiled by libtpu
without a TPU): the ``paper_tpu`` profile's data-parallel programs over the slice's mesh
(`core/train/sharding.make_mesh`, as `trial.run_trial` places them: state replicated, batch
split), for its default diffusion model and U-Net on both data sets: the train step as
configured (batch 8 as 2 microbatches of 4, remat), the validation pass and the one-case
sampler. Their memory, FLOPs, bytes and bound are per device (the per-device SPMD program XLA
compiles); ``fits`` compares with one device's HBM. Also compile-time plans, not measurements.

One process per (card, network) part (`run_part`), two at a time (`main`), so a compile that
exhausts memory costs one part; `python -m diffseg3d.experiments.gpu_plan.plan --help`.
``--merge`` keeps the existing JSON's records that this run does not compile anew; every record
carries the ``date`` it was planned on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from diffseg3d.core.data.sources import amos, prostate
from diffseg3d.experiments.gpu_plan import tpu
from diffseg3d.experiments.gpu_plan.targets import CARDS, DEVICELESS_ENV

#: Data sets of the paper grid: prepared spatial shape, classes (background included), mm.
DATA_SETS = {
    "prostate-mr": (prostate.SHAPE, len(prostate.CLASS_NAMES) + 1, prostate.SPACING),
    "amos-ct": (amos.SHAPE, 16, amos.SPACING),
}
#: Networks planned: the paper profile's and the project's own.
ARCHITECTURES = ("imgx_v010", "diffseg3d")
#: Train-step forms beside the configured one: (name, train.grad_accum_steps, model.remat),
#: for a batch of `data.batch_size` (8) volumes.
TRAIN_FORMS = (("batch 8, one pass, remat", 1, True), ("batch 8, one pass, no remat", 1, False),
               ("8 microbatches of 1, remat", 8, True))
#: The share of a card's memory a plan may use and still be said to fit.
FIT_MARGIN = 0.10
#: What one paper trial trains (train.steps) and how many trials the paper grid has per seed.
GRID = "experiments/grids/paper.yaml"
PROFILE = "paper"
#: The profile of the TPU rows, and its network (the only one planned on TPUs).
TPU_PROFILE = "paper_tpu"
TPU_ARCHITECTURE = "imgx_v010"
DEFAULT_OUT = Path("benchmarks/results/gpu_plan.json")


@dataclass(frozen=True)
class Row:
    """One program to compile: which trial, data set, network, form and program."""

    trial: str
    data_set: str
    architecture: str
    form: str
    program: str
    grad_accum_steps: int
    remat: bool
    config: Any  # experiments.config.schema.Config


def _variant(config, *, architecture: str | None = None, grad_accum_steps: int | None = None,
             remat: bool | None = None):
    """``config`` with another network, accumulation or remat, validated again."""
    from diffseg3d.experiments.config.layering import deep_merge
    from diffseg3d.experiments.config.schema import Config

    override: dict[str, dict] = {"model": {}, "train": {}}
    if architecture is not None:
        override["model"]["architecture"] = architecture
    if remat is not None:
        override["model"]["remat"] = remat
    if grad_accum_steps is not None:
        override["train"]["grad_accum_steps"] = grad_accum_steps
    return Config.model_validate(deep_merge(config.model_dump(mode="json"), override))


def _data_set(config) -> str:
    name = Path(config.data.root).name
    if name not in DATA_SETS:
        raise ValueError(f"{config.name}: data root {config.data.root} is none of {DATA_SETS}")
    return name


def _is_main(trial_config) -> bool:
    """The default diffusion model (recycling, x0, Dice, K = 5) or the U-Net."""
    c = trial_config
    if c.method == "unet":
        return True
    d = c.diffusion
    return d.recycling and d.output == "x0" and c.loss.dice and d.train_steps == 5


def plan_rows(architecture: str, grid: str = GRID, profile: str = PROFILE) -> Iterator[Row]:
    """The rows of one network (see the module docstring), in a deterministic order."""
    from diffseg3d.experiments.grid import expand

    for trial in expand(grid, profile):
        main = _is_main(trial.config)
        if architecture != "imgx_v010" and not main:
            continue
        base = _variant(trial.config, architecture=architecture)
        ds = _data_set(base)
        t, m = base.train, base.model
        forms = [("as configured", t.grad_accum_steps, m.remat)]
        if main:
            forms += [f for f in TRAIN_FORMS if (f[1], f[2]) != (t.grad_accum_steps, m.remat)]
        for form, accum, remat in forms:
            cfg = _variant(base, grad_accum_steps=accum, remat=remat)
            yield Row(trial.name, ds, architecture, form, "train_step", accum, remat, cfg)
        if main or base.diffusion.output != "x0":  # the noise model samples differently
            for program in ("validation", "sample"):
                yield Row(trial.name, ds, architecture, "as configured", program,
                          t.grad_accum_steps, m.remat, base)


def tpu_rows(grid: str = GRID, profile: str = TPU_PROFILE) -> Iterator[Row]:
    """The TPU rows (see the module docstring): per data set, the default diffusion model's and
    the U-Net's configured train step, validation pass and one-case sampler, as the profile
    configures them (its network, its accumulation and remat)."""
    from diffseg3d.experiments.grid import expand

    for trial in expand(grid, profile):
        if not _is_main(trial.config):
            continue
        c = trial.config
        for program in ("train_step", "validation", "sample"):
            yield Row(trial.name, _data_set(c), c.model.architecture, "as configured", program,
                      c.train.grad_accum_steps, c.model.remat, c)


def is_tpu(key: str) -> bool:
    """Whether a `--cards` name is a TPU topology (`tpu.TOPOLOGIES`), not a GPU card."""
    return key in tpu.TOPOLOGIES


# ---------------------------------------------------------------------------------------------
# One compile


def memory_plan(stats: Any) -> dict[str, float]:
    """Planned device bytes of a compiled program: temp + arguments + outputs - aliased (a
    donated argument that is also an output is counted once)."""
    parts = {k: float(getattr(stats, f"{k}_size_in_bytes")) for k in
             ("temp", "argument", "output", "alias")}
    return {**{f"{k}_bytes": v for k, v in parts.items()},
            "planned_bytes": parts["temp"] + parts["argument"] + parts["output"]
            - parts["alias"]}


def compile_row(row: Row, card_key: str, device: Any) -> dict[str, Any]:
    """Compile one row's program for ``card_key`` and record its plan (or its error);
    ``device``: the card's device, or for a TPU topology its mesh (`tpu.mesh`)."""
    from diffseg3d.core.cost.flops import hlo_flops
    from diffseg3d.core.cost.hlo_convs import summarise_text, verdict
    from diffseg3d.core.cost.roofline import roofline_seconds
    from diffseg3d.experiments.gpu_plan import programs, targets

    on_tpu = is_tpu(card_key)
    card = tpu.topology(card_key) if on_tpu else targets.card(card_key)
    place = ({"mesh": device, "backend": "tpu"} if on_tpu else {"device": device})
    options = {} if on_tpu else targets.COMPILER_OPTIONS
    shape, classes, spacing = DATA_SETS[row.data_set]
    config = row.config
    if on_tpu and config.eval_batch_size % device.devices.size:
        # More devices than the profile's evaluation batch splits over (v3: a device per
        # TensorCore): one volume per device, as the profile's header tells such a host to set.
        config = config.model_copy(update={"eval": config.eval.model_copy(
            update={"batch_size": int(device.devices.size)})})
    rec: dict[str, Any] = {
        "card": card_key, "card_name": card.name, "trial": row.trial, "data_set": row.data_set,
        "architecture": row.architecture, "form": row.form, "program": row.program,
        "batch_size": row.config.data.batch_size, "grad_accum_steps": row.grad_accum_steps,
        "eval_batch_size": config.eval_batch_size,
        "remat": row.remat, "shape": list(shape), "classes": classes,
        "conv_impl": row.config.model.conv_impl,
        "compute_dtype": row.config.model.compute_dtype}
    if on_tpu:
        rec.update(target="tpu", profile=TPU_PROFILE, topology=card.topology_name,
                   chips=card.chips, mesh_devices=int(device.devices.size),
                   per="device", hardware_source=card.source)
    start = time.perf_counter()
    try:
        program = programs.trial_programs(config, num_classes=classes, shape=shape,
                                          spacing=spacing, names=(row.program,),
                                          **place)[row.program]
        compiled = program.lower().compile(compiler_options=options)
    except Exception as err:  # noqa: BLE001 - one row's failure is that row's record
        rec.update(status="error", error=f"{type(err).__name__}: {str(err)[:400]}",
                   compile_s=time.perf_counter() - start)
        return rec
    rec["compile_s"] = time.perf_counter() - start
    text = compiled.as_text()
    mem = memory_plan(compiled.memory_analysis())
    cost = hlo_flops(text)
    summary = summarise_text(text)
    bound = roofline_seconds(cost["flops"], cost["bytes"], card.bf16_peak, card.bandwidth)
    rec.update(status="ok", **mem, memory_bytes=card.memory_bytes,
               planned_fraction=mem["planned_bytes"] / card.memory_bytes,
               fits=mem["planned_bytes"] <= (1 - FIT_MARGIN) * card.memory_bytes,
               flops=cost["flops"], conv_flops=cost["conv_flops"], dot_flops=cost["dot_flops"],
               bytes=cost["bytes"], **bound, convolutions=summary["convolutions"]["total"],
               flagged=summary["flagged"], padded_inputs=summary["padded_inputs"],
               healthy=verdict(summary)["healthy"])
    if on_tpu:  # no cuDNN here: the backend-independent check joins the verdict
        rec.update(_tpu_checks(program, compiled, text, summary, device))
        rec["healthy"] = rec["healthy"] and not summary["dilated_volume"]
    if row.program == "train_step":
        steps = row.config.train.steps
        rec["train_steps"] = steps
        rec["trial_bound_h"] = bound["bound_s"] * steps / 3600
    return rec


def _tpu_checks(program: Any, compiled: Any, text: str, summary: dict, mesh: Any) -> dict:
    """What a TPU row adds: the per-device bytes of the replicated state (parameters and
    optimiser state) and of the split training or evaluation batch against their whole sizes,
    the mesh's devices, the gradient all-reduces of the data-parallel step, XLA:TPU's own FLOP
    count, and the backend-independent conv check (`hlo_convs`: ``dilated_volume``)."""
    import collections
    import re

    import jax
    import numpy as np

    def nbytes(tree: Any) -> int:
        return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                       for x in jax.tree.leaves(tree)))

    def per_device(tree: Any) -> int:
        return int(sum(np.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
                       for x in jax.tree.leaves(tree)))

    first = program.args[0]
    params = getattr(first, "params", first)
    out = {"mesh_device_kinds": sorted({d.device_kind for d in mesh.devices.flat}),
           "param_bytes": nbytes(params), "param_bytes_per_device": per_device(params),
           "collectives": dict(sorted(collections.Counter(re.findall(
               r"\b(all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)"
               r"(?:-start)?\(", text)).items())),
           "dilated_volume": summary["dilated_volume"]}
    if program.name == "train_step":
        out.update(state_bytes=nbytes(first), state_bytes_per_device=per_device(first))
    if program.name in ("train_step", "validation"):  # the training or evaluation batch
        out.update(batch_bytes=nbytes(program.args[1]),
                   batch_bytes_per_device=per_device(program.args[1]))
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        out["xla_flops"] = float(cost["flops"])
    except Exception:  # noqa: BLE001 - the figure is optional
        out["xla_flops"] = None
    return out


def run_part(card_key: str, architecture: str, out: Path, only: str = "",
             program_names: Sequence[str] | None = None) -> list[dict]:
    """Compile every row of ``architecture`` for one card or TPU topology in this process
    (which must have `DEVICELESS_ENV`, `tpu.DEVICELESS_ENV` for a TPU); ``only``: rows whose
    trial name contains it; ``program_names``: rows of these programs only (None: all).
    Writes ``out`` (JSON)."""
    from diffseg3d.experiments.gpu_plan import targets

    device = tpu.mesh(card_key) if is_tpu(card_key) else targets.device(card_key)
    rows = tpu_rows() if is_tpu(card_key) else plan_rows(architecture)
    records = []
    for row in rows:
        if (only and only not in row.trial) or (program_names is not None
                                                 and row.program not in program_names):
            continue
        rec = compile_row(row, card_key, device)
        records.append(rec)
        print(format_record(rec), flush=True)
        out.write_text(json.dumps(records, indent=1) + "\n")
    return records


def format_record(rec: dict) -> str:
    """One terminal line per record."""
    head = (f"{rec['card']:<11} {rec['architecture']:<9} {rec['trial']:<45} "
            f"{rec['program']:<10} {rec['form']:<28}")
    if rec["status"] != "ok":
        return f"{head} ERROR {rec['error'][:120]}"
    per = " per device" if rec.get("target") == "tpu" else ""
    return (f"{head} {rec['planned_bytes'] / 2**30:6.1f} GiB{per} "
            f"{'fits' if rec['fits'] else 'DOES NOT FIT'} "
            f"{'healthy' if rec['healthy'] else 'FLAGGED'} {rec['flops'] / 1e12:7.2f} TFLOP "
            f"{rec['bytes'] / 1e9:7.1f} GB bound {rec['bound_s'] * 1e3:7.1f} ms "
            f"({rec['limit']}) compile {rec['compile_s']:.0f} s")


# ---------------------------------------------------------------------------------------------
# The driver: parts in subprocesses, merged into one JSON


def subprocess_env(plugin_site: str | None, tpu_site: str | None = None) -> dict[str, str]:
    """This process's environment with `DEVICELESS_ENV`, and ``plugin_site`` (the folder the
    CUDA plugin is installed in) on PYTHONPATH; with ``tpu_site`` (libtpu's folder) instead,
    `tpu.DEVICELESS_ENV` and that folder."""
    env = {**os.environ, **(tpu.DEVICELESS_ENV if tpu_site else DEVICELESS_ENV)}
    plugin_site = tpu_site or plugin_site
    if plugin_site:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (plugin_site, env.get("PYTHONPATH"))
                                            if p)
    return env


def _run_subprocess(card_key: str, architecture: str, part_dir: Path, plugin_site: str | None,
                    only: str, tpu_site: str | None = None,
                    program_names: Sequence[str] | None = None) -> list[dict]:
    out = part_dir / f"{card_key}_{architecture}.json"
    cmd = [sys.executable, "-m", "diffseg3d.experiments.gpu_plan.plan", "--part",
           card_key, architecture, "--json", str(out)] + (["--only", only] if only else []) + (
        ["--programs", *program_names] if program_names else [])
    env = (subprocess_env(None, tpu_site) if is_tpu(card_key)
           else subprocess_env(plugin_site))
    proc = subprocess.run(cmd, env=env, text=True, capture_output=True)
    for line in proc.stdout.splitlines():
        print(line, flush=True)
    records = json.loads(out.read_text()) if out.is_file() else []
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        records.append({"card": card_key, "architecture": architecture, "status": "error",
                        "error": f"the part's process exited {proc.returncode}: {tail}"})
    return records


def summarise(records: Sequence[dict]) -> dict[str, Any]:
    """Per card: the largest planned memory of the profile's configured train steps, whether
    they all fit, whether every program is healthy, the bound per step and per trial of the
    default diffusion model."""
    out = {}
    for card_key in sorted({r["card"] for r in records}):
        ok = [r for r in records if r["card"] == card_key and r.get("status") == "ok"]
        configured = [r for r in ok if r["program"] == "train_step"
                      and r["form"] == "as configured" and r["architecture"] == "imgx_v010"]
        main = [r for r in configured if r["trial"].startswith("prostate-mr_diffusion_x0_"
                                                                "recycle-Y_dice-Y_k5")]
        out[card_key] = {
            "programs": len(ok),
            "errors": sum(r["card"] == card_key and r.get("status") != "ok" for r in records),
            "all_healthy": all(r["healthy"] for r in ok),
            "configured_train_fits": all(r["fits"] for r in configured),
            "configured_train_max_gib": max((r["planned_bytes"] for r in configured),
                                            default=math.nan) / 2**30,
            "default_step_bound_ms": main[0]["bound_s"] * 1e3 if main else math.nan,
            "default_trial_bound_h": main[0]["trial_bound_h"] if main else math.nan,
        }
    return out


def markdown_table(records: Sequence[dict]) -> str:
    """The plan's train steps of the profile's network and the sampling programs of its default
    diffusion model, one row per (data set, trial, program, form), a column group per card
    (GPU cards only: the TPU rows are `tpu_markdown_table`'s)."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("target") != "tpu"]
    cards = sorted({r["card"] for r in ok})
    keys = []
    for r in ok:
        key = (r["architecture"], r["data_set"], r["trial"], r["program"], r["form"])
        if key not in keys:
            keys.append(key)
    head = ("| network | data set | trial | program | form | "
            + " | ".join(f"{c} GiB | {c} bound ms" for c in cards) + " | TFLOP | healthy |")
    lines = [head, "|" + "---|" * (7 + 2 * len(cards))]
    by = {(r["architecture"], r["data_set"], r["trial"], r["program"], r["form"], r["card"]): r
          for r in ok}
    for key in keys:
        cells = []
        for c in cards:
            r = by.get((*key, c))
            cells += ([f"{r['planned_bytes'] / 2**30:.1f}{'' if r['fits'] else ' (no)'}",
                       f"{r['bound_s'] * 1e3:.0f}"] if r else ["-", "-"])
        first = next(by[(*key, c)] for c in cards if (*key, c) in by)
        trial = first["trial"].split("_", 1)[1].rsplit("_s", 1)[0]
        lines.append(f"| {key[0]} | {key[1]} | {trial} | {key[3]} | {key[4]} | "
                     + " | ".join(cells)
                     + f" | {first['flops'] / 1e12:.1f} | {'yes' if first['healthy'] else 'NO'} |")
    return "\n".join(lines)


def tpu_markdown_table(records: Sequence[dict]) -> str:
    """The TPU rows, one per (topology, data set, trial, program): per-device planned memory
    against one device's HBM, per-device TFLOP and bound, the state's bytes per device against
    the whole, the all-reduces, the conv check and the compile time."""
    head = ("| topology | devices | data set | trial | program | GiB per device (of HBM) | fits "
            "| TFLOP per device | bound ms | state GiB per device / whole | batch MiB per "
            "device / whole | all-reduces | healthy | compile s |")
    lines = [head, "|" + "---|" * 14]
    for r in records:
        if r.get("target") != "tpu":
            continue
        trial = r["trial"].split("_", 1)[1].rsplit("_s", 1)[0]
        lead = (f"| {r['topology']} | {r['mesh_devices']} ({r['chips']} chips) | "
                f"{r['data_set']} | {trial} | {r['program']} |")
        if r.get("status") != "ok":
            lines.append(f"{lead} error: {r.get('error', '')[:80]} |" + " |" * 8)
            continue
        state = (f"{r['state_bytes_per_device'] / 2**30:.2f} / {r['state_bytes'] / 2**30:.2f}"
                 if "state_bytes" in r else
                 f"{r['param_bytes_per_device'] / 2**30:.2f} / {r['param_bytes'] / 2**30:.2f}"
                 " (parameters)")
        batch = (f"{r['batch_bytes_per_device'] / 2**20:.0f} / {r['batch_bytes'] / 2**20:.0f}"
                 if "batch_bytes" in r else "-")
        lines.append(
            f"{lead} {r['planned_bytes'] / 2**30:.1f} ({r['memory_bytes'] / 2**30:.0f}) | "
            f"{'yes' if r['fits'] else 'no'} | {r['flops'] / 1e12:.1f} | "
            f"{r['bound_s'] * 1e3:.0f} | {state} | {batch} | "
            f"{r['collectives'].get('all-reduce', 0)} | "
            f"{'yes' if r['healthy'] else 'NO'} | {r['compile_s']:.0f} |")
    return "\n".join(lines)


def _key(rec: dict) -> tuple:
    return tuple(rec.get(k) for k in ("card", "architecture", "trial", "program", "form"))


def _merged(records: list[dict], old: Path) -> tuple[list[dict], dict]:
    """``records`` after the records of ``old`` that none of them replaces (same card,
    network, trial, program and form), and what was kept from ``old`` (its cards, date and
    wall time). Each kept record keeps its own ``date`` (one written before records carried
    it takes ``old``'s date)."""
    if not old.is_file():
        return records, {}
    before = json.loads(old.read_text())
    new = {_key(r) for r in records}
    kept = [{"date": before.get("date"), **r} for r in before.get("records", [])
            if _key(r) not in new]
    info = {"cards": sorted({r["card"] for r in kept}), "date": before.get("date"),
            "wall_s": before.get("wall_s")}
    return kept + records, info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffseg3d.experiments.gpu_plan.plan",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    from diffseg3d.experiments.gpu_plan.programs import PROGRAMS

    every = [*CARDS, *tpu.TOPOLOGIES]
    p.add_argument("--cards", nargs="+", default=every, choices=every,
                   help="GPU cards and TPU topologies (default: all)")
    p.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES),
                   choices=list(ARCHITECTURES))
    p.add_argument("--only", default="", help="rows whose trial name contains this")
    p.add_argument("--programs", nargs="+", default=None, choices=list(PROGRAMS),
                   help="rows of these programs only (default: all)")
    p.add_argument("--json", type=Path, default=DEFAULT_OUT)
    p.add_argument("--plugin-site", default=os.environ.get("GPU_PLAN_SITE"),
                   help="folder holding the CUDA PJRT plugin (default $GPU_PLAN_SITE)")
    p.add_argument("--tpu-site", default=os.environ.get("TPU_PLAN_SITE"),
                   help="folder holding libtpu (default $TPU_PLAN_SITE)")
    p.add_argument("--merge", action="store_true",
                   help="keep the existing JSON's records that this run does not compile "
                        "anew (same card, network, trial, program, form)")
    p.add_argument("--workers", type=int, default=2, help="parts compiled at once")
    p.add_argument("--part", nargs=2, metavar=("CARD", "ARCHITECTURE"),
                   help=argparse.SUPPRESS)  # one part, in this process (the driver's child)
    args = p.parse_args(argv)
    if args.part:
        run_part(args.part[0], args.part[1], args.json, args.only, args.programs)
        return 0
    args.json.parent.mkdir(parents=True, exist_ok=True)
    part_dir = Path(tempfile.mkdtemp(prefix="gpu_plan_parts_"))
    jobs = [(c, a) for a in args.architectures for c in args.cards if not is_tpu(c)]
    if TPU_ARCHITECTURE in args.architectures:
        jobs += [(c, TPU_ARCHITECTURE) for c in args.cards if is_tpu(c)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        parts = list(pool.map(lambda job: _run_subprocess(*job, part_dir, args.plugin_site,
                                                          args.only, args.tpu_site,
                                                          args.programs), jobs))
    today = date.today().isoformat()
    records = [{**r, "date": today} for part in parts for r in part]
    wall_s = time.perf_counter() - start
    kept: dict = {}
    if args.merge:
        records, kept = _merged(records, args.json)
    result = {"date": today, "kind": "compile-time plan, not a measurement",
              "grid": GRID, "profile": PROFILE, "tpu_profile": TPU_PROFILE,
              "fit_margin": FIT_MARGIN, "wall_s": wall_s,
              **({"kept_from_earlier_run": kept} if kept else {}),
              "summary": summarise(records), "records": records}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown_table(records))
    print(tpu_markdown_table(records))
    print(json.dumps(result["summary"], indent=1))
    bad = [r for r in records if r.get("status") != "ok"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
