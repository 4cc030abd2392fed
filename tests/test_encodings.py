"""Conformance of every encoding, and hash-grid specifics (hashing, dense levels)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from sparsefield.fields.encoding import ALL_ENCODINGS
from sparsefield.fields.frequency import Frequency
from sparsefield.fields.grid import HASH_PRIMES, HashGrid, GridSpec, grid_index, level_resolutions
from sparsefield.fields.sh import SphericalHarmonics

SMALL = {
    HashGrid: dict(levels=4, features=2, log2_table_size=10, base_res=4, max_res=32),
    Frequency: dict(num_freqs=4),
}


def make(cls, dim=3):
    return cls(**SMALL[cls], dim=dim)


@pytest.mark.parametrize("cls", ALL_ENCODINGS)
@pytest.mark.parametrize("dim", [2, 3])
def test_conformance(cls, dim):
    enc = make(cls, dim)
    params = enc.init(jax.random.PRNGKey(0))
    if cls is HashGrid:  # non-trivial table so outputs differ between points
        params = {"table": jax.random.normal(jax.random.PRNGKey(3), params["table"].shape)}
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 5, dim))
    out = enc.apply(params, x)
    assert out.shape == (2, 5, enc.out_dim) and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))
    # any batch shape: flat and nested batches agree
    np.testing.assert_allclose(enc.apply(params, x.reshape(10, dim)).reshape(out.shape), out, atol=1e-6)
    np.testing.assert_allclose(enc.apply(params, x[0, 0]), out[0, 0], atol=1e-6)
    # jit == eager
    np.testing.assert_allclose(jax.jit(enc.apply)(params, x), out, atol=1e-6)
    # gradients exist and are finite, w.r.t. parameters and inputs
    g_x = jax.grad(lambda y: jnp.sum(enc.apply(params, y) ** 2))(x)
    assert np.all(np.isfinite(g_x)) and np.any(g_x != 0)
    if params:
        g_p = jax.grad(lambda p: jnp.sum(enc.apply(p, x) ** 2))(params)
        assert all(np.all(np.isfinite(v)) for v in jax.tree_util.tree_leaves(g_p))


@pytest.mark.parametrize("dim", [2, 3])
def test_hash_grid_gradients_match_finite_differences(dim):
    with jax.enable_x64(True):
        enc = HashGrid(levels=3, features=2, log2_table_size=6, base_res=2, max_res=12, dim=dim)
        table = jax.random.normal(jax.random.PRNGKey(0), (3, 64, 2), jnp.float64)
        x = jax.random.uniform(jax.random.PRNGKey(1), (4, dim), jnp.float64) * 0.9 + 0.05
        check_grads(lambda t, y: enc.apply({"table": t}, y), (table, x), order=1, modes=["rev"], eps=1e-6)


def test_hash_grid_reproduces_stored_values_at_vertices_and_interpolates_linearly():
    enc = HashGrid(levels=1, features=1, log2_table_size=8, base_res=4, max_res=4)
    table = jax.random.normal(jax.random.PRNGKey(0), (1, 256, 1))
    # level of resolution 4 has 5^3 = 125 <= 256 vertices: dense row-major indexing
    vertex = np.array([[1, 2, 3]]) / 4.0
    row = 1 + 2 * 5 + 3 * 25
    np.testing.assert_allclose(enc.apply({"table": table}, vertex)[0, 0], table[0, row, 0], rtol=1e-6)
    mid = np.array([[1.5, 2, 3]]) / 4.0
    expected = 0.5 * (table[0, row, 0] + table[0, row + 1, 0])
    np.testing.assert_allclose(enc.apply({"table": table}, mid)[0, 0], expected, rtol=1e-5)


def test_spatial_hash_uses_instant_ngp_primes():
    corner = jnp.asarray([[3, 5, 7]], jnp.uint32)
    expected = (3 * HASH_PRIMES[0]) ^ (5 * HASH_PRIMES[1] % 2**32) ^ (7 * HASH_PRIMES[2] % 2**32)
    assert int(grid_index(corner, 100, 2**12, True)[0]) == expected % 2**12
    # a level that fits is indexed densely: (N+1)^3 <= T
    assert int(grid_index(corner, 9, 2**12, True)[0]) == 3 + 5 * 10 + 7 * 100


def test_level_resolutions_grow_geometrically():
    res = level_resolutions(16, 16, 2048)
    assert res[0] == 16 and res[-1] == 2048
    ratios = res[1:] / res[:-1]
    assert np.allclose(ratios, np.exp(np.log(128) / 15), atol=0.08)


def test_grid_weights_sum_to_one():
    spec = GridSpec((5, 9), 2**10)
    x = jax.random.uniform(jax.random.PRNGKey(0), (50, 3))
    total = {0: 0.0, 1: 0.0}
    for level, row, w in spec.corners(x):
        assert np.all(w >= 0)
        total[level] = total[level] + w
    for level in total:
        np.testing.assert_allclose(total[level], 1.0, atol=1e-6)


def test_frequency_encoding_values():
    enc = Frequency(num_freqs=2, include_input=True, dim=1)
    out = enc.apply({}, jnp.array([[0.75]]))  # p = 2 * 0.75 - 1 = 0.5
    np.testing.assert_allclose(out[0], [0.75, np.sin(0.5 * np.pi), np.sin(np.pi), np.cos(0.5 * np.pi), np.cos(np.pi)], atol=1e-6)


def test_spherical_harmonics_are_orthonormal():
    sh = SphericalHarmonics(degree=4)
    d = jax.random.normal(jax.random.PRNGKey(0), (200_000, 3))
    d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
    y = sh.apply({}, 0.5 * (d + 1.0))
    gram = 4 * np.pi * (y.T @ y) / d.shape[0]  # Monte Carlo estimate of the integral
    np.testing.assert_allclose(gram, np.eye(16), atol=0.03)
