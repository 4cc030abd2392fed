"""Gaussian scenes: the 3DGS PLY round trip and its layout as an independent reader sees
it, SH colour by degree, densification with its optimizer re-indexing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from plyfile import PlyData

from sparsefield.fields import gaussians as gs
from sparsefield.renderers.densify import DensifyConfig, DensifyState, DensifyStrategy


def random_params(n=8, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"means": (n, 3), "log_scales": (n, 3), "quats": (n, 4), "logit_opacities": (n,),
              "sh_dc": (n, 3), "sh_rest": (n, 15, 3)}
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def test_ply_round_trips_exactly(tmp_path):
    params, alive = random_params(), np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)
    path = tmp_path / "scene.splat.ply"
    assert gs.write_ply(path, params, alive) == 6
    back = gs.read_ply(path)
    for key, value in params.items():
        np.testing.assert_array_equal(back[key], value[alive])
    header = path.read_bytes().split(b"end_header")[0].decode()
    assert "property float f_rest_44" in header and "property float rot_3" in header
    assert header.index("f_dc_0") < header.index("f_rest_0") < header.index("opacity") < header.index("scale_0")



def test_ply_has_the_inria_layout_for_an_independent_reader(tmp_path):
    """plyfile sees exactly the 3DGS reference layout: one binary little-endian vertex
    element of float32 properties in INRIA's order, and the raw parameters in it (opacity
    a logit, scales logs, rotation w first), ``f_rest`` channel-major as INRIA's
    ``save_ply`` flattens ``features_rest.transpose(1, 2)``: index = channel * 15 + k."""
    params, alive = random_params(), np.array([1, 0, 1, 1, 1, 1, 1, 1], bool)
    path = tmp_path / "scene.splat.ply"
    gs.write_ply(path, params, alive)
    ply = PlyData.read(str(path))
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert not ply.text and ply.byte_order == "<" and [e.name for e in ply.elements] == ["vertex"]
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == names
    assert {p.val_dtype for p in vertex.properties} == {"f4"} and vertex.count == 7
    p = {k: v[alive] for k, v in params.items()}
    column = lambda name: np.asarray(vertex[name])  # noqa: E731
    for axis, name in enumerate("xyz"):
        np.testing.assert_array_equal(column(name), p["means"][:, axis])
        np.testing.assert_array_equal(column(f"n{name}"), 0.0)
    for c in range(3):
        np.testing.assert_array_equal(column(f"f_dc_{c}"), p["sh_dc"][:, c])
        np.testing.assert_array_equal(column(f"scale_{c}"), p["log_scales"][:, c])
        for k in range(15):
            np.testing.assert_array_equal(column(f"f_rest_{c * 15 + k}"), p["sh_rest"][:, k, c])
    np.testing.assert_array_equal(column("opacity"), p["logit_opacities"])
    for i in range(4):
        np.testing.assert_array_equal(column(f"rot_{i}"), p["quats"][:, i])

def test_colour_uses_only_the_active_sh_degrees():
    params = {k: jnp.asarray(v) for k, v in random_params().items()}
    center = jnp.array([0.0, 0.0, 5.0])
    c0 = gs.gaussian_colors(params, center, 0)
    np.testing.assert_allclose(c0, np.maximum(0.5 + gs.SH_C0 * params["sh_dc"], 0.0), rtol=1e-6)
    zero_high = dict(params, sh_rest=params["sh_rest"].at[:, 3:].set(0.0))
    np.testing.assert_allclose(gs.gaussian_colors(params, center, 1), gs.gaussian_colors(zero_high, center, 1), rtol=1e-6)
    assert not np.allclose(gs.gaussian_colors(params, center, 3), gs.gaussian_colors(params, center, 1))


def test_densify_clones_splits_prunes_and_moves_moments():
    """Slot 0 small + high gradient (clone), 1 large + high gradient (split), 2
    transparent (prune), 3 untouched, 4..7 free; capacity 8. The pruned slot is reused
    first: the clone lands in 2, the split's second half in 4."""
    p = random_params()
    p["log_scales"][:] = np.log([[0.001] * 3, [0.05] * 3, [0.001] * 3, [0.001] * 3] + [[0.001] * 3] * 4)
    p["logit_opacities"][:] = [2.0, 2.0, -10.0, 2.0, 0, 0, 0, 0]
    alive = np.arange(8) < 4
    params = {k: jnp.asarray(v) for k, v in p.items()}
    opt = optax.adam(1.0)
    opt_state = jax.tree_util.tree_map(lambda x: x + 1.0 if x.ndim else x, opt.init(params))
    state = DensifyState(jnp.array([1.0, 1.0, 0.0, 0.0, 0, 0, 0, 0]), jnp.ones(8, jnp.int32))
    strategy = DensifyStrategy(DensifyConfig(grad_threshold=0.5, percent_dense=0.01, reset_every=10**6))
    info = {"alive": alive, "extent": 1.0, "max_capacity": 8, "key": 0}
    new, new_opt, new_state = strategy.update(params, opt_state, state, 100, info)
    new, mu = jax.device_get(new), np.asarray(new_opt[0].mu["means"])
    alive = np.asarray(info["alive"])
    assert alive.tolist() == [True] * 5 + [False] * 3
    np.testing.assert_array_equal(new["means"][2], p["means"][0])  # the clone
    np.testing.assert_allclose(np.exp(new["log_scales"][[1, 4]]), 0.05 / 1.6, rtol=1e-5)  # the split pair
    assert not np.allclose(new["means"][1], new["means"][4])
    assert np.all(mu[[0, 3]] == 1.0) and np.all(mu[[1, 2, 4]] == 0.0)
    assert float(jnp.sum(new_state.grad_sum)) == 0.0


