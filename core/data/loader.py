"""Host-side batching of a prepared data set: seeded infinite training stream, finite eval.

Training batch i holds the global sample positions g = i * B ... i * B + B - 1 of an infinite
sequence of epochs; position g is case `perm_e[g % n]` with e = g // n and
`perm_e = np.random.default_rng([seed, e]).permutation(n)`. So batch i depends only on
(seed, i): a run resumed at `start_step` yields exactly the batches an uninterrupted run would.
A background thread prepares up to `prefetch` batches ahead so the device never waits for the
host. Split arrays are held in memory when they are smaller than `IN_MEMORY_BYTES`, otherwise
read from the memory-mapped cache.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
from diffseg3d.core.data.dataset import PreparedDataset

#: Split arrays up to this size (images + labels) are copied into RAM; larger stay memory-mapped.
IN_MEMORY_BYTES = 4 << 30


def _split_arrays(dataset: PreparedDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = dataset.raw_arrays(split)
    if images.nbytes + labels.nbytes <= IN_MEMORY_BYTES:
        images, labels = np.asarray(images), np.asarray(labels)
    if len(images) == 0:
        raise ValueError(f"split {split!r} of {dataset.root} has no cases")
    return images, labels


def batch_case_indices(step: int, batch_size: int, num_cases: int, seed: int,
                       shuffle: bool = True) -> np.ndarray:
    """Case indices (batch_size,) of training batch `step` (rule of the module docstring)."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, num_cases)
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        order = (np.random.default_rng([seed, int(epoch)]).permutation(num_cases) if shuffle
                 else np.arange(num_cases))
        sel = epochs == epoch
        out[sel] = order[offsets[sel]]
    return out


def _gather(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    return {"image": np.asarray(images[idx], dtype=np.float32)[..., None],
            "label": np.asarray(labels[idx], dtype=np.int32)}


def _prefetched(produce, start: int, depth: int) -> Iterator:
    """Yield produce(start), produce(start + 1), ... computed `depth` ahead in a thread."""
    if depth <= 0:
        step = start
        while True:
            yield produce(step)
            step += 1
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        step = start
        while not stop.is_set():
            try:
                item = (True, produce(step))
            except BaseException as err:  # surfaced in the consumer thread
                item = (False, err)
            while not stop.is_set():
                try:
                    buffer.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not item[0]:
                return
            step += 1

    thread = threading.Thread(target=work, name="diffseg3d-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, value = buffer.get()
            if not ok:
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


def batch_iterator(dataset: PreparedDataset, split: str, batch_size: int, seed: int,
                   start_step: int = 0, shuffle: bool = True,
                   prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
    """Infinite training batches {"image": (B, *S, 1) float32, "label": (B, *S) int32}.

    Batch i (counting from 0 at the start of training) depends only on (seed, i); the first
    batch yielded is batch `start_step`. `prefetch` batches are prepared in a background thread
    (0: synchronous). Close the generator (or let it be collected) to stop the thread.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images, labels = _split_arrays(dataset, split)
    n = len(images)
    return _prefetched(
        lambda step: _gather(images, labels, batch_case_indices(step, batch_size, n, seed,
                                                                shuffle)),
        start_step, prefetch)


def eval_batches(dataset: PreparedDataset, split: str,
                 batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Finite batches in `dataset.case_ids(split)` order; the last one is padded.

    Each batch: "image" (B, *S, 1) float32, "label" (B, *S) int32, "valid" (B,) bool (False for
    padding, which repeats the last case) and "index" (B,) int32 position in `case_ids(split)`
    (-1 for padding). All values are arrays so a batch can be passed through jax as a pytree.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images, labels = dataset.raw_arrays(split)
    n = len(images)
    for begin in range(0, n, batch_size):
        index = np.arange(begin, begin + batch_size)
        valid = index < n
        batch = _gather(images, labels, np.minimum(index, n - 1))
        batch["valid"] = valid
        batch["index"] = np.where(valid, index, -1).astype(np.int32)
        yield batch
