"""Console entry point: start the CLI with a fast memory allocator when one is installed.

JAX on CPU allocates a fresh buffer for nearly every op output; with glibc's malloc each
large buffer is page-faulted in again, which made small-MLP training steps several times
slower on our benchmark machine. tcmalloc keeps those pages, so the CLI re-executes itself
once with tcmalloc in ``LD_PRELOAD`` when the library is present (Debian / Ubuntu package
``libtcmalloc-minimal4``). Set ``SPARSEFIELD_MALLOC=system`` to opt out, or
``SPARSEFIELD_MALLOC=/path/to/lib.so`` to choose another allocator. This module imports
nothing heavy, so the check costs nothing when no re-execution happens.

Ctrl-C or SIGTERM while the CLI is still loading (importing JAX takes seconds) stop at
once with one line and exit code 130 or 143, as they do later; nothing has been written
then.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import signal
import sys
from pathlib import Path

_SEARCH = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
    "/usr/local/lib/libtcmalloc_minimal.so.4",
    "/opt/homebrew/lib/libtcmalloc_minimal.4.dylib",
)


def find_allocator() -> str | None:
    """Path of the allocator to preload, or None (opted out or none installed)."""
    choice = os.environ.get("SPARSEFIELD_MALLOC", "")
    if choice == "system":
        return None
    if choice:
        return choice if os.path.exists(choice) else None
    for path in _SEARCH:
        if os.path.exists(path):
            return path
    found = glob.glob(os.path.join(sys.prefix, "lib", "libtcmalloc_minimal.so*"))
    return found[0] if found else ctypes.util.find_library("tcmalloc_minimal")


def ensure_fast_malloc() -> None:
    """Re-execute this very command with the allocator preloaded (once)."""
    lib = find_allocator()
    preload = os.environ.get("LD_PRELOAD", "")
    if lib is None or lib in preload or os.environ.get("_SPARSEFIELD_REEXEC"):
        return
    env = dict(os.environ, LD_PRELOAD=f"{lib}:{preload}" if preload else lib, _SPARSEFIELD_REEXEC="1")
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:
        return  # could not re-execute: carry on with the system allocator


STOPS = {signal.SIGINT: ("interrupted", 130), signal.SIGTERM: ("terminated", 143)}
"""What Ctrl-C and SIGTERM say and exit with outside training (which saves a checkpoint
first)."""


def _stop_now(signum, frame) -> None:
    """While the CLI loads nothing has been written, so a signal stops the process at
    once (libraries that are importing turn a KeyboardInterrupt into import errors)."""
    word, code = STOPS[signum]
    print(f"error: {word}", file=sys.stderr, flush=True)
    os._exit(code)


def _terminated(signum, frame) -> None:
    word, code = STOPS[signum]
    print(f"error: {word}", file=sys.stderr)
    raise SystemExit(code)


def _handle(sig: int, handler) -> None:
    """Install ``handler`` for ``sig`` unless the signal is ignored (a background job of
    a script is meant not to see the terminal's Ctrl-C)."""
    if signal.getsignal(sig) is not signal.SIG_IGN:
        signal.signal(sig, handler)


def main() -> None:
    ensure_fast_malloc()
    _handle(signal.SIGINT, _stop_now)
    _handle(signal.SIGTERM, _stop_now)
    from .cli import main as cli_main

    _handle(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt: one line from the CLI
    _handle(signal.SIGTERM, _terminated)
    cli_main()


if __name__ == "__main__":
    main()
