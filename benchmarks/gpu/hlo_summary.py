"""What XLA made of the convolutions: a summary of an optimized-HLO text, telling a healthy conv
from the pathological one.

XLA:GPU hands convolutions to cuDNN as a ``custom-call`` whose ``custom_call_target`` names the
routine (``__cudnn$convForward``, ``__cudnn$convBackwardInput``, ``__cudnn$convBackwardFilter``,
``__cudnn$convBiasActivationForward``, ``__cudnn$convForwardGraph``), or, in the conv-fusion
form XLA is moving to, as a ``fusion`` whose backend config kind is ``__cudnn$fusion`` with a
``convolution`` inside: both count as cuDNN convs. Matmuls become ``__cublas$gemm`` /
``__cublas$lt$matmul`` custom calls or Triton fusions (``__triton_gemm``). A ``convolution``
left as a plain instruction anywhere else is run by XLA's own emitter (on XLA:CPU every conv
is one).

Per conv the summary gives its ``kind`` (``forward``, ``backward-input``, ``backward-filter``;
``plain`` for XLA's emitter), ``window_size``, ``lhs_dilate``, ``rhs_dilate`` (from ``window``),
whether its first operand is an interior-padded ``pad`` (``input_interior_padded``: the zeros
an lhs dilation inserts, materialised; also through a fusion whose root is such a pad, and
through bitcasts/copies), whether it belongs to the backward pass (jax's ``op_name`` holds
``transpose(``), and ``flagged``: a cuDNN *forward* conv with a window above 3 in the backward
pass. That is what XLA makes of the kernel gradient of ``lax.conv_transpose`` (an lhs-dilated
conv whose window is the whole output volume) when it cannot match it as a backward-filter
conv: a forward conv over a zero-interleaved padded input (``core/models/conv.py``). A healthy
step has none. ``dilated_volume`` lists, on any backend, the backward-pass convs with a window
above 3 and a dilation (``lhs_dilate``, or ``rhs_dilate`` where XLA swapped the operands, as
XLA:CPU does) or an interior-padded input: such a conv, whatever runs it.

Make a dump with ``XLA_FLAGS="--xla_dump_to=DIR --xla_dump_hlo_as_text
--xla_dump_hlo_module_re=jit_train_step"`` (or write ``compiled.as_text()``), then::

    python -m benchmarks.gpu.hlo_summary DIR [--json OUT]
    python -m benchmarks.gpu.hlo_summary FILE.txt
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

#: cuDNN convolution custom-call target -> kind (XLA:GPU's ``CudnnConvKind``).
CUDNN_CONV_KINDS = {
    "__cudnn$convForward": "forward", "__cudnn$convBiasActivationForward": "forward",
    "__cudnn$convForwardGraph": "forward", "__cudnn$convBackwardInput": "backward-input",
    "__cudnn$convBackwardFilter": "backward-filter",
}
#: The backend kind of a cuDNN conv fusion (its convs count as cuDNN convs).
CUDNN_FUSION = "__cudnn$fusion"
#: A forward conv window above this in the backward pass is flagged.
MAX_HEALTHY_WINDOW = 3
#: Single-operand ops followed back from a conv's input to find the pad that made it.
_PASS_THROUGH = ("bitcast", "copy", "transpose", "reshape", "convert")

# `%name = TYPE opcode(` where TYPE is `bf16[1,2]{1,0}` or a tuple `(bf16[..]{..}, u8[0]{0})`.
_INSTR = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*"
    r"(?P<type>\((?:[^()]|\([^()]*\))*\)|\S+)\s+(?P<op>[\w\-]+)\((?P<rest>.*)$"
)
# `ENTRY %main.12 (p: f32[2]) -> f32[2] {` or `%fused_computation.3 (...) -> ... {`.
_COMPUTATION = re.compile(r"^(?P<entry>ENTRY\s+)?%?(?P<name>[\w.\-]+)\s+\(.*\{\s*$")
_ARRAY = re.compile(r"(?P<dtype>[a-z]+\d*(?:e\d+m\d+\w*)?)\[(?P<dims>[\d,]*)\]")
_OPERAND = re.compile(r"(?:(?P<type>[a-z]+\d*\w*\[[\d,]*\](?:\{[^}]*\})?)\s+)?%(?P<name>[\w.\-]+)")


def _attr(rest: str, key: str) -> str | None:
    """Value of ``key=...`` in an instruction's attribute text: ``{...}`` kept whole (nested
    braces counted), a quoted string unquoted, else up to the next comma."""
    m = re.search(rf"(?:^|[\s,]){re.escape(key)}=", rest)
    if not m:
        return None
    i = m.end()
    if rest[i:i + 1] == "{":
        depth = 0
        for j in range(i, len(rest)):
            depth += {"{": 1, "}": -1}.get(rest[j], 0)
            if depth == 0:
                return rest[i + 1:j]
        return rest[i + 1:]
    if rest[i:i + 1] == '"':
        return rest[i + 1:rest.index('"', i + 1)]
    return re.match(r"[^,\s]*", rest[i:]).group(0)


def _array(type_text: str) -> tuple[str, list[int]] | None:
    """``bf16[1,8,8]{2,1,0}`` (or the first element of a tuple) -> ("bf16", [1, 8, 8])."""
    m = _ARRAY.search(type_text)
    if not m:
        return None
    return m.group("dtype"), [int(d) for d in m.group("dims").split(",") if d]


def _operand_text(rest: str) -> str:
    """The operand list of ``op(a, b), attrs``: ``rest`` up to its closing parenthesis."""
    depth = 1
    for i, ch in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return rest[:i]
    return rest


def _instructions(hlo_text: str):
    """Yield ``(computation, is_entry, name, type text, opcode, rest of line)``."""
    computation, entry = None, False
    for line in hlo_text.splitlines():
        m = _COMPUTATION.match(line)
        if m and " = " not in line.split("(")[0]:
            computation, entry = m.group("name"), bool(m.group("entry"))
            continue
        m = _INSTR.match(line)
        if m and computation is not None:
            yield (computation, entry, m.group("name"), m.group("type"), m.group("op"),
                   m.group("rest"))


def _window(window: str | None) -> tuple[list[int] | None, ...]:
    """``"size=3x3x3 pad=1_1x1_1x1_1 lhs_dilate=2x2x2"`` -> ``([3, 3, 3], [2, 2, 2], None)``:
    size, lhs_dilate, rhs_dilate."""
    fields = dict(f.split("=", 1) for f in (window or "").split() if "=" in f)

    def dims(key):
        return [int(n) for n in fields[key].split("x")] if key in fields else None

    return dims("size"), dims("lhs_dilate"), dims("rhs_dilate")


def _interior_padded(padding: str | None) -> bool:
    """``padding=0_0x0_1_1x...`` (low_high[_interior] per dim): some interior padding > 0."""
    return any(len(d.split("_")) == 3 and int(d.split("_")[2]) > 0
               for d in (padding or "").split("x") if d)


def _callee(rest: str) -> str:
    """The computation a fusion calls (``calls=%fused_computation.3`` -> its name)."""
    return (_attr(rest, "calls") or "").lstrip("%")


class _Module:
    """The instructions of one HLO module text, by name and by computation."""

    def __init__(self, hlo_text: str):
        self.rows = list(_instructions(hlo_text))
        self.by_name = {r[2]: r for r in self.rows}
        self.by_computation: dict[str, list[tuple]] = collections.defaultdict(list)
        for r in self.rows:
            self.by_computation[r[0]].append(r)
        #: Fused computation -> the fusion instruction calling it.
        self.callers = {_callee(r[5]): r for r in self.rows if r[4] == "fusion"}
        #: Computations called by cuDNN conv fusions -> that fusion's backend config text.
        self.cudnn_fusion_bodies = {
            _callee(r[5]): r[5] for r in self.rows
            if r[4] == "fusion" and _fusion_kind(r[5]) == CUDNN_FUSION}

    def operand_names(self, rest: str) -> list[str]:
        return [m.group("name") for m in _OPERAND.finditer(_operand_text(rest))]

    def is_interior_pad(self, name: str, depth: int = 0) -> bool:
        """``name`` is (a bitcast/copy/... of) a pad with interior padding, or a fusion whose
        root is one; a fused computation's parameter is followed to its fusion's operand."""
        row = self.by_name.get(name)
        if row is None or depth > 8:
            return False
        computation, _, _, _, op, rest = row
        if op == "parameter" and computation in self.callers:
            index = int(re.match(r"\s*(\d+)", rest).group(1))
            outer = self.operand_names(self.callers[computation][5])
            return index < len(outer) and self.is_interior_pad(outer[index], depth + 1)
        if op == "pad":
            return _interior_padded(_attr(rest, "padding"))
        if op in _PASS_THROUGH:
            ops = self.operand_names(rest)
            return bool(ops) and self.is_interior_pad(ops[0], depth + 1)
        if op == "fusion":
            body = self.by_computation.get(_callee(rest), [])
            roots = [r for r in body if r[4] == "pad"]
            return any(_interior_padded(_attr(r[5], "padding")) for r in roots)
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


def _conv_record(module: _Module, row: tuple, shapes: dict[str, list[int]]) -> dict:
    """One conv's row: where, how (plain, cuDNN custom call or cuDNN fusion), its kind, dtype,
    shapes, window, whether its input is an interior-padded pad, and the flag."""
    computation, entry, name, type_text, op, rest = row
    out = _array(type_text)
    operands = []
    for m in _OPERAND.finditer(_operand_text(rest)):
        arr = _array(m.group("type")) if m.group("type") else None
        operands.append(arr[1] if arr else shapes.get(m.group("name")))
    target = _attr(rest, "custom_call_target") if op == "custom-call" else None
    fusion_config = module.cudnn_fusion_bodies.get(computation)
    if target:
        form, kind = "custom-call", CUDNN_CONV_KINDS.get(target, "unknown")
    elif fusion_config is not None:
        form, kind, target = "cudnn-fusion", _fused_kind(fusion_config), CUDNN_FUSION
    else:
        form, kind = "plain", "plain"
    window = _attr(rest, "window")
    size, lhs_dilate, rhs_dilate = _window(window)
    names = module.operand_names(rest)
    op_name = _op_name(rest)
    backward = bool(op_name and "transpose(" in op_name)
    row = {
        "name": name, "computation": computation, "in_entry": entry, "form": form,
        "target": target, "kind": kind, "cudnn": form != "plain",
        "dtype": out[0] if out else None, "shape": out[1] if out else None,
        "operand_shapes": operands, "window": window, "window_size": size,
        "lhs_dilate": lhs_dilate, "rhs_dilate": rhs_dilate, "dim_labels": _attr(rest, "dim_labels"),
        "feature_group_count": int(_attr(rest, "feature_group_count") or 1),
        "batch_group_count": int(_attr(rest, "batch_group_count") or 1),
        "input_interior_padded": bool(names) and module.is_interior_pad(names[0]),
        # jax's op name: "transpose(jvp(...))" marks a conv of the backward pass.
        "op_name": op_name, "backward_pass": backward,
        "flagged": form != "plain" and kind == "forward" and backward
        and max(size or [0]) > MAX_HEALTHY_WINDOW,
    }
    dilated = max(lhs_dilate or [1]) > 1 or max(rhs_dilate or [1]) > 1
    row["dilated_volume"] = (backward and max(size or [0]) > MAX_HEALTHY_WINDOW
                             and (dilated or row["input_interior_padded"]))
    return row


def _op_name(rest: str) -> str | None:
    m = re.search(r'op_name="([^"]*)"', _attr(rest, "metadata") or "")
    return m.group(1) if m else None


def _fusion_kind(rest: str) -> str:
    """``__triton_gemm`` etc. from a fusion's backend config, else its ``kind=`` (kLoop...)."""
    m = re.search(r'"fusion_backend_config":\{[^}]*?"kind":"([^"]+)"', rest)
    return m.group(1) if m else (_attr(rest, "kind") or "?")


