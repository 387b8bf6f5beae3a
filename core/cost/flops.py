"""Floating-point operations and memory traffic of a compiled program, counted from the shapes
in its optimized HLO text.

Why count from shapes: XLA's own cost analysis (`Compiled.cost_analysis()`) is missing for a
program compiled without its device (`jax.experimental.topologies`), and XLA:GPU's leaves out
the convolutions and matmuls it hands to cuDNN and cuBLAS as custom calls, which are nearly all
of a U-Net's arithmetic. The count here covers exactly those:

- a convolution (an HLO ``convolution``, or a cuDNN conv custom call of any kind) costs
  ``2 * |y| * prod(window) * c_in`` FLOPs, where ``y`` is the output of the forward conv it
  belongs to and ``c_in`` its kernel's input features per group (a kernel or input gradient
  costs as much as the forward conv);
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

from diffseg3d.core.cost.hlo_text import HloModule, Instruction, array, attr, callee, type_bytes

#: cuDNN conv custom-call targets -> which operand (or "out") is the forward output and kernel.
_CUDNN_ROLES = {
    "__cudnn$convForward": ("out", 1), "__cudnn$convBiasActivationForward": ("out", 1),
    "__cudnn$convForwardGraph": ("out", 1), "__cudnn$convBackwardInput": (0, 1),
    "__cudnn$convBackwardFilter": (1, "out"),
}
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


def conv_flops(module: HloModule, row: Instruction) -> float:
    """FLOPs of one convolution (plain or cuDNN custom call); 0 where its shapes are unknown."""
    labels = _labels(attr(row.rest, "dim_labels"))
    out = array(row.type_text)
    operands = module.operand_shapes(row.rest)
    y_at, kernel_at = ("out", 1)
    if row.op == "custom-call":
        y_at, kernel_at = _CUDNN_ROLES.get(attr(row.rest, "custom_call_target") or "",
                                           ("out", 1))

    def pick(at):
        if at == "out":
            return out[1] if out else None
        return operands[at] if at < len(operands) else None

    y, kernel = pick(y_at), pick(kernel_at)
    if labels is None or y is None or kernel is None or "i" not in labels[1]:
        return 0.0
    size = re.search(r"size=([\dx]+)", attr(row.rest, "window") or "")
    window = math.prod(int(n) for n in size.group(1).split("x")) if size else 1
    return 2.0 * math.prod(y) * window * kernel[labels[1].index("i")]


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
