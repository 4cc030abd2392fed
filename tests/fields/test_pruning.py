"""Saliency pruning (HollowNeRF): the top-k projection, the mask on the features, the ADMM
phases, the mask-derived occupancy, and compaction that keeps every rendered pixel."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsefield import checkpoints
from sparsefield.config import PRESETS, config_from_json, config_to_json
from sparsefield.errors import UsageError
from sparsefield.methods.nerf import RadianceFieldMethod
from sparsefield.cameras import make_cameras, orbit_poses
from sparsefield.fields import pruning
from sparsefield.fields.field import FieldConfig, RadianceField
from sparsefield.fields.grid import HashGrid
from sparsefield.fields.pruning import ADMMPruner, SaliencyMask
from sparsefield.fields.simplex import SimplexGrid
from sparsefield.fields.voxel import VoxelGrid
from sparsefield.samplers.grid import OccupancyGridConfig, init_occupancy
from sparsefield.renderers.render import RenderConfig, render_image

BBOX = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
GRIDS = {
    # Dense coarse levels and hashed fine ones, small enough to enumerate quickly.
    "hash": HashGrid(levels=4, log2_table_size=12, base_res=6, max_res=40),
    "simplex": SimplexGrid(levels=4, log2_table_size=12, base_res=6, max_res=40),
    "voxel": VoxelGrid(levels=2, features=4, base_res=12, max_res=20, progressive_steps=()),
}


@pytest.mark.parametrize("k", [1, 7, 100, 999, 1000])
def test_projection_keeps_exactly_the_k_largest_magnitudes(k):
    v = jnp.asarray(np.random.default_rng(k).normal(size=1000), jnp.float32)
    z = np.asarray(pruning.project_top_k(v, k))
    assert np.count_nonzero(z) == k
    kept = z != 0
    np.testing.assert_array_equal(z[kept], np.asarray(v)[kept])
    assert np.abs(np.asarray(v))[~kept].max(initial=0.0) <= np.abs(z[kept]).min()


def test_projection_breaks_ties_to_exactly_k():
    z = np.asarray(pruning.project_top_k(jnp.ones(50), 20))
    assert np.count_nonzero(z) == 20


def _field(encoding, mask_res=8):
    return RadianceField(FieldConfig(encoding=encoding, saliency=SaliencyMask(mask_res)), BBOX)


@functools.cache
def _setup(name):
    """A grid's field, its params (unit-scale tables, as if trained) and one jitted probe
    ``(params, x [N, 3] in [0, 1]) -> (sigma, rgb, m(x), [(row, weight)] per vertex)``."""
    enc = GRIDS[name]
    field = _field(enc)
    params = jax.jit(field.init)(jax.random.PRNGKey(0))
    shape = params["encoding"]["table"].shape
    params["encoding"] = {"table": jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)}

    @jax.jit
    def probe(params, x):
        sigma, rgb = field(params, x * 2.0 - 1.0, jnp.ones_like(x) / np.sqrt(3.0))
        corners = [(row, w) for _, row, w in enc.spec.corners(x)]
        return sigma, rgb, field.config.saliency.apply(params["saliency"], x), corners

    return field, params, probe


def _with_mask(params, mask):
    return dict(params, saliency={"mask": jnp.asarray(mask, jnp.float32).reshape(1, -1, 1)})


POINTS = jnp.asarray(np.random.default_rng(5).random((4096, 3)), jnp.float32)


@pytest.mark.parametrize("name", GRIDS)
def test_mask_scales_the_features(name):
    field, params, probe = _setup(name)
    side = field.config.saliency.resolution + 1
    masked = _with_mask(params, np.zeros(side**3))
    zero_table = _with_mask(dict(params, encoding={"table": jnp.zeros_like(params["encoding"]["table"])}),
                            np.ones(side**3))
    np.testing.assert_array_equal(probe(masked, POINTS)[0], probe(zero_table, POINTS)[0])
    assert np.ptp(np.asarray(probe(_with_mask(params, np.ones(side**3)), POINTS)[0])) > 0
    # m = 0.5 everywhere reads as the tables halved (features are linear in the table);
    # non-zero biases, so m must scale the features, not the first layer's output
    rng = np.random.default_rng(1)
    params = dict(params, density_mlp=[dict(layer, b=jnp.asarray(rng.normal(size=layer["b"].shape), jnp.float32))
                                       for layer in params["density_mlp"]])
    half = probe(_with_mask(params, np.full(side**3, 0.5)), POINTS)
    half_table = _with_mask(dict(params, encoding={"table": 0.5 * params["encoding"]["table"]}), np.ones(side**3))
    for a, b in zip(half[:2], probe(half_table, POINTS)[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mask_interpolates_its_vertices_and_scales_features():
    mask = SaliencyMask(4)
    values = jnp.asarray(np.random.default_rng(2).random(5**3), jnp.float32)
    params = {"mask": values.reshape(1, -1, 1)}
    vertex = np.array([[1, 2, 3]])  # (x, y, z); rows are x-fastest
    got = mask.apply(params, jnp.asarray(vertex / 4.0, jnp.float32))
    np.testing.assert_allclose(got, values[1 + 2 * 5 + 3 * 25], rtol=1e-6)
    half = mask.apply(params, jnp.asarray([[0.125, 0.0, 0.0]]))  # midway between x-vertices 0, 1
    np.testing.assert_allclose(half, 0.5 * (values[0] + values[1]), rtol=1e-6)


def _sparse_mask(res, seed=0, fraction=0.15):
    rng = np.random.default_rng(seed)
    side = res + 1
    return (rng.random(side**3) < fraction) * rng.uniform(0.2, 1.0, side**3)


def test_live_cells_and_occupancy_hold_every_point_where_the_mask_is_non_zero():
    mask = SaliencyMask(8)
    values = _sparse_mask(8, fraction=0.05)
    x = np.random.default_rng(1).random((8192, 3)).astype(np.float32)
    m = np.asarray(jax.jit(mask.apply)({"mask": jnp.asarray(values, jnp.float32).reshape(1, -1, 1)}, x))
    live = pruning.live_cells(mask, values)
    assert 0 < live.mean() < 0.6
    occupancy = jax.jit(pruning.mask_occupancy, static_argnums=(0, 2))
    for res in (8, 16, 5):
        occ = np.asarray(occupancy(mask, values, res))
        cell = np.minimum((x * res).astype(int), res - 1)
        assert occ[cell[m > 0, 0], cell[m > 0, 1], cell[m > 0, 2]].all()
        if res == 8:
            np.testing.assert_array_equal(occ, live)
    # Exactness at equal resolution: a live cell has points with m > 0 inside.
    cell = np.minimum((x * 8).astype(int), 7)
    hit = np.zeros_like(live)
    hit[cell[m > 0, 0], cell[m > 0, 1], cell[m > 0, 2]] = True
    assert hit.sum() >= 0.9 * live.sum()


def test_admm_prunes_to_k_then_freezes_and_restricts_the_grid():
    mask = SaliencyMask(4)
    pruner = ADMMPruner(sparsity=0.8, start=0.0, end=0.5, admm_every=2)
    k = pruner.keep_count(mask)
    params = {"saliency": {"mask": jnp.asarray(np.random.default_rng(3).random((1, 125, 1)), jnp.float32)}}
    state = pruner.init(params["saliency"])
    grid = init_occupancy(OccupancyGridConfig(resolution=4))
    total = 20
    update = jax.jit(pruning.admm_update, static_argnums=(0, 1, 6))
    p, g, s = update(pruner, mask, params, grid, state, 0, total)  # a z / u update
    assert np.count_nonzero(s.z) == k
    np.testing.assert_allclose(s.u, p["saliency"]["mask"] - s.z, atol=1e-6)
    loss = pruning.admm_losses(pruner, p, s, 1, total)["admm"]
    np.testing.assert_allclose(loss, 0.5 * pruner.rho * np.sum((2 * np.asarray(s.u)) ** 2), rtol=1e-5)
    assert float(pruning.admm_losses(pruner, p, s, 10, total)["admm"]) == 0.0  # phase over
    p, g, s = update(pruner, mask, p, g, s, 9, total)  # the last ADMM step
    frozen = np.asarray(p["saliency"]["mask"])
    assert np.count_nonzero(frozen) == k
    assert not np.asarray(g.allowed).all()
    np.testing.assert_array_equal(g.allowed, pruning.mask_occupancy(mask, frozen, 4))
    moved = {"saliency": {"mask": jnp.ones((1, 125, 1))}}
    p, _, _ = update(pruner, mask, moved, g, s, 12, total)
    np.testing.assert_array_equal(p["saliency"]["mask"], frozen)


@pytest.mark.parametrize("res", [2, 4, 8])
def test_occupied_vertices_are_the_corners_of_cells_meeting_an_occupied_cell(res):
    mask = SaliencyMask(4)
    occupied = np.random.default_rng(res).random((res,) * 3) < 0.15
    got = np.asarray(pruning.occupied_vertices(mask, jnp.asarray(occupied)))
    want = np.zeros((5, 5, 5), bool)  # [x, y, z]
    for v in np.ndindex(5, 5, 5):  # cells v - 1 and v per axis, as unit-cube intervals
        lo, hi = np.maximum(np.asarray(v) - 1, 0) / 4, np.minimum(np.asarray(v) + 1, 4) / 4
        a, b = np.floor(lo * res).astype(int), np.ceil(hi * res).astype(int)
        want[v] = occupied[a[0] : b[0], a[1] : b[1], a[2] : b[2]].any()
    np.testing.assert_array_equal(got, want.transpose(2, 1, 0).ravel())


def test_occupancy_gate_keeps_only_vertices_of_occupied_cells():
    """Unsampled vertices may hold the largest mask values (they all decay at one rate):
    the gate keeps the surface's vertices instead."""
    mask = SaliencyMask(4)
    pruner = ADMMPruner(sparsity=0.5, start=0.0, end=0.5, admm_every=2)
    occupied = np.zeros((4, 4, 4), bool)
    occupied[1, 1, 1] = True
    grid = dataclasses.replace(init_occupancy(OccupancyGridConfig(resolution=4)), occupied=jnp.asarray(occupied))
    salient = np.asarray(pruning.occupied_vertices(mask, jnp.asarray(occupied)))
    assert salient.sum() == 8
    values = np.where(salient, 0.3, 0.9).astype(np.float32)[None, :, None]
    params = {"saliency": {"mask": jnp.asarray(values)}}
    update = jax.jit(pruning.admm_update, static_argnums=(0, 1, 6))
    p, _, s = update(pruner, mask, params, grid, pruner.init(params["saliency"]), 0, 20)
    np.testing.assert_array_equal(np.asarray(s.z).ravel() != 0, salient)
    p, _, _ = update(pruner, mask, p, grid, s, 9, 20)  # the hard threshold
    np.testing.assert_allclose(np.asarray(p["saliency"]["mask"]).ravel(), np.where(salient, 0.3, 0.0))
    ungated = dataclasses.replace(pruner, occupancy_gate=False)
    p, _, _ = update(ungated, mask, params, grid, ungated.init(params["saliency"]), 9, 20)
    assert not np.any(np.asarray(p["saliency"]["mask"]).ravel()[salient])


