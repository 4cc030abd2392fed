"""The CLI's start-up: the compiled-program cache goes where users expect and can be
turned off."""

import jax
import pytest

from sparsefield import cache


@pytest.fixture
def restore_cache_dir():
    before = jax.config.jax_compilation_cache_dir, jax.config.jax_compilation_cache_max_size
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_compilation_cache_max_size", before[1])


def test_compile_cache_lives_under_the_sparsefield_cache(monkeypatch, tmp_path, restore_cache_dir):
    monkeypatch.setenv("SPARSEFIELD_CACHE", str(tmp_path))
    monkeypatch.delenv("SPARSEFIELD_COMPILE_CACHE", raising=False)
    jax.config.update("jax_compilation_cache_dir", None)
    cache.use_compile_cache()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
    assert jax.config.jax_compilation_cache_max_size == cache.COMPILE_CACHE_BYTES


def test_compile_cache_respects_the_users_choice(monkeypatch, tmp_path, restore_cache_dir):
    monkeypatch.setenv("SPARSEFIELD_CACHE", str(tmp_path))
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    cache.use_compile_cache()  # a directory given to JAX wins
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setenv("SPARSEFIELD_COMPILE_CACHE", "off")
    cache.use_compile_cache()
    assert jax.config.jax_compilation_cache_dir is None
