"""Checkpoints: a run's training state as named arrays, versioned, written atomically.

A checkpoint is ``RUN/checkpoints/step_XXXXXXX.npz`` holding one array per leaf of the
method's state, named by its path in the state (``params/encoding/table``,
``optimizer/0/mu/color_mlp/1/b``, ``step``), plus ``__format__`` (`FORMAT`),
``__method__`` and ``__history__`` (the training history up to that step, so a kill
between two writes cannot lose history). Reading matches arrays to a template state by
name: adding a component to a method leaves older checkpoints loadable (the new component
keeps its fresh value, with a note); a component whose shape changed is an error that
names it.

Format 1 (sparsefield before named checkpoints) stored the leaves in order as
``arr_0 .. arr_N``; `read` returns them as they are and a method maps them with its
``legacy_layout``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import jax
import numpy as np

from .errors import UsageError
from .files import atomic_write_bytes, json_text

FORMAT = 2
"""Version of the checkpoint layout this code writes."""

FOLDER = "checkpoints"


class CheckpointError(UsageError):
    """A checkpoint that cannot be read or does not fit the run (one line)."""


class MismatchedCheckpoint(CheckpointError):
    """A checkpoint that reads but is not this run's to load (another method wrote it,
    or a newer sparsefield): not damage to skip, a mistake to name."""


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_names(tree) -> list[str]:
    """``path/to/leaf`` per leaf of ``tree``, in `jax.tree_util.tree_leaves` order."""
    return ["/".join(_key_name(k) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def named_arrays(tree) -> dict[str, np.ndarray]:
    """``name -> numpy array`` for every leaf of ``tree`` (`leaf_names`)."""
    leaves = jax.device_get(jax.tree_util.tree_leaves(tree))
    return {name: np.asarray(x) for name, x in zip(leaf_names(tree), leaves)}


def fill(template, arrays: dict[str, np.ndarray], source) -> tuple[object, list[str]]:
    """``template`` with each leaf replaced by the array of the same name.

    Returns:
        The filled tree (numpy leaves) and the names absent from ``arrays`` (those keep
        the template's values).

    Raises:
        CheckpointError: an array's shape differs from the template's leaf.
    """
    leaves, treedef = jax.tree_util.tree_flatten(template)
    names, out, missing = leaf_names(template), [], []
    for name, leaf in zip(names, leaves):
        if name not in arrays:
            missing.append(name)
            out.append(np.asarray(leaf))
            continue
        stored = arrays[name]
        if stored.shape != np.shape(leaf):
            raise CheckpointError(f"{source}: '{name}' has shape {stored.shape}, the run's config gives "
                                  f"{np.shape(leaf)}; the checkpoint does not match the run's config")
        out.append(stored)
    return jax.tree_util.tree_unflatten(treedef, out), missing


def path_for(run: Path, step: int) -> Path:
    return Path(run) / FOLDER / f"step_{step:07d}.npz"


def step_of(path: Path) -> int:
    """The training step a checkpoint was written at (from its name)."""
    return int(Path(path).stem.split("_")[-1])


def list_checkpoints(run: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((Path(run) / FOLDER).glob("step_*.npz"))


def write(run: Path, step: int, arrays: dict[str, np.ndarray], method: str, history: dict | None = None,
          keep: int = 2) -> Path:
    """Write ``checkpoints/step_XXXXXXX.npz`` atomically and keep the newest ``keep``."""
    payload = dict(arrays)
    payload["__format__"] = np.asarray(FORMAT)
    payload["__method__"] = np.asarray(method)
    if history is not None:
        payload["__history__"] = np.frombuffer(json_text(history).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **payload)
    path = path_for(run, step)
    atomic_write_bytes(path, buf.getvalue())
    for old in list_checkpoints(run)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def read(path: Path, method: str | None = None) -> tuple[int, dict[str, np.ndarray], dict | None]:
    """``(format, arrays, history or None)`` of a checkpoint file; format 1 files give
    their ``arr_i`` arrays (and any row-packing arrays) as stored.

    Args:
        path: the checkpoint file.
        method: the run's method; a checkpoint that names another is refused.

    Raises:
        CheckpointError: the file is missing, truncated or not a checkpoint.
        MismatchedCheckpoint: another method or a newer sparsefield wrote it.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        version = int(arrays.pop("__format__", 1))
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    stored = arrays.pop("__method__", None)
    if method is not None and stored is not None and str(stored) != method:
        raise MismatchedCheckpoint(f"{path}: a checkpoint of method '{stored}', but the run's method is "
                                   f"'{method}'; it does not belong in this run")
    raw = arrays.pop("__history__", None)
    try:
        history = None if raw is None else json.loads(raw.tobytes().decode())
    except (ValueError, RecursionError):
        history = None
    if not (isinstance(history, dict) and isinstance(history.get("train"), list)):
        history = None
    if version > FORMAT:
        raise MismatchedCheckpoint(f"{path}: written by a newer sparsefield (checkpoint format {version}); "
                                   f"upgrade sparsefield")
    return version, arrays, history


def read_latest(run: Path, warn=print, method: str | None = None
                ) -> tuple[Path, int, dict[str, np.ndarray], dict | None] | None:
    """The newest checkpoint of ``run`` that reads, as ``(path, format, arrays, history)``;
    a damaged newer one is skipped with a warning. None when the run has none.

    Raises:
        CheckpointError: checkpoints exist but none of them reads.
        MismatchedCheckpoint: the newest readable one is another ``method``'s or a
            newer sparsefield's.
    """
    found = list_checkpoints(run)
    errors = []
    for path in reversed(found):
        try:
            return (path, *read(path, method))
        except MismatchedCheckpoint:
            raise
        except CheckpointError as err:
            errors.append(str(err))
            if path != found[0]:
                warn(f"warning: {err}; using the previous checkpoint")
    if len(errors) > 1:
        raise CheckpointError(f"none of the {len(errors)} checkpoints reads; the newest: {errors[0]}")
    if errors:
        raise CheckpointError(errors[0])
    return None