def _render(field, params, grid):
    cams = make_cameras(orbit_poses((0.0, 0.0, 0.0), 3.5, 25.0, 1), 0.7, 24, 24)
    config = RenderConfig(num_samples=48, chunk=1024)
    out = render_image(field.__call__, params, cams[0], np.asarray(BBOX), grid, config, np.ones(3))
    return out["rgb"]


@pytest.mark.parametrize("name", GRIDS)
def test_compaction_keeps_the_field_and_every_reachable_row(name, tmp_path):
    enc = GRIDS[name]
    field, params, probe = _setup(name)
    params = _with_mask(params, _sparse_mask(8))
    live = pruning.live_cells(field.config.saliency, params["saliency"]["mask"])
    keep = pruning.reachable_rows(enc.spec, live)
    assert 0.0 < keep.mean() < 0.9

    # Every row that a point with m(x) > 0 interpolates with non-zero weight is kept ...
    x = POINTS
    sigma, rgb, m, corners = probe(params, x)
    rows = np.stack([np.asarray(row) for row, _ in corners])
    used = (np.asarray(m) > 0) & np.stack([np.asarray(w) > 0 for _, w in corners])
    assert keep.reshape(-1)[rows[used]].all()
    # ... so zeroing the others changes no density and no colour anywhere.
    compact = pruning.compact_tree({"params": params}, keep)["params"]
    sigma_c, rgb_c, _, _ = probe(compact, x)
    assert np.std(np.asarray(sigma)) > 0.01
    np.testing.assert_allclose(sigma_c, sigma, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rgb_c, rgb, atol=1e-6)

    # The method's checkpoint stores the kept rows only and reads back the same tables.
    config = dataclasses.replace(PRESETS["pruned"], field=field.config)
    method = RadianceFieldMethod(config, np.asarray(BBOX))
    state = {**method.fresh(), "params": compact, "rows": keep}
    path = checkpoints.write(tmp_path, 0, method.to_arrays(state), "nerf")
    unpacked = {k: v for k, v in state.items() if k != "rows"}
    dense = checkpoints.write(tmp_path / "dense", 0, method.to_arrays(unpacked), "nerf")
    assert path.stat().st_size < dense.stat().st_size
    version, arrays, _ = checkpoints.read(path)
    loaded = method.from_arrays(arrays, version, path)
    np.testing.assert_array_equal(loaded["params"]["encoding"]["table"], compact["encoding"]["table"])
    np.testing.assert_array_equal(loaded["params"]["saliency"]["mask"], params["saliency"]["mask"])
    np.testing.assert_array_equal(loaded["rows"], keep)

    n = pruning.count_pruned_params(compact, keep, enc.features)
    mlps = sum(np.size(v) for k, v in jax.tree_util.tree_leaves_with_path(params) if "mlp" in str(k[0]))
    nonzero_mask = np.count_nonzero(params["saliency"]["mask"])
    assert n == keep.sum() * enc.features + mlps + nonzero_mask + np.size(params["direction"] or [])


def test_compaction_leaves_the_rendered_image_identical():
    field, params, _ = _setup("hash")
    params = _with_mask(params, _sparse_mask(8, seed=1, fraction=0.3))
    keep = pruning.reachable_rows(field.config.encoding.spec,
                                  pruning.live_cells(field.config.saliency, params["saliency"]["mask"]))
    compact = pruning.compact_tree({"params": params}, keep)["params"]
    assert np.count_nonzero(compact["encoding"]["table"]) < np.count_nonzero(params["encoding"]["table"])
    before, after = _render(field, params, None), _render(field, compact, None)
    assert before.std() > 0.01
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_pruned_preset_and_config_round_trip():
    config = PRESETS["pruned"]
    assert config.pruner is not None and config.field.saliency is not None
    assert config_from_json(config_to_json(config)) == config
    bad = dataclasses.replace(config, field=dataclasses.replace(config.field, saliency=None))
    with pytest.raises(UsageError, match="saliency"):
        RadianceFieldMethod(bad, np.asarray(BBOX))
