"""What XLA made of the convolutions of an optimized HLO text, telling a healthy conv from the
pathological one.

XLA:GPU hands convolutions to cuDNN as a ``custom-call`` whose ``custom_call_target`` names the
routine (``__cudnn$convForward``, ``__cudnn$convBackwardInput``, ``__cudnn$convBackwardFilter``,
``__cudnn$convBiasActivationForward``, ``__cudnn$convForwardGraph``), or, in the conv-fusion
form XLA is moving to, as a ``fusion`` whose backend config kind is ``__cudnn$fusion`` with a
``convolution`` inside: both count as cuDNN convs. A ``convolution`` left as a plain
instruction anywhere else is run by XLA's own emitter (on XLA:CPU every conv is one).

The pathology: the kernel gradient of ``lax.conv_transpose`` is an lhs-dilated conv whose window
is the whole output volume. When XLA:GPU cannot match it as a backward-filter conv it runs it as
a cuDNN *forward* conv over a zero-interleaved, padded input (an HLO ``pad`` with interior
padding that materialises the zeros the dilation inserts): 7/8 of its input is zeros and its
window is a whole level. A healthy step has none (``core/models/conv.py``: ``lax3d_s2d``).

Per conv `summarise_text` gives its ``kind`` (``forward``, ``backward-input``,
``backward-filter``; ``plain`` for XLA's emitter), ``window_size``, ``lhs_dilate``,
``rhs_dilate``, whether its first operand is an interior-padded ``pad``
(``input_interior_padded``; also through a fusion whose root is such a pad, and through
bitcasts/copies), whether it belongs to the backward pass (jax's ``op_name`` holds
``transpose(``), and:

- ``flagged``: a cuDNN forward conv in the backward pass with a window above 3 whose input is
  interior-padded or lhs-dilated. A window above 3 alone is not the pathology: the kernel
  gradient of a 3x3x3 conv on a 4x4x2 level is a forward conv with a 4x4x2 window over an
  ordinary input;
- ``dilated_volume``, on any backend: a backward-pass conv with a window above 3 and a dilation
  (``lhs_dilate``, or ``rhs_dilate`` where XLA swapped the operands, as XLA:CPU does) or an
  interior-padded input.

`verdict` is what a program is judged by: no flagged conv, and no interior-padded ``pad``
feeding a conv.
"""

from __future__ import annotations

import collections
import re

from diffseg3d.core.cost.hlo_text import HloModule, Instruction, array, attr, callee

#: cuDNN convolution custom-call target -> kind (XLA:GPU's ``CudnnConvKind``).
CUDNN_CONV_KINDS = {
    "__cudnn$convForward": "forward", "__cudnn$convBiasActivationForward": "forward",
    "__cudnn$convForwardGraph": "forward", "__cudnn$convBackwardInput": "backward-input",
    "__cudnn$convBackwardFilter": "backward-filter",
}
#: The backend kind of a cuDNN conv fusion (its convs count as cuDNN convs).
CUDNN_FUSION = "__cudnn$fusion"
#: A forward conv window above this in the backward pass, over a dilated input, is flagged.
MAX_HEALTHY_WINDOW = 3
#: Single-operand ops followed back from a conv's input to find the pad that made it.
_PASS_THROUGH = ("bitcast", "copy", "transpose", "reshape", "convert")


def _window(window: str | None) -> tuple[list[int] | None, ...]:
    """``"size=3x3x3 pad=1_1x1_1x1_1 lhs_dilate=2x2x2"`` -> ``([3, 3, 3], [2, 2, 2], None)``:
    size, lhs_dilate, rhs_dilate."""
    fields = dict(f.split("=", 1) for f in (window or "").split() if "=" in f)

    def dims(key):
        return [int(n) for n in fields[key].split("x")] if key in fields else None

    return dims("size"), dims("lhs_dilate"), dims("rhs_dilate")