def test_densify_doubles_a_full_capacity():
    p = {k: jnp.asarray(v) for k, v in random_params(4).items()}
    p["log_scales"] = jnp.full((4, 3), np.log(0.001))
    state = DensifyState(jnp.ones(4), jnp.ones(4, jnp.int32))
    info = {"alive": np.ones(4, bool), "extent": 1.0, "max_capacity": 16, "key": 0}
    new, new_opt, _ = DensifyStrategy(DensifyConfig(grad_threshold=0.5)).update(
        p, optax.adam(1.0).init(p), state, 100, info)
    assert new["means"].shape == (8, 3) and new_opt[0].nu["sh_rest"].shape == (8, 15, 3)
    assert int(np.sum(info["alive"])) == 8


def test_densify_prunes_gaussians_marked_outside_and_never_grows_them():
    """Slot 1 has a high gradient but lies outside the hull: pruned, not split; slot 0
    (inside, high gradient, small) is cloned into the freed slot."""
    p = {k: jnp.asarray(v) for k, v in random_params(4).items()}
    p["log_scales"] = jnp.full((4, 3), np.log(0.001))
    p["logit_opacities"] = jnp.full(4, 2.0)
    state = DensifyState(jnp.array([1.0, 1.0, 0.0, 0.0]), jnp.ones(4, jnp.int32))
    info = {"alive": np.array([1, 1, 1, 0], bool), "extent": 1.0, "max_capacity": 4, "key": 0,
            "outside": np.array([0, 1, 0, 0], bool)}
    new, _, _ = DensifyStrategy(DensifyConfig(grad_threshold=0.5, reset_every=10**6)).update(
        p, optax.adam(1.0).init(p), state, 100, info)
    assert np.asarray(info["alive"]).tolist() == [True, True, True, False]
    np.testing.assert_array_equal(np.asarray(new["means"][1]), np.asarray(p["means"][0]))  # the clone


def test_densification_stops_at_a_fraction_of_the_run():
    strategy = DensifyStrategy(DensifyConfig(start=100, every=100, stop=0.5), steps=1000)
    assert [s for s in range(1, 1001) if strategy.due(s)] == [100, 200, 300, 400]
    assert not any(DensifyStrategy(DensifyConfig(stop=0.0), steps=1000).due(s) for s in range(1, 1001))
