"""The GPUs a program can be compiled for without one: XLA's target configs kept as data
(``targets/*.txtpb``), what each says about its card, and its device for a deviceless compile.

XLA's GPU compiler runs on a machine with no GPU and no driver: given a card's target config
(the `GpuTargetConfigProto` XLA's own device specs are written in),
``jax.experimental.topologies.get_topology_desc(..., "cuda", target_config=TEXT)`` describes
one such device, and a function jitted with arguments placed on it compiles to the optimized
GPU HLO and buffer plan XLA would use on that card (`programs.py`). It needs the CUDA PJRT
plugin at the installed jaxlib's version (``jax-cuda12-plugin``, ``jax-cuda12-pjrt``), no
NVIDIA libraries, and the environment of `DEVICELESS_ENV` set before jax starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

#: Process environment of a deviceless GPU compile, set before jax is imported: the CPU stays
#: jax's only backend (the CUDA plugin's own start fails without a driver, and
#: `get_topology_desc` then refuses "cuda"), no check of the CUDA libraries' versions (there
#: are none), and no autotuning (it runs kernels on the device).
DEVICELESS_ENV = {"JAX_PLATFORMS": "cpu", "JAX_SKIP_CUDA_CONSTRAINTS_CHECK": "1",
                  "XLA_FLAGS": "--xla_gpu_autotune_level=0", "TF_CPP_MIN_LOG_LEVEL": "3"}

#: Compile options of a deviceless compile (autotuning off also where XLA_FLAGS was read
#: before `DEVICELESS_ENV` could be set).
COMPILER_OPTIONS = {"xla_gpu_autotune_level": 0, "xla_gpu_enable_triton_gemm": False}

#: XLA's element type numbers (`xla.PrimitiveType`) keying the target configs' unit rates.
_BF16 = 16

#: Dense bf16 tensor-core peaks (FLOP/s) from NVIDIA's data sheets, for target configs that
#: carry no matrix-unit rates (A100: 312 TFLOP/s; H100 SXM and H200: 989.4 TFLOP/s).
STATED_BF16_PEAK = {"a100_sxm_80": 312e12, "h100_sxm": 989.4e12, "h200": 989.4e12}

#: Card name -> target config file in ``targets/``.
CARDS = {"a100_sxm_80": "a100_sxm_80.txtpb", "h100_sxm": "h100_sxm.txtpb", "h200": "h200.txtpb"}


class PluginMissing(RuntimeError):
    """The CUDA PJRT plugin that compiles for a GPU is not importable."""


@dataclass(frozen=True)
class Card:
    """What a target config says about its card (and the peak this project uses for it).

    Attributes:
      key: the `CARDS` name.
      name: the device name the config gives (``NVIDIA H100 80GB HBM3``).
      memory_bytes: device memory.
      bandwidth: memory bandwidth in bytes/s.
      bf16_peak: dense bf16 FLOP/s: from the config's matrix-unit rates (2 FLOPs per FMA),
        else `STATED_BF16_PEAK`.
      peak_source: ``target config`` or ``data sheet``.
      compute_capability: e.g. ``9.0``.
    """

    key: str
    name: str
    memory_bytes: int
    bandwidth: float
    bf16_peak: float
    peak_source: str
    compute_capability: str


def target_config(card: str) -> str:
    """The target config text of ``card`` (a `CARDS` name)."""
    if card not in CARDS:
        raise ValueError(f"unknown GPU card {card!r}; known: {sorted(CARDS)}")
    return resources.files("diffseg3d.experiments.gpu_plan").joinpath(
        "targets", CARDS[card]).read_text()


def _field(text: str, key: str) -> str | None:
    m = re.search(rf"^\s*{key}:\s*(\S+)\s*$", text, re.M)
    return m.group(1).strip('"') if m else None


def _matrix_peak(text: str, element_type: int) -> float | None:
    """2 x clock x units per core x ops per clock x cores of the matrix-unit rate of
    ``element_type``, or None when the config has none."""
    block = re.search(r"matrix_unit_description \{(.*?)\n  \}", text, re.S)
    cores = _field(text, "core_count")
    if not block or not cores:
        return None
    for rate in re.finditer(r"rate_infos \{\s*key: (\d+)\s*value \{(.*?)\}", block.group(1),
                            re.S):
        if int(rate.group(1)) == element_type:
            body = rate.group(2)
            clock, units, ops = (float(_field(body, k)) for k in
                                 ("clock_rate_ghz", "units_per_core", "ops_per_clock"))
            return 2.0 * clock * 1e9 * units * ops * int(cores)
    return None


def card(key: str) -> Card:
    """The `Card` of a `CARDS` name, read from its target config."""
    text = target_config(key)
    name = re.search(r'^device_description_str:\s*"([^"]+)"', text, re.M)
    major = re.search(r"cuda_compute_capability \{\s*major: (\d+)(?:\s*minor: (\d+))?", text)
    peak = _matrix_peak(text, _BF16)
    return Card(
        key=key, name=name.group(1) if name else key,
        memory_bytes=int(_field(text, "device_memory_size")),
        bandwidth=float(_field(text, "memory_bandwidth")),
        bf16_peak=peak if peak is not None else STATED_BF16_PEAK[key],
        peak_source="target config" if peak is not None else "data sheet",
        compute_capability=f"{major.group(1)}.{major.group(2) or 0}" if major else "?",
    )


def check_plugin() -> None:
    """Raise `PluginMissing` with the install command unless the CUDA PJRT plugin imports."""
    try:
        import jax_plugins.xla_cuda12  # noqa: F401
    except ImportError as err:
        import jaxlib

        v = jaxlib.__version__
        raise PluginMissing(
            f"compiling for a GPU without one needs the CUDA PJRT plugin of jaxlib {v}, which "
            f"is not importable ({err}): `make gpu-plan-deps`, or pip install --no-deps "
            f"jax-cuda12-plugin=={v} jax-cuda12-pjrt=={v} into a folder on PYTHONPATH"
        ) from None


def device(key: str) -> Any:
    """The one device of a 1x1x1 topology of ``key``'s card, for `jax.ShapeDtypeStruct`
    shardings; the process must have `DEVICELESS_ENV` (checked: a clear error otherwise)."""
    import os

    check_plugin()
    if os.environ.get("JAX_PLATFORMS") != "cpu":
        raise RuntimeError("a deviceless GPU compile needs JAX_PLATFORMS=cpu set before jax "
                           f"starts (have {os.environ.get('JAX_PLATFORMS')!r}): see "
                           "gpu_plan.targets.DEVICELESS_ENV")
    from jax.experimental import topologies

    topo = topologies.get_topology_desc(key, "cuda", target_config=target_config(key),
                                        topology="1x1x1")
    return topo.devices[0]