def interior_padded(padding: str | None) -> bool:
    """``padding=0_0x0_1_1x...`` (low_high[_interior] per dim): some interior padding > 0."""
    return any(len(d.split("_")) == 3 and int(d.split("_")[2]) > 0
               for d in (padding or "").split("x") if d)


def fusion_kind(rest: str) -> str:
    """``__triton_gemm`` etc. from a fusion's backend config, else its ``kind=`` (kLoop...)."""
    m = re.search(r'"fusion_backend_config":\{[^}]*?"kind":"([^"]+)"', rest)
    return m.group(1) if m else (attr(rest, "kind") or "?")


class _ConvModule(HloModule):
    """An `HloModule` that also knows its cuDNN conv fusions and follows pads."""

    def __init__(self, hlo_text: str):
        super().__init__(hlo_text)
        #: Computations called by cuDNN conv fusions -> that fusion's backend config text.
        self.cudnn_fusion_bodies = {
            callee(r.rest): r.rest for r in self.rows
            if r.op == "fusion" and fusion_kind(r.rest) == CUDNN_FUSION}

    def is_interior_pad(self, name: str, depth: int = 0) -> bool:
        """``name`` is (a bitcast/copy/... of) a pad with interior padding, or a fusion whose
        root is one; a fused computation's parameter is followed to its fusion's operand."""
        row = self.by_name.get(name)
        if row is None or depth > 8:
            return False
        if row.op == "parameter" and row.computation in self.callers:
            index = int(re.match(r"\s*(\d+)", row.rest).group(1))
            outer = self.operand_names(self.callers[row.computation].rest)
            return index < len(outer) and self.is_interior_pad(outer[index], depth + 1)
        if row.op == "pad":
            return interior_padded(attr(row.rest, "padding"))
        if row.op in _PASS_THROUGH:
            ops = self.operand_names(row.rest)
            return bool(ops) and self.is_interior_pad(ops[0], depth + 1)
        if row.op == "fusion":
            body = self.by_computation.get(callee(row.rest), [])
            return any(interior_padded(attr(r.rest, "padding")) for r in body if r.op == "pad")
        return False


def _fused_kind(config: str) -> str:
    """The kind of a conv inside a cuDNN fusion: from words of its fusion's backend config
    (cuDNN's wgrad / dgrad), else ``forward`` (what an HLO ``convolution`` computes)."""
    low = config.lower()
    if "wgrad" in low or "backward_filter" in low or "backwardfilter" in low:
        return "backward-filter"
    if "dgrad" in low or "backward_input" in low or "backwardinput" in low:
        return "backward-input"
    return "forward"


def _op_name(rest: str) -> str | None:
    m = re.search(r'op_name="([^"]*)"', attr(rest, "metadata") or "")
    return m.group(1) if m else None


def _conv_record(module: _ConvModule, row: Instruction) -> dict:
    """One conv's row: where, how (plain, cuDNN custom call or cuDNN fusion), its kind, dtype,
    shapes, window, whether its input is an interior-padded pad, and the flags."""
    out = array(row.type_text)
    target = attr(row.rest, "custom_call_target") if row.op == "custom-call" else None
    fusion_config = module.cudnn_fusion_bodies.get(row.computation)
    if target:
        form, kind = "custom-call", CUDNN_CONV_KINDS.get(target, "unknown")
    elif fusion_config is not None:
        form, kind, target = "cudnn-fusion", _fused_kind(fusion_config), CUDNN_FUSION
    else:
        form, kind = "plain", "plain"
    window = attr(row.rest, "window")
    size, lhs_dilate, rhs_dilate = _window(window)
    names = module.operand_names(row.rest)
    op_name = _op_name(row.rest)
    backward = bool(op_name and "transpose(" in op_name)
    padded = bool(names) and module.is_interior_pad(names[0])
    lhs_dilated = max(lhs_dilate or [1]) > 1
    large = max(size or [0]) > MAX_HEALTHY_WINDOW
    rec = {
        "name": row.name, "computation": row.computation, "in_entry": row.in_entry,
        "form": form, "target": target, "kind": kind, "cudnn": form != "plain",
        "dtype": out[0] if out else None, "shape": out[1] if out else None,
        "operand_shapes": module.operand_shapes(row.rest), "window": window,
        "window_size": size, "lhs_dilate": lhs_dilate, "rhs_dilate": rhs_dilate,
        "dim_labels": attr(row.rest, "dim_labels"),
        "feature_group_count": int(attr(row.rest, "feature_group_count") or 1),
        "batch_group_count": int(attr(row.rest, "batch_group_count") or 1),
        "input_interior_padded": padded,
        # jax's op name: "transpose(jvp(...))" marks a conv of the backward pass.
        "op_name": op_name, "backward_pass": backward,
        "flagged": (form != "plain" and kind == "forward" and backward and large
                    and (padded or lhs_dilated)),
    }
    dilated = lhs_dilated or max(rhs_dilate or [1]) > 1
    rec["dilated_volume"] = backward and large and (dilated or padded)
    return rec


