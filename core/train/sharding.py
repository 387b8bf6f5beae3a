"""Data parallelism over the local devices with `jax.sharding`.

A 1-D mesh with axis `"data"` spans `jax.local_devices()`; batches are split along their first
axis, the train state is replicated. The jitted step then runs SPMD: XLA inserts the gradient
all-reduce, so the step code stays free of `pmap`/collectives.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    """1-D mesh `("data",)` over `devices` (default: all local devices)."""
    devices = jax.local_devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Shard axis 0 (the batch) over the mesh, replicate the other axes."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device (parameters, optimiser state, step)."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_divisible(batch_size: int, mesh: Mesh, setting: str = "batch size") -> None:
    """Raise a `ValueError` naming `setting` and both numbers unless batches of `batch_size`
    split evenly over the mesh's devices."""
    num_devices = mesh.devices.size
    if batch_size % num_devices:
        raise ValueError(
            f"{setting} {batch_size} is not divisible by the number of devices {num_devices}; "
            f"set it to a multiple of {num_devices}"
        )


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Put a host batch (a pytree of arrays with a common leading batch axis) on the mesh."""
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ValueError("shard_batch got an empty batch")
    sizes = {np.shape(leaf)[0] for leaf in leaves}
    if len(sizes) != 1:
        raise ValueError(f"batch leaves disagree on the batch size: {sorted(sizes)}")
    check_batch_divisible(sizes.pop(), mesh)
    return jax.device_put(batch, batch_sharding(mesh))


def place_batch(batch: Any, mesh: Mesh | None) -> Any:
    """`shard_batch` on a mesh; the host batch unchanged without one (one device). What the
    evaluation passes give their jitted programs: with parameters replicated, a split batch
    makes XLA run each device on its share of the batch only."""
    return batch if mesh is None else shard_batch(batch, mesh)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Replicate a pytree (e.g. the `TrainState`) on every device of the mesh."""
    return jax.device_put(tree, replicated_sharding(mesh))


def shard_batches(batches: Iterator[Any], mesh: Mesh) -> Iterator[Any]:
    """Lazily put each host batch of an iterator on the mesh (for `loop.fit`)."""
    for batch in batches:
        yield shard_batch(batch, mesh)
