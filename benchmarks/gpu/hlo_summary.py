"""The command line of the conv summary of an optimized-HLO text (`diffseg3d.core.cost.hlo_convs`:
what XLA made of the convolutions, which ones are the pathological form, and the verdict).

Make a dump with ``XLA_FLAGS="--xla_dump_to=DIR --xla_dump_hlo_as_text
--xla_dump_hlo_module_re=jit_train_step"`` (or write ``compiled.as_text()``), then::

    python -m benchmarks.gpu.hlo_summary DIR [--json OUT]
    python -m benchmarks.gpu.hlo_summary FILE.txt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffseg3d.core.cost.hlo_convs import (  # noqa: F401 - the summary's names, re-exported
    CUDNN_CONV_KINDS,
    CUDNN_FUSION,
    MAX_HEALTHY_WINDOW,
    summarise_text,
    verdict,
)


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
             f"flagged (cuDNN forward conv, window > {MAX_HEALTHY_WINDOW}, backward pass, dilated "
             f"input): "
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