def summarise_text(hlo_text: str) -> dict:
    """Summary of one optimized HLO module's text.

    Returns ``{"convolutions": {"plain": n, "custom_call": {target: n}, "cudnn_fusion": n,
    "total": n}, "by_kind": {kind: n}, "flagged": [conv names], "dilated_volume": [conv names],
    "plain_by_window": {window: n},
    "custom_calls": {target: n}, "fusions": {kind: n}, "instructions": n, "convs": [row per
    conv]}``; a conv row is `_conv_record`'s dict.
    """
    module = _Module(hlo_text)
    shapes: dict[str, list[int]] = {}
    convs, calls, fusions = [], collections.Counter(), collections.Counter()
    for row in module.rows:
        _, _, name, type_text, op, rest = row
        arr = _array(type_text)
        if arr:
            shapes[name] = arr[1]
        target = _attr(rest, "custom_call_target") if op == "custom-call" else None
        if target:
            calls[target] += 1
        if op == "fusion":
            fusions[_fusion_kind(rest)] += 1
        if op == "convolution" or (target and "conv" in target.lower()):
            convs.append(_conv_record(module, row, shapes))
    by_target = collections.Counter(c["target"] for c in convs if c["form"] == "custom-call")
    plain = [c for c in convs if c["form"] == "plain"]
    return {
        "convolutions": {"plain": len(plain), "custom_call": dict(by_target),
                         "cudnn_fusion": sum(c["form"] == "cudnn-fusion" for c in convs),
                         "total": len(convs)},
        "by_kind": dict(collections.Counter(c["kind"] for c in convs)),
        "flagged": [c["name"] for c in convs if c["flagged"]],
        "dilated_volume": [c["name"] for c in convs if c["dilated_volume"]],
        "plain_by_window": dict(collections.Counter(c["window"] for c in plain)),
        "custom_calls": dict(calls), "fusions": dict(fusions), "instructions": len(module.rows),
        "convs": convs,
    }


