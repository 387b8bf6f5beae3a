"""What XLA made of the convolutions: a summary of an optimized-HLO text dump.

XLA:GPU rewrites every ``convolution`` it can hand to cuDNN into a ``custom-call`` whose
``custom_call_target`` says which cuDNN routine runs it (``__cudnn$convForward``,
``__cudnn$convBackwardInput``, ``__cudnn$convBackwardFilter``,
``__cudnn$convBiasActivationForward``); matmuls become ``__cublas$gemm`` / ``__cublas$lt$matmul``
custom calls or Triton fusions (``fusion`` with ``kind=kCustom`` and a
``fusion_backend_config`` kind such as ``__triton_gemm``). A ``convolution`` left as a plain
instruction in the optimized module (top level or inside a fusion) is one XLA runs with its
own emitter, the slow fallback. On XLA:CPU every conv stays a plain ``convolution``.

`summarise_text` lists every conv (plain or cuDNN custom call) with its output dtype and shape,
operand shapes, ``window`` (size, stride, pad, lhs_dilate = transposed conv / input gradient of
a strided conv, rhs_dilate = filter gradient of a strided conv), ``dim_labels`` and
``feature_group_count`` / ``batch_group_count``, and counts custom calls by target and fusions
by kind, so a reader sees which conv (gradient) fell back.

Make a dump with ``XLA_FLAGS="--xla_dump_to=DIR --xla_dump_hlo_as_text
--xla_dump_hlo_module_re=jit_train_step"``, then::

    python -m benchmarks.hlo_summary DIR [--json OUT]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

#: cuDNN convolution custom-call targets (XLA:GPU's ``CudnnConvKind``).
CUDNN_CONV_TARGETS = (
    "__cudnn$convForward", "__cudnn$convBackwardInput", "__cudnn$convBackwardFilter",
    "__cudnn$convBiasActivationForward", "__cudnn$convForwardGraph",
)

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


def _conv_record(computation: str, entry: bool, name: str, type_text: str, op: str, rest: str,
                 shapes: dict[str, list[int]]) -> dict:
    """One conv's row: where, how (plain or which cuDNN target), dtype, shapes, window, labels."""
    out = _array(type_text)
    operands = []
    for m in _OPERAND.finditer(_operand_text(rest)):
        arr = _array(m.group("type")) if m.group("type") else None
        operands.append(arr[1] if arr else shapes.get(m.group("name")))
    return {
        "name": name, "computation": computation, "in_entry": entry,
        "form": "plain" if op == "convolution" else "custom-call",
        "target": _attr(rest, "custom_call_target") if op == "custom-call" else None,
        "dtype": out[0] if out else None, "shape": out[1] if out else None,
        "operand_shapes": operands,
        "window": _attr(rest, "window"), "dim_labels": _attr(rest, "dim_labels"),
        "feature_group_count": int(_attr(rest, "feature_group_count") or 1),
        "batch_group_count": int(_attr(rest, "batch_group_count") or 1),
        # jax's op name: "transpose(jvp(...))" marks a conv of the backward pass.
        "op_name": _op_name(rest),
    }


def _op_name(rest: str) -> str | None:
    m = re.search(r'op_name="([^"]*)"', _attr(rest, "metadata") or "")
    return m.group(1) if m else None


def _fusion_kind(rest: str) -> str:
    """``__triton_gemm`` etc. from a fusion's backend config, else its ``kind=`` (kLoop...)."""
    m = re.search(r'"fusion_backend_config":\{[^}]*?"kind":"([^"]+)"', rest)
    return m.group(1) if m else (_attr(rest, "kind") or "?")


def summarise_text(hlo_text: str) -> dict:
    """Summary of one optimized HLO module's text.

    Returns ``{"convolutions": {"plain": n, "custom_call": {target: n}, "total": n},
    "plain_by_window": {window: n}, "custom_calls": {target: n}, "fusions": {kind: n},
    "instructions": n, "convs": [row per conv]}``; a conv row is `_conv_record`'s dict.
    """
    shapes: dict[str, list[int]] = {}
    convs, calls, fusions, count = [], collections.Counter(), collections.Counter(), 0
    for computation, entry, name, type_text, op, rest in _instructions(hlo_text):
        count += 1
        arr = _array(type_text)
        if arr:
            shapes[name] = arr[1]
        target = _attr(rest, "custom_call_target") if op == "custom-call" else None
        if target:
            calls[target] += 1
        if op == "fusion":
            fusions[_fusion_kind(rest)] += 1
        if op == "convolution" or (target and "conv" in target.lower()):
            convs.append(_conv_record(computation, entry, name, type_text, op, rest, shapes))
    plain = [c for c in convs if c["form"] == "plain"]
    by_target = collections.Counter(c["target"] for c in convs if c["form"] == "custom-call")
    return {
        "convolutions": {"plain": len(plain), "custom_call": dict(by_target),
                         "total": len(convs)},
        "plain_by_window": dict(collections.Counter(c["window"] for c in plain)),
        "custom_calls": dict(calls), "fusions": dict(fusions), "instructions": count,
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
    """A few lines for a terminal: counts, then each plain conv's window and labels."""
    c = summary["convolutions"]
    lines = [f"{summary.get('file', 'module')}: {c['total']} convs, {c['plain']} plain, "
             f"custom calls {c['custom_call'] or '{}'}", f"fusions {summary['fusions']}"]
    for conv in summary["convs"]:
        if conv["form"] == "plain":
            lines.append(f"  plain {conv['dtype']}{conv['shape']} window={{{conv['window']}}} "
                         f"{conv['dim_labels']} fgc={conv['feature_group_count']} "
                         f"bgc={conv['batch_group_count']} in {conv['computation']} "
                         f"({conv['op_name']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.hlo_summary", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dump_dir", type=Path, help="the --xla_dump_to folder")
    p.add_argument("--module", default="train_step",
                   help="part of the dump's file name selecting the module (default train_step)")
    p.add_argument("--json", type=Path, default=None, help="write the summary to this file")
    args = p.parse_args(argv)
    summary = summarise_dir(args.dump_dir, args.module)
    print(format_summary(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