def summarise_text(hlo_text: str) -> dict:
    """Summary of one optimized HLO module's text.

    Returns ``{"convolutions": {"plain": n, "custom_call": {target: n}, "cudnn_fusion": n,
    "total": n}, "by_kind": {kind: n}, "flagged": [conv names], "dilated_volume": [conv names],
    "padded_inputs": [conv names], "plain_by_window": {window: n}, "custom_calls": {target: n},
    "fusions": {kind: n}, "instructions": n, "convs": [row per conv]}``; a conv row is
    `_conv_record`'s dict; ``padded_inputs`` are the convs fed by an interior-padded pad.
    """
    module = _ConvModule(hlo_text)
    convs, calls, fusions = [], collections.Counter(), collections.Counter()
    for row in module.rows:
        target = attr(row.rest, "custom_call_target") if row.op == "custom-call" else None
        if target:
            calls[target] += 1
        if row.op == "fusion":
            fusions[fusion_kind(row.rest)] += 1
        if row.op == "convolution" or (target and "conv" in target.lower()):
            convs.append(_conv_record(module, row))
    by_target = collections.Counter(c["target"] for c in convs if c["form"] == "custom-call")
    plain = [c for c in convs if c["form"] == "plain"]
    return {
        "convolutions": {"plain": len(plain), "custom_call": dict(by_target),
                         "cudnn_fusion": sum(c["form"] == "cudnn-fusion" for c in convs),
                         "total": len(convs)},
        "by_kind": dict(collections.Counter(c["kind"] for c in convs)),
        "flagged": [c["name"] for c in convs if c["flagged"]],
        "dilated_volume": [c["name"] for c in convs if c["dilated_volume"]],
        "padded_inputs": [c["name"] for c in convs if c["input_interior_padded"]],
        "plain_by_window": dict(collections.Counter(c["window"] for c in plain)),
        "custom_calls": dict(calls), "fusions": dict(fusions), "instructions": len(module.rows),
        "convs": convs,
    }


def verdict(summary: dict) -> dict:
    """``{"healthy": bool, "reasons": [str]}`` of a `summarise_text` summary: healthy when no
    conv is flagged and no interior-padded ``pad`` feeds a conv."""
    reasons = []
    if summary["flagged"]:
        reasons.append(f"{len(summary['flagged'])} cuDNN forward conv(s) in the backward pass "
                       f"with a window > {MAX_HEALTHY_WINDOW} over a dilated input: "
                       f"{', '.join(summary['flagged'])}")
    if summary["padded_inputs"]:
        reasons.append(f"{len(summary['padded_inputs'])} conv(s) fed by an interior-padded "
                       f"pad: {', '.join(summary['padded_inputs'])}")
    return {"healthy": not reasons, "reasons": reasons}
