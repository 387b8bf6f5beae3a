"""Orbax checkpoints of a `TrainState` plus a small JSON of loop metadata.

Layout: `<directory>/<step>/state` (the pytree, one orbax item) and `<directory>/<step>/metadata`
(JSON: step, seed and whatever the caller's loop needs to resume, e.g. the data stream position).
Saving is synchronous on purpose: the training loop donates the state's buffers to the next step,
so an asynchronous save could read freed memory.

`save_checkpoint_folder` wraps this for runs whose checkpoints are copied away whole (Ray Tune):
one fresh folder per step, `<root>/step_0000100/orbax/...` plus a JSON file of the caller's, the
newest `keep` folders kept.

Restoring goes into an abstract target (shapes, dtypes and shardings of a freshly created state),
and the stored tree is checked against it first: a mismatch (different model, optimiser or
dtype) raises an error naming the directory and the first offending leaf rather than silently
casting or reshaping.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

_STATE = "state"
_METADATA = "metadata"
#: Subfolder of a `save_checkpoint_folder` folder that holds the orbax checkpoint.
FOLDER_STATE = "orbax"


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, empty or incompatible with the restore target."""


def _manager(directory: str | os.PathLike, max_to_keep: int | None, create: bool):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=False, create=create
    )
    handlers = {_STATE: ocp.StandardCheckpointHandler(), _METADATA: ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(
        os.path.abspath(os.fspath(directory)), options=options, item_handlers=handlers
    )


def save_checkpoint(
    directory: str | os.PathLike,
    state: Any,
    metadata: dict | None = None,
    *,
    max_to_keep: int | None = 3,
) -> int:
    """Save `state` (a `TrainState`) under `directory/<state.step>` and return that step.

    `metadata` must be JSON-serialisable; `step` is always added. Older checkpoints beyond
    `max_to_keep` are deleted (None keeps all).
    """
    step = int(jax.device_get(state.step))
    meta = dict(metadata or {})
    meta["step"] = step
    with _manager(directory, max_to_keep, create=True) as manager:
        manager.save(
            step,
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardSave(state), _METADATA: ocp.args.JsonSave(meta)}
            ),
            force=True,
        )
        manager.wait_until_finished()
    return step


