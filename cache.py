"""Where sparsefield keeps what it can rebuild (the demo scene, compiled programs) and
JAX's persistent compilation cache. Imports nothing of the package, so every layer may use it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Where sparsefield keeps what it can rebuild: ``$SPARSEFIELD_CACHE``, by default
    ``~/.cache/sparsefield`` (the demo scene, compiled programs)."""
    return Path(os.environ.get("SPARSEFIELD_CACHE") or Path.home() / ".cache" / "sparsefield")


COMPILE_CACHE_BYTES = 2 * 2**30
"""Size cap of the compiled-program cache; the least recently used entries go first."""


def use_compile_cache() -> None:
    """Keep compiled XLA programs on disk (JAX's persistent compilation cache), so that a
    second ``train`` with the same shapes, and ``render`` / ``eval`` / ``export`` after it,
    skip compilation: the default train step alone takes 20-50 s to compile on a 2-core
    CPU, and loads from the cache in about 1 s. The cache lives in
    ``cache_root() / "xla"``; a directory the user gave JAX (``JAX_COMPILATION_CACHE_DIR``)
    wins, and ``SPARSEFIELD_COMPILE_CACHE=off`` turns it off."""
    import jax

    if os.environ.get("SPARSEFIELD_COMPILE_CACHE", "").lower() in ("0", "off", "no", "false"):
        return
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(cache_root() / "xla"))
        jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_BYTES)
