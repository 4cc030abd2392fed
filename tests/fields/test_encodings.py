"""Conformance of every encoding; hash, simplex and voxel grid specifics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from sparsefield.fields.encoding import ALL_ENCODINGS
from sparsefield.fields.frequency import Frequency
from sparsefield.fields.grid import HASH_PRIMES, HashGrid, GridSpec, grid_index, level_resolutions
from sparsefield.fields.sh import SphericalHarmonics
from sparsefield.fields.simplex import SimplexGrid, lattice_scale, simplex_lattice_res, simplex_vertices, skew_factor
from sparsefield.fields.voxel import VoxelGrid, total_variation

SMALL = {
    HashGrid: dict(levels=4, features=2, log2_table_size=10, base_res=4, max_res=32),
    SimplexGrid: dict(levels=4, features=2, log2_table_size=10, base_res=4, max_res=32),
    VoxelGrid: dict(levels=4, features=2, base_res=4, max_res=8, progressive_steps=()),
    Frequency: dict(num_freqs=4),
}


def make(cls, dim=3):
    return cls(**SMALL[cls], dim=dim)


@pytest.mark.parametrize("cls", ALL_ENCODINGS)
@pytest.mark.parametrize("dim", [2, 3])
def test_conformance(cls, dim):
    enc = make(cls, dim)
    params = enc.init(jax.random.PRNGKey(0))
    if "table" in params:  # non-trivial table so outputs differ between points
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


@pytest.mark.parametrize("cls", [HashGrid, SimplexGrid])
@pytest.mark.parametrize("dim", [2, 3])
def test_grid_gradients_match_finite_differences(cls, dim):
    with jax.enable_x64(True):
        enc = cls(levels=3, features=2, log2_table_size=6, base_res=2, max_res=12, dim=dim)
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


def _simplex_points(dim, n=400):
    x = np.random.default_rng(dim).uniform(size=(n, dim)).astype(np.float32)
    return np.concatenate([x, np.zeros((1, dim)), np.ones((1, dim)), np.eye(dim)]).astype(np.float32)


@pytest.mark.parametrize("dim", [2, 3])
def test_simplex_barycentric_weights_enclose_the_point(dim):
    res = 7
    x = _simplex_points(dim)
    vertices = jax.jit(lambda p: simplex_vertices(p, res))(x * res)
    assert len(vertices) == dim + 1
    w = np.stack([np.asarray(wk, np.float64) for _, wk in vertices])
    v = np.stack([np.asarray(vk, np.float64) for vk, _ in vertices])
    assert np.all(w >= -1e-6)
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-6)
    skewed = lattice_scale(dim) * (x + skew_factor(dim) * x.sum(-1, keepdims=True)) * res
    np.testing.assert_allclose(np.einsum("kn,knd->nd", w, v), skewed, atol=1e-5)
    # consecutive vertices differ by one unit step, along D distinct axes
    steps = np.diff(v, axis=0)
    assert np.all(steps >= 0) and np.all(steps.sum(-1) == 1) and np.all(steps.sum(0) == 1)
    assert v.min() >= 0 and v.max() <= simplex_lattice_res(res, dim)
    # slow reference: step along the axes in decreasing order of the fractional part
    base = np.floor(skewed)
    order = np.argsort(-(skewed - base), axis=-1, kind="stable")
    reference = base[:, None] + np.cumsum(np.eye(dim)[order], axis=1)
    inside = np.all(skewed < simplex_lattice_res(res, dim), -1)  # x = 1 clips the base
    np.testing.assert_array_equal(v[1:].transpose(1, 0, 2)[inside], reference[inside])


def _lattice(side, dim):
    """Every vertex of ``[0, side)^D``, axis 0 fastest, as the dense index orders them."""
    return np.stack(np.meshgrid(*[np.arange(side)] * dim, indexing="ij"), -1).reshape(-1, dim)[:, ::-1]


@pytest.mark.parametrize("dim", [2, 3])
def test_simplex_grid_reproduces_a_function_linear_on_the_lattice(dim):
    res = 4
    top = simplex_lattice_res(res, dim)
    enc = SimplexGrid(levels=1, features=1, log2_table_size=10, base_res=res, max_res=res, dim=dim)
    assert (top + 1) ** dim <= enc.table_size  # dense rows: no collisions
    a, b = np.arange(1.0, dim + 1.0), 0.5
    # vertex v of the skewed lattice sits at x = unskew(v) / (c_D N): value a . x + b
    coords = _lattice(top + 1, dim)
    unskew = (1 - 1 / np.sqrt(dim + 1)) / dim
    x_vertex = (coords - unskew * coords.sum(-1, keepdims=True)) / (lattice_scale(dim) * res)
    table = np.zeros((1, enc.table_size, 1), np.float32)
    table[0, : len(coords), 0] = x_vertex @ a + b
    x = _simplex_points(dim)
    out = jax.jit(enc.apply)({"table": table}, x)
    np.testing.assert_allclose(out[:, 0], x @ a + b, atol=1e-4)


def test_simplex_level_has_the_vertex_density_of_the_cube_level():
    # a level of resolution N touches about (N + 1)^D distinct vertices over [0, 1]^D
    res, dim = 24, 3
    x = np.random.default_rng(0).uniform(size=(200_000, dim)).astype(np.float32)
    side = simplex_lattice_res(res, dim) + 1
    vertices = jax.jit(lambda p: [v for v, _ in simplex_vertices(p, res)])(x * res)
    rows = [np.asarray(v, np.int64) @ side ** np.arange(dim) for v in vertices]
    assert 0.85 < len(np.unique(np.concatenate(rows))) / (res + 1) ** dim < 1.15


def test_voxel_grid_returns_stored_values_at_vertices():
    enc = VoxelGrid(levels=1, features=2, max_res=4, progressive_steps=())
    assert enc.table_size == 5**3
    table = np.random.default_rng(0).normal(size=(1, enc.table_size, 2)).astype(np.float32)
    row = 1 + 2 * 5 + 3 * 25
    out = jax.jit(enc.apply)({"table": table}, np.array([[1, 2, 3]], np.float32) / 4.0)
    np.testing.assert_allclose(out[0], table[0, row], rtol=1e-6)


@pytest.mark.parametrize("dim", [2, 3])
def test_voxel_progressive_upsampling_keeps_a_linear_function(dim):
    enc = VoxelGrid(levels=2, features=2, base_res=4, max_res=8, progressive_steps=(5, 10), dim=dim)
    assert [enc.stage_at(s) for s in (0, 4, 5, 9, 10, 1000)] == [0, 0, 1, 1, 2, 2]
    assert enc.at_stage(2) == enc and enc.at_stage(0).stage == 0
    res = [enc.at_stage(k).resolutions for k in range(3)]
    np.testing.assert_array_equal(res[-1], [4, 8])
    voxels = np.array([r[-1] ** dim for r in res], np.float64)
    np.testing.assert_allclose(voxels[1:] / voxels[:-1], 2.0, rtol=0.3)  # DVGO doubles the voxels

    a, b = np.arange(1.0, dim + 1.0), -0.25
    coarse = enc.at_stage(0)
    table = np.zeros((2, coarse.table_size, 2), np.float32)
    for level, n in enumerate(coarse.resolutions):
        coords = _lattice(n + 1, dim)
        table[level, : len(coords), 0] = coords / n @ a + b
        table[level, : len(coords), 1] = level
    params = {"table": table}
    for k in (1, 2):
        params = enc.upsample(params, k - 1, k)
        assert params["table"].shape == (2, enc.at_stage(k).table_size, 2)
    x = np.random.default_rng(1).uniform(size=(300, dim)).astype(np.float32)
    out = jax.jit(enc.apply)(params, x)
    np.testing.assert_allclose(out[:, [0, 2]], np.stack([x @ a + b] * 2, -1), atol=1e-5)
    np.testing.assert_allclose(out[:, [1, 3]], np.broadcast_to([0.0, 1.0], (300, 2)), atol=1e-6)


def test_total_variation_of_a_linear_grid():
    res, dim, a = 6, 3, np.array([1.0, -2.0, 3.0])
    coords = _lattice(res + 1, dim)
    table = np.stack([coords / res @ a, np.ones(len(coords))], -1).astype(np.float32)
    # neighbour differences a_i / N along axis i in channel 0, none in channel 1
    expected = np.mean((a / res) ** 2) / 2
    np.testing.assert_allclose(jax.jit(total_variation, static_argnums=(1, 2))(table, res, dim), expected, rtol=1e-5)
    enc = VoxelGrid(levels=1, features=2, max_res=res, progressive_steps=())
    params = {"table": table[None]}
    np.testing.assert_allclose(jax.jit(enc.total_variation)(params), expected, rtol=1e-5)
    density_tv = jax.jit(lambda p: enc.total_variation(p, channels=(1,)))(params)
    np.testing.assert_allclose(density_tv, 0.0, atol=1e-12)


def test_voxel_field_starts_with_alpha_init_per_voxel():
    from sparsefield.fields.field import FieldConfig, RadianceField

    enc = VoxelGrid(max_res=16, progressive_steps=(10,), alpha_init=0.01, init_scale=0.0)
    field = RadianceField(FieldConfig(encoding=enc.at_stage(0)), ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)))
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(field.init, jax.random.PRNGKey(0))
    params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
    params["encoding"]["table"][:] = 0.0  # an empty grid
    raised = {**params, "encoding": {"table": params["encoding"]["table"] + np.float32(5.0)}}
    x = rng.uniform(-1, 1, size=(64, 3)).astype(np.float32)
    sigma_fn = jax.jit(field.sigma)
    sigma, sigma_raised = sigma_fn(params, x), sigma_fn(raised, x)
    voxel = 2.0 / 16  # the final voxel at every stage
    np.testing.assert_allclose(1.0 - np.exp(-sigma * voxel), 0.01, rtol=1e-4)
    # post-activation: sigma follows the interpolated raw density channel
    np.testing.assert_allclose(sigma_raised, jax.nn.softplus(5.0 + enc.density_shift) / voxel, rtol=1e-5)
