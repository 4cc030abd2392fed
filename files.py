"""Writing the files of a run so that readers see the old or the new content, never a
mix, and an interrupted write leaves nothing behind but what was there; JSON is written
strict (no NaN or Infinity, which other JSON readers refuse).

A write that fails (a full disk, a read-only folder) raises `OSError` with the file it
was writing as ``filename``, so the command line names it in one line."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

TEMP_PREFIX = ".tmp-"
"""Name prefix of the temporary files atomic writes use (`remove_stale_temps` removes
them when an interrupted run is resumed)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, flushed to
    disk and renamed over ``path``. The file gets the mode a plain ``open`` would give
    (``0o666`` less the umask), so a shared group can read a colleague's run.

    Raises:
        OSError: the write failed (``ENOSPC``, ``EACCES``, ...), with ``filename`` set to
            ``path``; ``path`` is as it was and no temporary file is left.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None  # the subclass by errno
        raise


def _sync_folder(folder: Path) -> None:
    """Flush the folder's entry of a renamed file, so the rename survives a power cut
    (where the platform can open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename itself is done
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def finite_json(value):
    """A copy of ``value`` for strict JSON: every non-finite float (NaN, infinity, e.g.
    the LPIPS of an image too small for it) becomes None; numpy scalars become Python
    numbers; tuples become lists."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(value, indent: int | None = None) -> str:
    """``value`` as strict JSON text (`finite_json`)."""
    return json.dumps(finite_json(value), indent=indent, allow_nan=False)


def atomic_write_json(path: Path, value, indent: int | None = None) -> None:
    """`atomic_write_bytes` of ``value`` as strict JSON (`json_text`)."""
    atomic_write_text(path, json_text(value, indent))


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files an interrupted atomic write left in ``folder`` and its
    subfolders; returns how many."""
    stale = list(Path(folder).rglob(f"{TEMP_PREFIX}*")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def file_in_the_way(path: Path) -> Path | None:
    """The file that sits where a folder above ``path`` should be, so ``path`` cannot be
    created (None when there is none)."""
    above = next((p for p in Path(path).absolute().parents if p.exists()), None)
    return above if above is not None and not above.is_dir() else None


def only_stale_temps(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but temporary files of interrupted writes (a run
    killed while writing its first file): such a folder counts as empty."""
    return all(p.name.startswith(TEMP_PREFIX) for p in Path(folder).iterdir())
