"""The parts that are commands rather than measurements in `child`: the per-layer conv timings
(``benchmarks/gpu/conv_layers.py``; all rows, or the rows a configuration's ``extra`` names) and
the core tests on the GPU (the command of ``make test-gpu``), with pytest's summary line read
into passed / failed counts.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

#: ``make test-gpu``'s tests; the small (CPU) rehearsal runs one quick folder of them.
TEST_PATHS = ("tests/core",)
SMALL_TEST_PATHS = ("tests/core/diffusion",)
#: ``cpu`` is listed so that ``jax.debug.callback`` (it places operands on a CPU device) works.
GPU_PLATFORMS = "cuda,cpu"

_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")


def gpu_conv_forms() -> tuple[str, ...]:
    """The conv forms of ``core/models/conv.py`` worth timing on a GPU: every concrete form
    but the CPU's slice form, the accelerator pick first (``lax3d_s2d``, ``lax3d``)."""
    from diffseg3d.core.models.conv import CONCRETE_CONV_IMPLS, resolve_conv_impl

    pick = resolve_conv_impl("auto", "gpu")
    return (pick, *(f for f in CONCRETE_CONV_IMPLS if f not in ("slices", pick)))


def conv_layers_command(small: bool, json_path: Path, timeout_s: float,
                        extra: dict | None = None) -> list[str]:
    """The conv-layer timings with ``--json json_path``, their own budget 20 s inside
    ``timeout_s`` (so they write what they measured before the kill), the GPU forms at full
    size and ``--small`` for the rehearsal; ``extra["kinds"]`` / ``extra["levels"]`` select
    rows (``conv_updown``: down/up at levels 0-2)."""
    cmd = [sys.executable, "-m", "benchmarks.gpu.conv_layers", "--json", str(json_path),
           "--budget-s", f"{max(timeout_s - 20, 5):.0f}"]
    extra = extra or {}
    if extra.get("kinds"):
        cmd += ["--kinds", *extra["kinds"]]
    if extra.get("levels"):
        cmd += ["--levels", *map(str, extra["levels"])]
    return cmd + (["--small"] if small else ["--impl", *gpu_conv_forms()])


def read_conv_layers(json_path: Path, stdout: str):
    """The probe's JSON: the file it wrote, else the last stdout line that parses, else None."""
    if json_path.is_file():
        return json.loads(json_path.read_text())
    for line in reversed(stdout.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def pytest_command(small: bool) -> list[str]:
    """``python -m pytest <core tests> -q``, as ``make test-gpu`` runs it."""
    paths = SMALL_TEST_PATHS if small else TEST_PATHS
    return [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider"]


def pytest_env(small: bool) -> dict[str, str]:
    """``JAX_PLATFORMS``: cuda with cpu on the GPU; cpu alone for the CPU rehearsal."""
    return {"JAX_PLATFORMS": "cpu" if small else GPU_PLATFORMS}


def pytest_counts(stdout: str) -> dict[str, int] | None:
    """Counts of pytest's final summary line (``== 3 failed, 140 passed, 2 skipped in 9.1s ==``
    or, with ``-q``, ``3 failed, 140 passed in 9.1s``): ``{"passed", "failed", "errors",
    "skipped"}`` (0 where absent); None when there is no summary line."""
    for line in reversed(stdout.splitlines()):
        if re.search(r"\b(passed|failed|errors?|skipped|no tests ran)\b", line) and \
                re.search(r"\bin [\d.]+s\b", line):
            found: dict[str, int] = {}
            for n, word in _COUNT.findall(line):
                key = "errors" if word.startswith("error") else word
                found[key] = found.get(key, 0) + int(n)
            return {k: found.get(k, 0) for k in ("passed", "failed", "errors", "skipped")}
    return None
