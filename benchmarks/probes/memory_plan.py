"""Paper-size memory plan of one training step, without running it.

For the paper's two volume sizes (prostate MR 256x256x48 with 8 + 1 classes, AMOS CT 192x128x128
with 15 + 1 classes), batch 8 and batch 1, the paper's U-Net (32/64/128/256 channels, two
residual blocks per level), bfloat16 compute with float32 parameters and remat, this script

1. builds the train state with ``jax.eval_shape`` (no parameter is allocated) and reports the
   parameter and optimiser-state sizes;
2. traces the training loss and lists the residuals JAX saves for its backward pass
   (``saved_residuals``: activations kept between the forward and backward pass, after remat),
   a backend-independent measure of activation memory -- the quantity remat reduces;
3. lowers ``jax.jit(train_step, donate_argnums=0)`` on abstract arguments
   (``jax.ShapeDtypeStruct``), which is cheap at any size;
4. unless ``--lower-only``, compiles the lowered step for the local backend and prints XLA's
   buffer plan, ``compiled.memory_analysis()``: ``args`` (state + batch + key), ``outputs``,
   ``alias`` (donated state buffers reused by the outputs), ``temp`` (activations, gradients,
   scratch), and ``peak ~= args + outputs - alias + temp``.

Nothing is executed, so it runs on a CPU-only machine. The plan is backend specific: run it on
the GPU/TPU you will train on (``conv_impl="lax3d_s2d"`` is the accelerator form, the default);
on CPU it is XLA:CPU's plan for the same program, a guide to the order of magnitude only.
Data parallelism over D devices divides the per-device batch by D; the plan at batch 8 / D is the
per-device figure.

Usage::

    python -m benchmarks.probes.memory_plan                       # all four cases, compiled
    python -m benchmarks.probes.memory_plan --lower-only          # sizes only, seconds
    python -m benchmarks.probes.memory_plan --case prostate --batch 1 --method diffusion --recycling
    python -m benchmarks.probes.memory_plan --json plan.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np

#: (spatial shape, number of classes including background) of the paper's data sets (sec. 4).
CASES = {
    "prostate": ((256, 256, 48), 9),
    "amos": ((192, 128, 128), 16),
}
PAPER_CHANNELS = (32, 64, 128, 256)
GIB = 2**30


@dataclass
class Plan:
    """One row of the plan; sizes in GiB (None where not computed)."""

    case: str
    shape: tuple
    num_classes: int
    batch: int
    method: str
    recycling: bool
    output: str
    dtype: str
    remat: bool
    conv_impl: str
    backend: str
    num_params: int
    params_gib: float
    opt_state_gib: float
    batch_gib: float
    residuals_gib: float | None
    lower_s: float
    compile_s: float | None = None
    args_gib: float | None = None
    outputs_gib: float | None = None
    alias_gib: float | None = None
    temp_gib: float | None = None
    code_gib: float | None = None
    peak_gib: float | None = None
    error: str | None = None


def _tree_bytes(tree) -> int:
    return sum(
        math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree)
    )


def residual_bytes(loss_fn, params, *args) -> int | None:
    """Bytes of the residuals saved for the backward pass of `loss_fn(params, *args)[0]` w.r.t.
    params (JAX's `saved_residuals`, the data behind `jax.ad_checkpoint.print_saved_residuals`);
    None if this JAX version does not expose it. Inputs that are themselves arguments (params,
    batch) are counted too; they are small next to the activations."""
    try:
        from jax._src.ad_checkpoint import saved_residuals
    except ImportError:  # private helper moved: the compiled plan still stands
        return None
    residuals = saved_residuals(lambda p, *a: loss_fn(p, *a)[0], params, *args)
    return sum(math.prod(aval.shape) * np.dtype(aval.dtype).itemsize for aval, _ in residuals)


def plan_step(
    case: str,
    batch: int,
    *,
    method: str = "diffusion",
    recycling: bool = True,
    output: str = "x0",
    dtype: str = "bfloat16",
    remat: bool = True,
    conv_impl: str = "lax3d_s2d",
    channels: tuple[int, ...] = PAPER_CHANNELS,
    compile_step: bool = True,
) -> Plan:
    """The memory plan of one jitted, state-donating training step (see module docstring)."""
    from diffseg3d.core.diffusion import make_schedule
    from diffseg3d.core.models.unet import UNet
    from diffseg3d.core.train import create_train_state, make_optimizer, make_train_step
    from diffseg3d.core.train.steps import make_loss_fn

    spatial, num_classes = CASES[case]
    diffusion = method == "diffusion"
    model = UNet(
        num_classes=num_classes,
        channels=tuple(channels),
        num_res_blocks=2,
        diffusion=diffusion,
        conv_impl=conv_impl,
        remat=remat,
        dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32,
    )
    tx, lr = make_optimizer(1e-4, 100, 12_500, weight_decay=1e-4, grad_clip_norm=1.0)
    image_shape = (batch, *spatial, 1)
    state = jax.eval_shape(
        lambda key: create_train_state(model, tx, key, image_shape, diffusion), jax.random.key(0)
    )
    batch_struct = {
        "image": jax.ShapeDtypeStruct(image_shape, jnp.float32),
        "label": jax.ShapeDtypeStruct((batch, *spatial), jnp.int32),
    }
    key_struct = jax.eval_shape(lambda: jax.random.key(0))
    step = make_train_step(
        model, tx, lr, method=method,
        schedule=make_schedule(1000, 5) if diffusion else None,
        output=output, recycling=recycling,
    )
    loss_fn = make_loss_fn(
        model, method=method, schedule=make_schedule(1000, 5) if diffusion else None,
        output=output, recycling=recycling,
    )
    raw_key = jax.ShapeDtypeStruct((2,), jnp.uint32)  # saved_residuals traces every argument
    residuals = residual_bytes(
        loss_fn, state.params, batch_struct["image"], batch_struct["label"], raw_key
    )
    start = time.perf_counter()
    lowered = jax.jit(step, donate_argnums=0).lower(state, batch_struct, key_struct)
    lower_s = time.perf_counter() - start
    plan = Plan(
        case=case, shape=tuple(spatial), num_classes=num_classes, batch=batch, method=method,
        recycling=recycling and diffusion, output=output, dtype=dtype, remat=remat,
        conv_impl=conv_impl, backend=jax.default_backend(),
        num_params=sum(math.prod(x.shape) for x in jax.tree.leaves(state.params)),
        params_gib=_tree_bytes(state.params) / GIB,
        opt_state_gib=_tree_bytes(state.opt_state) / GIB,
        batch_gib=_tree_bytes(batch_struct) / GIB,
        residuals_gib=None if residuals is None else residuals / GIB,
        lower_s=lower_s,
    )
    if not compile_step:
        return plan
    start = time.perf_counter()
    try:
        compiled = lowered.compile()
    except Exception as err:  # e.g. the backend refuses a buffer bigger than its memory
        plan.error = f"{type(err).__name__}: {str(err)[:300]}"
        return plan
    plan.compile_s = time.perf_counter() - start
    stats = compiled.memory_analysis()
    if stats is not None:
        plan.args_gib = stats.argument_size_in_bytes / GIB
        plan.outputs_gib = stats.output_size_in_bytes / GIB
        plan.alias_gib = stats.alias_size_in_bytes / GIB
        plan.temp_gib = stats.temp_size_in_bytes / GIB
        plan.code_gib = stats.generated_code_size_in_bytes / GIB
        plan.peak_gib = plan.args_gib + plan.outputs_gib - plan.alias_gib + plan.temp_gib
    return plan


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def print_table(plans: list[Plan], out=sys.stdout) -> None:
    cols = ("case", "batch", "method", "recycling", "dtype", "remat", "num_params", "params_gib",
            "opt_state_gib", "residuals_gib", "args_gib", "alias_gib", "temp_gib", "peak_gib",
            "compile_s")
    rows = [[_fmt(getattr(p, c)) for c in cols] for p in plans]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)), file=out)
    for row in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)), file=out)
    for p in plans:
        if p.error:
            print(f"{p.case} batch {p.batch}: {p.error}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), action="append",
                        help="data set size (repeatable; default both)")
    parser.add_argument("--batch", type=int, action="append", help="default: 8 and 1")
    parser.add_argument("--method", choices=("diffusion", "unet"), default="diffusion")
    parser.add_argument("--no-recycling", dest="recycling", action="store_false",
                        help="plain diffusion step (default: recycling, the larger one)")
    parser.add_argument("--output", choices=("x0", "eps"), default="x0")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--no-remat", dest="remat", action="store_false")
    parser.add_argument("--conv-impl", choices=("lax3d_s2d", "lax3d", "slices", "auto"),
                        default="lax3d_s2d")
    parser.add_argument("--lower-only", action="store_true", help="skip XLA compilation")
    parser.add_argument("--json", help="also write the plans to this JSON file")
    args = parser.parse_args(argv)
    plans = []
    for case in args.case or ["prostate", "amos"]:
        for batch in args.batch or [8, 1]:
            plan = plan_step(
                case, batch, method=args.method, recycling=args.recycling, output=args.output,
                dtype=args.dtype, remat=args.remat, conv_impl=args.conv_impl,
                compile_step=not args.lower_only,
            )
            print(json.dumps(asdict(plan)), flush=True)
            plans.append(plan)
    print(f"\nbackend {jax.default_backend()}, devices {jax.devices()}")
    print_table(plans)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([asdict(p) for p in plans], handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
