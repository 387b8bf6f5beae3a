"""The instructions of an optimized HLO module text, for the analyses of `diffseg3d.core.cost`.

An instruction line reads ``%name = TYPE opcode(operands), attr=value, ...`` inside a
computation ``%comp (params) -> type {`` (``ENTRY`` marks the one the executable runs). TYPE is
an array ``bf16[1,8,8]{2,1,0}`` or a tuple ``(bf16[..]{..}, u8[0]{0})``. Only what the analyses
need is parsed: names, the first array of a type, operand names and their inline types, and
attribute values.
"""

from __future__ import annotations

import collections
import math
import re
from typing import NamedTuple

# `%name = TYPE opcode(` where TYPE is `bf16[1,2]{1,0}` or a tuple `(bf16[..]{..}, u8[0]{0})`.
_INSTR = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*"
    r"(?P<type>\((?:[^()]|\([^()]*\))*\)|\S+)\s+(?P<op>[\w\-]+)\((?P<rest>.*)$"
)
# `ENTRY %main.12 (p: f32[2]) -> f32[2] {` or `%fused_computation.3 (...) -> ... {`.
_COMPUTATION = re.compile(r"^(?P<entry>ENTRY\s+)?%?(?P<name>[\w.\-]+)\s+\(.*\{\s*$")
_ARRAY = re.compile(r"(?P<dtype>[a-z]+\d*(?:e\d+m\d+\w*)?)\[(?P<dims>[\d,]*)\]")
_OPERAND = re.compile(r"(?:(?P<type>[a-z]+\d*\w*\[[\d,]*\](?:\{[^}]*\})?)\s+)?%(?P<name>[\w.\-]+)")

#: Bytes per element of HLO element types (sub-byte and unknown types count as 1).
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
               "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}


class Instruction(NamedTuple):
    """One instruction: its computation, whether that is the entry, and the parsed line."""

    computation: str
    in_entry: bool
    name: str
    type_text: str
    op: str
    rest: str


def attr(rest: str, key: str) -> str | None:
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


def array(type_text: str) -> tuple[str, list[int]] | None:
    """``bf16[1,8,8]{2,1,0}`` (or the first element of a tuple) -> ("bf16", [1, 8, 8])."""
    m = _ARRAY.search(type_text)
    if not m:
        return None
    return m.group("dtype"), [int(d) for d in m.group("dims").split(",") if d]


def type_bytes(type_text: str) -> int:
    """Bytes of every array in a type (all elements of a tuple)."""
    return sum(DTYPE_BYTES.get(m.group("dtype"), 1)
               * math.prod(int(d) for d in m.group("dims").split(",") if d)
               for m in _ARRAY.finditer(type_text))


def operand_text(rest: str) -> str:
    """The operand list of ``op(a, b), attrs``: ``rest`` up to its closing parenthesis."""
    depth = 1
    for i, ch in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return rest[:i]
    return rest


def instructions(hlo_text: str):
    """Yield every `Instruction` of a module text, in order."""
    computation, entry = None, False
    for line in hlo_text.splitlines():
        m = _COMPUTATION.match(line)
        if m and " = " not in line.split("(")[0]:
            computation, entry = m.group("name"), bool(m.group("entry"))
            continue
        m = _INSTR.match(line)
        if m and computation is not None:
            yield Instruction(computation, entry, m.group("name"), m.group("type"),
                              m.group("op"), m.group("rest"))


def callee(rest: str, key: str = "calls") -> str:
    """The computation an instruction calls (``calls=%fused_computation.3`` -> its name)."""
    return (attr(rest, key) or "").lstrip("%")


class HloModule:
    """The instructions of one HLO module text, by name and by computation."""

    def __init__(self, hlo_text: str):
        self.rows = list(instructions(hlo_text))
        self.by_name = {r.name: r for r in self.rows}
        self.by_computation: dict[str, list[Instruction]] = collections.defaultdict(list)
        for r in self.rows:
            self.by_computation[r.computation].append(r)
        #: Fused computation -> the fusion instruction calling it.
        self.callers = {callee(r.rest): r for r in self.rows if r.op == "fusion"}
        #: The shape of every named array value (inline operand types fill gaps).
        self.shapes = {r.name: arr[1] for r in self.rows if (arr := array(r.type_text))}

    @property
    def entry(self) -> str | None:
        return next((r.computation for r in self.rows if r.in_entry), None)

    def operand_names(self, rest: str) -> list[str]:
        return [m.group("name") for m in _OPERAND.finditer(operand_text(rest))]

    def operand_shapes(self, rest: str) -> list[list[int] | None]:
        """Each operand's dimensions: its inline type, else the named value's."""
        out = []
        for m in _OPERAND.finditer(operand_text(rest)):
            arr = array(m.group("type")) if m.group("type") else None
            out.append(arr[1] if arr else self.shapes.get(m.group("name")))
        return out

    def operand_bytes(self, rest: str) -> int:
        total = 0
        for m in _OPERAND.finditer(operand_text(rest)):
            if m.group("type"):
                total += type_bytes(m.group("type"))
            elif (row := self.by_name.get(m.group("name"))) is not None:
                total += type_bytes(row.type_text)
        return total
