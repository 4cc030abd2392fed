"""Writing the files of a run so that readers see the old or the new content, never a
mix, and an interrupted write leaves nothing behind but what was there."""

from __future__ import annotations

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
    (``0o666`` less the umask), so a shared group can read a colleague's run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files an interrupted atomic write left in ``folder`` and its
    subfolders; returns how many."""
    stale = list(Path(folder).rglob(f"{TEMP_PREFIX}*")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
