"""The TPU topologies a program can be compiled for without a TPU, and their data-parallel mesh.

libtpu (the jax ``tpu`` extra at the installed jax's version: ``libtpu==0.0.42.*`` for jax
0.10.2) compiles for a TPU topology on a machine with none: with ``JAX_PLATFORMS=cpu``,
``jax.experimental.topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x2")``
describes the chips of that slice, `core/train/sharding.make_mesh` over its devices gives the
mesh a trial's data-parallel step runs on (`trial.run_trial`: state replicated, batch split),
and a function jitted with arguments on that mesh compiles to the per-device TPU program and
buffer plan XLA:TPU would use there (`programs.py`). Nothing here runs on a TPU.

The slices are the 4 chips the ``paper_tpu`` profile asks for (``resources.accelerators_per_trial:
4``). A JAX device is one chip on v5e (one TensorCore a chip) and on v4 (two TensorCores run as
one "megacore" device, JAX's default there; ``chip_config_name="megacore"``), and one
TensorCore on v3, where each chip's two cores are separate devices: there the 4 chips are 8
devices, each with half the chip's memory.

Per-device memory, bandwidth and dense bf16 peak are Google Cloud's published chip figures
(`TOPOLOGIES`, ``source``); the compiler reports neither for a compile-only device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

GIB = 2**30

#: Process environment of a deviceless TPU compile: the CPU stays jax's only backend (libtpu is
#: not started as a backend; it only compiles), several processes may load libtpu at once
#: (without it the second one fails on libtpu's lock file, /tmp/libtpu_lockfile: the plan runs
#: two parts at a time), and fewer of libtpu's start-up messages about the host's (absent) TPU.
DEVICELESS_ENV = {"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
                  "ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "TPU_WORKER_HOSTNAMES": "localhost"}


class LibtpuMissing(RuntimeError):
    """libtpu, which compiles for a TPU, is not importable."""


@dataclass(frozen=True)
class Topology:
    """A TPU slice of 4 chips and what one of its JAX devices has.

    Attributes:
      key: the `TOPOLOGIES` name.
      topology_name: `get_topology_desc`'s ``topology_name``.
      options: more `get_topology_desc` options (v4's megacore devices).
      device_kind: the device kind the topology gives (checked by the tests).
      chips: chips in the slice.
      devices: JAX devices in the slice (the mesh's size).
      memory_bytes: HBM of one device.
      bandwidth: HBM bandwidth of one device in bytes/s.
      bf16_peak: dense bf16 FLOP/s of one device.
      source: where the three figures come from.
    """

    key: str
    topology_name: str
    device_kind: str
    chips: int
    devices: int
    memory_bytes: int
    bandwidth: float
    bf16_peak: float
    source: str
    options: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        per = "chip" if self.devices == self.chips else "TensorCore"
        return (f"{self.device_kind}, {self.chips} chips ({self.topology_name}), "
                f"{self.memory_bytes / GIB:.0f} GiB per {per}")


TOPOLOGIES = {
    t.key: t for t in (
        Topology("v5e_2x2", "v5e:2x2", "TPU v5 lite", chips=4, devices=4,
                 memory_bytes=16 * GIB, bandwidth=819e9, bf16_peak=197e12,
                 source="Google Cloud TPU v5e page (cloud.google.com/tpu/docs/v5e): per chip "
                        "(one TensorCore) 16 GB HBM2, 819 GBps, 197 bf16 TFLOP/s"),
        Topology("v4_2x2x1", "v4:2x2x1", "TPU v4", chips=4, devices=4,
                 options={"chip_config_name": "megacore"},
                 memory_bytes=32 * GIB, bandwidth=1200e9, bf16_peak=275e12,
                 source="Google Cloud TPU v4 page (cloud.google.com/tpu/docs/v4): per chip "
                        "(one megacore device) 32 GiB HBM2, 1200 GBps, 275 bf16 TFLOP/s"),
        Topology("v3_2x2", "v3:2x2", "TPU v3", chips=4, devices=8,
                 memory_bytes=16 * GIB, bandwidth=450e9, bf16_peak=61.5e12,
                 source="Google Cloud TPU v3 page (cloud.google.com/tpu/docs/v3): per chip "
                        "32 GiB HBM, 900 GBps, 123 bf16 TFLOP/s over two TensorCores, each a "
                        "JAX device: half of each per device"),
    )
}


def topology(key: str) -> Topology:
    """The `Topology` of a `TOPOLOGIES` name."""
    if key not in TOPOLOGIES:
        raise ValueError(f"unknown TPU topology {key!r}; known: {sorted(TOPOLOGIES)}")
    return TOPOLOGIES[key]


def libtpu_requirement() -> str:
    """The libtpu requirement of the installed jax's ``tpu`` extra (``libtpu==0.0.42.*``)."""
    from importlib import metadata

    reqs = [r.split(";")[0].replace(" ", "") for r in metadata.requires("jax") or ()
            if r.startswith("libtpu")]
    return reqs[0] if reqs else "libtpu"


def check_libtpu() -> None:
    """Raise `LibtpuMissing` with the install command unless libtpu imports."""
    try:
        import libtpu  # noqa: F401
    except ImportError as err:
        req = libtpu_requirement()
        raise LibtpuMissing(
            f"compiling for a TPU without one needs libtpu, which is not importable ({err}): "
            f"`make gpu-plan-deps`, or pip install --no-deps '{req}' (the jax tpu extra of "
            "the installed jax) into a folder on PYTHONPATH") from None


def mesh(key: str) -> Any:
    """The data-parallel mesh (`sharding.make_mesh`) over the devices of ``key``'s slice; the
    process must have `DEVICELESS_ENV`'s ``JAX_PLATFORMS=cpu`` (checked)."""
    check_libtpu()
    if os.environ.get("JAX_PLATFORMS") != "cpu":
        raise RuntimeError("a deviceless TPU compile needs JAX_PLATFORMS=cpu set before jax "
                           f"starts (have {os.environ.get('JAX_PLATFORMS')!r}): see "
                           "gpu_plan.tpu.DEVICELESS_ENV")
    from diffseg3d.core.train.sharding import make_mesh
    from jax.experimental import topologies

    t = topology(key)
    topo = topologies.get_topology_desc(platform="tpu", topology_name=t.topology_name,
                                        **t.options)
    return make_mesh(topo.devices)
