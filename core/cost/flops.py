"""Floating-point operations and memory traffic of a compiled program, counted from the shapes
in its optimized HLO text.

Why count from shapes: XLA's own cost analysis (`Compiled.cost_analysis()`) is missing for a
program compiled without its device (`jax.experimental.topologies`), and XLA:GPU's leaves out
the convolutions and matmuls it hands to cuDNN and cuBLAS as custom calls, which are nearly all
of a U-Net's arithmetic. The count here covers exactly those:

- a convolution (an HLO ``convolution``, or a cuDNN conv custom call of any kind) costs
  ``2 * batch * c_out * c_in * taps`` FLOPs, for the output ``y`` of the forward conv it
  belongs to (``batch`` x ``c_out`` features), ``c_in`` its kernel's input features per group,
  and ``taps`` the (output position, window tap) pairs whose tap lands on an element of the
  input rather than on its padding or the holes of its dilation: per spatial dimension, from
  the window's size, stride, padding and dilations, multiplied over the dimensions (a kernel or
  input gradient costs as much as the forward conv). That is the count of XLA's own
  ``HloCostAnalysis``. Counting every tap instead would charge the zeros a conv is padded with:
  a few per cent for a 3x3x3 conv on a small level, but 20x for the outer product XLA:TPU
  writes as a 1x1 input padded by 127 with a 128-wide window, and a roofline bound must not
  count work that need not be done;
- a dot (an HLO ``dot``, including those inside Triton GEMM fusions, or a cuBLAS GEMM custom
  call) costs ``2 * |out| * prod(contracted dims)``;
- a loop body counts once per iteration of its known trip count (gradient accumulation and the
  sampler's steps are loops), a fused computation once per fusion that calls it.

Elementwise arithmetic is not counted (it is bound by memory traffic, which ``bytes`` covers).
``bytes`` is the traffic of a program that reads every operand and writes every output of each
kernel once (fusions, custom calls and other top-level instructions; no cache reuse): the
measure the roofline bound uses (`roofline.py`).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from diffseg3d.core.cost.hlo_text import HloModule, Instruction, array, attr, callee, type_bytes

#: cuDNN conv custom-call targets -> which operand (or "out") is the forward conv's input,
#: output and kernel (their window and dim_labels are the forward conv's).
_CUDNN_ROLES = {
    "__cudnn$convForward": (0, "out", 1), "__cudnn$convBiasActivationForward": (0, "out", 1),
    "__cudnn$convForwardGraph": (0, "out", 1), "__cudnn$convBackwardInput": ("out", 0, 1),
    "__cudnn$convBackwardFilter": (0, 1, "out"),
}
_PLAIN_ROLES = (0, "out", 1)
_GEMM_TARGETS = ("__cublas$gemm", "__cublas$lt$matmul")
#: Top-level instructions that launch no kernel and move no data of their own.
_NO_TRAFFIC = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "while",
               "call", "conditional", "after-all", "partition-id", "replica-id",
               "opt-barrier", "add-dependency"}


def _trip_count(rest: str) -> int:
    m = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
    return int(m.group(1)) if m else 1


def _multiplicities(module: HloModule) -> dict[str, tuple[float, bool]]:
    """computation -> (times it runs per execution of the entry, whether it is fused)."""
    out: dict[str, tuple[float, bool]] = {}

    def visit(name: str, times: float, fused: bool, depth: int = 0) -> None:
        if not name or depth > 64:
            return
        prev = out.get(name, (0.0, fused))
        out[name] = (prev[0] + times, prev[1] and fused)
        for row in module.by_computation.get(name, []):
            if row.op == "fusion":
                visit(callee(row.rest), times, True, depth + 1)
            elif row.op == "while":
                visit(callee(row.rest, "body"), times * _trip_count(row.rest), fused, depth + 1)
            elif row.op in ("call", "async-start"):
                visit(callee(row.rest, "to_apply") or callee(row.rest), times, fused, depth + 1)
            elif row.op == "conditional":  # every branch counted: an upper bound
                branches = attr(row.rest, "branch_computations") or ""
                names = re.findall(r"%?([\w.\-]+)", branches) or [
                    callee(row.rest, "true_computation"), callee(row.rest, "false_computation")]
                for branch in names:
                    visit(branch, times, fused, depth + 1)

    visit(module.entry or "", 1.0, False)
    return out


def _labels(dim_labels: str | None) -> tuple[str, str, str] | None:
    """``bf012_oi012->bf012`` -> ("bf012", "oi012", "bf012")."""
    m = re.match(r"(\w+)_(\w+)->(\w+)", dim_labels or "")
    return (m.group(1), m.group(2), m.group(3)) if m else None


def _window(rest: str) -> list[dict[str, int]]:
    """A conv's ``window={size=3x3 stride=2x2 pad=1_1x0_1 lhs_dilate=.. rhs_dilate=..}``, one
    dict per spatial dimension (absent fields take their defaults: stride and dilations 1,
    padding 0)."""
    fields = dict(re.findall(r"(\w+)=([\d_x\-]+)", attr(rest, "window") or ""))
    size = [int(n) for n in fields["size"].split("x")] if "size" in fields else []

    def per_dim(key: str, default: str) -> list[int]:  # "pad=1_2": its low side, 1
        return [int(v.split("_")[0]) for v in fields.get(key, "x".join([default] * len(size)))
                .split("x")] if size else []

    return [{"size": k, "stride": s, "pad_low": p, "lhs_dilate": dl, "rhs_dilate": dr}
            for k, s, p, dl, dr in zip(size, per_dim("stride", "1"), per_dim("pad", "0"),
                                       per_dim("lhs_dilate", "1"), per_dim("rhs_dilate", "1"),
                                       strict=True)]


def valid_taps(n_in: int, n_out: int, *, size: int, stride: int = 1, pad_low: int = 0,
               lhs_dilate: int = 1, rhs_dilate: int = 1) -> int:
    """(output position, window tap) pairs of one spatial dimension whose tap lands on one of the
    ``n_in`` input elements, not on padding or a hole of the input's dilation."""
    at = (np.arange(n_out)[:, None] * stride + np.arange(size)[None, :] * rhs_dilate - pad_low)
    return int(((at >= 0) & (at % lhs_dilate == 0) & (at // lhs_dilate < n_in)).sum())


def conv_flops(module: HloModule, row: Instruction) -> float:
    """FLOPs of one convolution (plain or cuDNN custom call); 0 where its shapes are unknown."""
    labels = _labels(attr(row.rest, "dim_labels"))
    out = array(row.type_text)
    operands = module.operand_shapes(row.rest)
    roles = _PLAIN_ROLES
    if row.op == "custom-call":
        roles = _CUDNN_ROLES.get(attr(row.rest, "custom_call_target") or "", _PLAIN_ROLES)

    def pick(at):
        if at == "out":
            return out[1] if out else None
        return operands[at] if at < len(operands) else None

    x, y, kernel = (pick(at) for at in roles)
    if labels is None or x is None or y is None or kernel is None or "i" not in labels[1]:
        return 0.0
    x_labels, kernel_labels, y_labels = labels
    window = _window(row.rest)
    spatial = [str(d) for d in range(len(window))]
    if any(d not in x_labels or d not in y_labels for d in spatial) or \
            len(x) != len(x_labels) or len(y) != len(y_labels):
        return 0.0
    taps = math.prod(valid_taps(x[x_labels.index(d)], y[y_labels.index(d)], **w)
                     for d, w in zip(spatial, window, strict=True))
    batch, features = y[y_labels.index("b")], y[y_labels.index("f")]
    return 2.0 * batch * features * kernel[kernel_labels.index("i")] * taps


def dot_flops(module: HloModule, row: Instruction) -> float:
    """FLOPs of one dot or cuBLAS GEMM custom call; 0 where its shapes are unknown."""
    out = array(row.type_text)
    operands = module.operand_shapes(row.rest)
    if not out or not operands or operands[0] is None:
        return 0.0
    if row.op == "dot":
        dims = attr(row.rest, "lhs_contracting_dims") or ""
    else:
        m = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', row.rest)
        dims = m.group(1) if m else ""
    contracted = [int(d) for d in re.findall(r"\d+", dims)]
    lhs = operands[0]
    if any(d >= len(lhs) for d in contracted):
        return 0.0
    return 2.0 * math.prod(out[1]) * math.prod(lhs[d] for d in contracted)


def _kind(row: Instruction) -> str | None:
    target = attr(row.rest, "custom_call_target") if row.op == "custom-call" else None
    if row.op == "convolution" or (target in _CUDNN_ROLES):
        return "conv"
    if row.op == "dot" or (target in _GEMM_TARGETS):
        return "dot"
    return None


def hlo_flops(hlo_text: str) -> dict[str, float]:
    """``{"conv_flops", "dot_flops", "flops" (their sum), "bytes", "convolutions", "dots"}``
    of one optimized HLO module text, per execution of its entry computation."""
    module = HloModule(hlo_text)
    times = _multiplicities(module)
    totals = {"conv_flops": 0.0, "dot_flops": 0.0, "bytes": 0.0, "convolutions": 0.0,
              "dots": 0.0}
    for row in module.rows:
        n, fused = times.get(row.computation, (0.0, True))
        if n == 0:
            continue
        kind = _kind(row)
        if kind == "conv":
            totals["conv_flops"] += n * conv_flops(module, row)
            totals["convolutions"] += n
        elif kind == "dot":
            totals["dot_flops"] += n * dot_flops(module, row)
            totals["dots"] += n
        if not fused and row.op not in _NO_TRAFFIC:
            totals["bytes"] += n * (module.operand_bytes(row.rest) + type_bytes(row.type_text))
    totals["flops"] = totals["conv_flops"] + totals["dot_flops"]
    return totals


def _xla_cost(compiled: Any) -> dict[str, float]:
    """XLA's own cost analysis of an executable (flops, bytes accessed), NaN where the backend
    gives none (a deviceless executable) or raises."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - unavailable is an answer here, not a failure
        cost = None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    cost = cost or {}
    return {"xla_flops": float(cost.get("flops", math.nan)),
            "xla_bytes": float(cost.get("bytes accessed", math.nan))}


def compiled_flops(compiled: Any) -> dict[str, float]:
    """FLOPs and bytes of one execution of a `jax.stages.Compiled`.

    Returns `hlo_flops` of its optimized HLO, plus ``xla_flops`` / ``xla_bytes`` from XLA's cost
    analysis (NaN where there is none), with ``flops`` and ``bytes`` the larger of the two
    counts: XLA:CPU's analysis includes the elementwise work the shape count leaves out, while
    XLA:GPU's leaves out the cuDNN/cuBLAS calls the shape count includes.
    """
    counted = hlo_flops(compiled.as_text())
    xla = _xla_cost(compiled)
    best = {"flops": max(counted["flops"], _or_zero(xla["xla_flops"])),
            "bytes": max(counted["bytes"], _or_zero(xla["xla_bytes"]))}
    return {**counted, **xla, **best, "counted_flops": counted["flops"],
            "counted_bytes": counted["bytes"]}


def _or_zero(x: float) -> float:
    return 0.0 if math.isnan(x) else x