def optimized_dumps(dump_dir: str | Path, module: str = "") -> list[Path]:
    """The ``*after_optimizations.txt`` module texts in ``dump_dir`` (not the buffer-assignment
    or memory-usage reports), whose file name contains ``module``; largest first."""
    files = [p for p in Path(dump_dir).glob("*after_optimizations*.txt")
             if module in p.name and "buffer-assignment" not in p.name
             and "memory-usage" not in p.name]
    return sorted(files, key=lambda p: -p.stat().st_size)


def summarise_dir(dump_dir: str | Path, module: str = "train_step") -> dict:
    """`summarise_text` of the largest optimized dump of ``module`` in ``dump_dir`` (a module
    compiled twice leaves two files), with ``file`` naming it; ValueError when there is none."""
    files = optimized_dumps(dump_dir, module)
    if not files:
        raise ValueError(f"no *after_optimizations*.txt of module {module!r} in {dump_dir}")
    return {"file": files[0].name, **summarise_text(files[0].read_text())}


def format_summary(summary: dict) -> str:
    """A few lines for a terminal: counts, the flagged convs, then one line per conv."""
    c = summary["convolutions"]
    lines = [f"{summary.get('file', 'module')}: {c['total']} convs ({c['plain']} plain, "
             f"cuDNN custom calls {c['custom_call'] or '{}'}, {c['cudnn_fusion']} in cuDNN "
             f"fusions); by kind {summary['by_kind']}; fusions {summary['fusions']}",
             f"flagged (cuDNN forward conv, window > {MAX_HEALTHY_WINDOW}, backward pass): "
             f"{len(summary['flagged'])} {summary['flagged']}; backward convs over a dilated "
             f"input with a window > {MAX_HEALTHY_WINDOW}: {len(summary['dilated_volume'])}"]
    for conv in summary["convs"]:
        size = "x".join(map(str, conv["window_size"] or [])) or "-"
        dilate = "x".join(map(str, conv["lhs_dilate"] or []))
        rhs = "x".join(map(str, conv["rhs_dilate"] or []))
        lines.append(
            f"  {'FLAGGED ' if conv['flagged'] else ''}{conv['kind']:<15} "
            f"{conv['target'] or 'plain'} {conv['dtype']}{conv['shape']} window {size}"
            f"{' lhs_dilate ' + dilate if dilate else ''}{' rhs_dilate ' + rhs if rhs else ''}"
            f"{' input=interior-padded pad' if conv['input_interior_padded'] else ''}"
            f" ({conv['op_name']})")
    return "\n".join(lines)


def summarise_path(path: str | Path, module: str = "train_step") -> dict:
    """`summarise_dir` of a dump folder, or `summarise_text` of one text file (``file`` set)."""
    path = Path(path)
    if path.is_dir():
        return summarise_dir(path, module)
    return {"file": path.name, **summarise_text(path.read_text())}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu.hlo_summary", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path, help="the --xla_dump_to folder, or one HLO text file")
    p.add_argument("--module", default="train_step",
                   help="part of the dump's file name selecting the module (default train_step)")
    p.add_argument("--json", type=Path, default=None, help="write the summary to this file")
    args = p.parse_args(argv)
    summary = summarise_path(args.path, args.module)
    print(format_summary(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