def save_checkpoint_folder(
    root: str | os.PathLike, state: Any, info: dict, *, info_name: str, keep: int,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Save `state` into a fresh folder `<root>/step_<step:07d>` (orbax in `FOLDER_STATE`, replacing
    a folder of the same step) with `{**info, "step": step}` as JSON in `<folder>/<info_name>`;
    delete all but the newest `keep` (>= 1) step folders of `root`. Returns the folder.

    `write_extra(folder)` writes further files before the info JSON. The JSON is written last
    and atomically (temporary name, then rename), so a folder with it is complete: a process
    killed mid-save leaves a folder that readers skip. It also records every file's size
    (`FILES_KEY`, `file_sizes`), so a file damaged afterwards (cut short, deleted) is found
    before a restore tries it (`damaged_file`).
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    step = int(jax.device_get(state.step))
    directory = Path(root) / f"step_{step:07d}"
    if directory.exists():
        shutil.rmtree(directory)
    save_checkpoint(directory / FOLDER_STATE, state, {"step": step}, max_to_keep=1)
    if write_extra is not None:
        write_extra(directory)
    partial = directory / f".{info_name}.partial"
    partial.write_text(json.dumps({**info, "step": step, FILES_KEY: file_sizes(directory)},
                                  indent=2))
    os.replace(partial, directory / info_name)
    for old in sorted(Path(root).glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return directory


#: Key of a checkpoint's info JSON holding `file_sizes` of its folder when it was saved.
FILES_KEY = "files"


def file_sizes(directory: str | os.PathLike) -> dict[str, int]:
    """Size in bytes of every file under `directory`, by POSIX path relative to it (hidden
    partial files excluded)."""
    directory = Path(directory)
    return {path.relative_to(directory).as_posix(): path.stat().st_size
            for path in sorted(directory.rglob("*"))
            if path.is_file() and not path.name.endswith(".partial")}


def damaged_file(directory: str | os.PathLike, info: dict) -> str | None:
    """Why the checkpoint folder `directory` no longer holds what its info JSON (`info`)
    recorded, e.g. `orbax/.../d/abc: 812 of 1624 bytes`; None when intact or when `info` has no
    `FILES_KEY` (folders saved before it existed)."""
    recorded = info.get(FILES_KEY)
    if not isinstance(recorded, dict):
        return None
    for name, size in recorded.items():
        path = Path(directory) / name
        if not path.is_file():
            return f"{name}: missing"
        if path.stat().st_size != size:
            return f"{name}: {path.stat().st_size} of {size} bytes"
    return None


def params_digest(params: Any) -> str:
    """sha256 (16 hex) over every parameter's bytes in tree order: equal iff bit-identical (a
    resumed run's parameters against an uninterrupted one's)."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(jax.device_get(params)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()[:16]


def latest_checkpoint_step(directory: str | os.PathLike) -> int | None:
    """The newest saved step in `directory`, or None when it holds no checkpoint (or is absent)."""
    if not os.path.isdir(directory):
        return None
    with _manager(directory, None, create=False) as manager:
        return manager.latest_step()


def abstract_like(tree: Any) -> Any:
    """`jax.ShapeDtypeStruct` leaves (with shardings when the leaves have one) for `tree`."""

    def to_struct(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
        return jax.ShapeDtypeStruct(np.shape(x), dtype, sharding=getattr(x, "sharding", None))

    return jax.tree_util.tree_map(to_struct, tree)


def _path_name(path) -> str:
    """`a/0/w` for a key path, whatever node types it crosses: orbax reports the stored tree as
    nested dicts/lists while the target has dataclasses and named tuples."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def _check_compatible(directory, step, stored: Any, target: Any) -> None:
    stored_flat = {
        _path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(stored)[0]
    }
    target_flat = jax.tree_util.tree_flatten_with_path(target)[0]
    target_keys = {_path_name(path) for path, _ in target_flat}
    missing = sorted(target_keys - set(stored_flat))
    extra = sorted(set(stored_flat) - target_keys)
    if missing or extra:
        raise CheckpointError(
            f"checkpoint {directory} (step {step}) does not match the restore target: "
            f"missing leaves {missing[:5]}, unexpected leaves {extra[:5]}"
        )
    for path, want in target_flat:
        key = _path_name(path)
        have = stored_flat[key]
        if tuple(have.shape) != tuple(want.shape) or np.dtype(have.dtype) != np.dtype(want.dtype):
            raise CheckpointError(
                f"checkpoint {directory} (step {step}) leaf {key} is {have.dtype}{list(have.shape)}"
                f" but the restore target expects {want.dtype}{list(want.shape)}"
            )


def restore_checkpoint(
    directory: str | os.PathLike, target: Any, step: int | None = None
) -> tuple[Any, dict]:
    """Restore `(state, metadata)` from `directory` at `step` (default: the latest).

    `target` is a `TrainState` (concrete or of `jax.ShapeDtypeStruct`s) giving the tree structure,
    shapes, dtypes and shardings to restore into; it is checked against the stored tree first.
    """
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    abstract = abstract_like(target)
    with _manager(directory, None, create=False) as manager:
        steps = manager.all_steps()
        if not steps:
            raise CheckpointError(f"checkpoint directory {directory} holds no checkpoint")
        step = manager.latest_step() if step is None else int(step)
        if step not in steps:
            raise CheckpointError(
                f"checkpoint directory {directory} has no step {step}; it has {sorted(steps)}"
            )
        stored = manager.item_metadata(step)[_STATE]
        if stored is None:
            raise CheckpointError(f"checkpoint {directory} (step {step}) has no '{_STATE}' item")
        _check_compatible(directory, step, stored, abstract)
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardRestore(abstract), _METADATA: ocp.args.JsonRestore()}
            ),
        )
    return restored[_STATE], dict(restored[_METADATA] or {})
