"""Gaussian rasterizer: the tiled fast path against the dense reference, its hand-written
VJP against finite differences, and the projection against a hand-worked case."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from sparsefield.cameras import look_at, make_cameras
from sparsefield.renderers.splatting import (
    SplatRenderConfig, composite_tiles, project, rasterize, render_dense,
)

CONFIG = SplatRenderConfig(tile_size=8, tile_capacity=128, chunk=16, pairs_per_gaussian=16.0)
BACKGROUND = jnp.array([0.2, 0.3, 0.9])


def camera(width=36, height=28):
    cams = make_cameras(look_at([0.3, -3.0, 1.0], [0.0, 0.0, 0.0])[None], 0.8, width, height)
    return jax.tree_util.tree_map(jnp.asarray, cams)[0]


def random_gaussians(seed, n=120, scale=0.08):
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    return (jax.random.uniform(k[0], (n, 3), minval=-0.8, maxval=0.8),
            scale * jnp.exp(0.5 * jax.random.normal(k[1], (n, 3))),
            jax.random.normal(k[2], (n, 4)),
            jax.random.uniform(k[3], (n,), minval=0.05, maxval=1.0),
            jax.random.uniform(k[4], (n, 3)))


def weighted_sum(out):
    """A loss that weighs every pixel and channel differently."""
    w = jnp.sin(jnp.arange(out["rgb"].size, dtype=jnp.float32)).reshape(out["rgb"].shape)
    return jnp.sum(out["rgb"] * w) + 0.1 * jnp.sum(out["depth"] * w[..., 0]) + jnp.sum(out["opacity"] * w[..., 1])


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_path_equals_dense_reference(seed):
    g, cam = random_gaussians(seed), camera()
    fast = jax.jit(lambda *a: rasterize(*a, cam, BACKGROUND, CONFIG))(*g)
    ref = render_dense(*g, cam, BACKGROUND, CONFIG)
    assert int(fast["overflow"]) == 0
    assert float(jnp.mean(ref["opacity"])) > 0.3  # the scene covers the image
    for key in ("rgb", "depth", "opacity"):
        err = jnp.max(jnp.abs(fast[key] - ref[key])) / jnp.max(jnp.abs(ref[key]))
        assert err < 1e-4, (key, float(err))


def test_gradients_equal_dense_reference():
    g, cam = random_gaussians(2), camera()
    grads = [jax.jit(jax.grad(lambda *a, f=f: weighted_sum(f(*a, cam, BACKGROUND, CONFIG)), argnums=tuple(range(5))))(*g)
             for f in (rasterize, render_dense)]
    for fast, ref in zip(*grads):
        assert bool(jnp.all(jnp.isfinite(fast)))
        assert float(jnp.max(jnp.abs(fast - ref))) < 1e-4 * float(jnp.max(jnp.abs(ref))) + 1e-6


def test_tile_groups_do_not_change_the_image_or_its_gradients():
    """Compositing 1, 5 or all tiles together (each group stopping at its own longest
    list) gives the same image and gradients."""
    g, cam = random_gaussians(3), camera()
    results = []
    for group in (1, 5, 64):
        config = dataclasses.replace(CONFIG, tile_group=group)
        results.append(jax.jit(jax.value_and_grad(
            lambda *a, c=config: weighted_sum(rasterize(*a, cam, BACKGROUND, c)), argnums=(0, 1, 3)))(*g))
    for value, grads in results[1:]:
        np.testing.assert_allclose(value, results[0][0], rtol=1e-6)
        for a, b in zip(grads, results[0][1]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("group", [1, 2, 3])
def test_compositing_vjp_matches_finite_differences(group):
    """Two tiles of 3 pixels, lists of 5 and 8 Gaussians in chunks of 2 (so the carried
    transmittance and early termination both matter; the longer list is composited
    first, and with 3 tiles per group a padding tile joins them), float64."""
    with jax.enable_x64(True):
        k = jax.random.split(jax.random.PRNGKey(0), 4)
        pix = jax.random.uniform(k[0], (2, 3, 2), jnp.float64)
        mean = jax.random.uniform(k[1], (2, 8, 2), jnp.float64)
        conic = jnp.broadcast_to(jnp.array([2.0, 0.1, 1.5]), (2, 8, 3))
        opac = jax.random.uniform(k[2], (2, 8), jnp.float64, minval=0.3, maxval=0.9)
        feat = jax.random.uniform(k[3], (2, 8, 2), jnp.float64)
        valid = jnp.arange(8)[None, :] < jnp.array([[5], [8]])

        def f(mean, conic, opac, feat, bg):
            out, t = composite_tiles(2, group, pix, mean, conic, opac, feat, valid, bg)
            return jnp.sum(out * jnp.array([1.0, -2.0])) + 3.0 * jnp.sum(t)

        check_grads(f, (mean, conic, opac, feat, jnp.array([0.1, 0.5])), order=1, modes=["rev"], eps=1e-6)


def test_small_tile_capacity_reports_overflow():
    g, cam = random_gaussians(0), camera()
    out = rasterize(*g, cam, BACKGROUND, SplatRenderConfig(tile_size=8, tile_capacity=16, chunk=16))
    assert int(out["overflow"]) > 0


def test_projection_of_a_sphere_on_the_axis():
    """An isotropic Gaussian of std s at distance z on the optical axis projects to the
    image centre with variance (f s / z)^2 + dilation and depth z."""
    cams = make_cameras(look_at([0.0, 0.0, 5.0], [0.0, 0.0, 0.0], up=(0.0, 1.0, 0.0))[None], 0.5, 64, 48)
    cam = jax.tree_util.tree_map(jnp.asarray, cams)[0]
    p = project(jnp.zeros((1, 3)), jnp.full((1, 3), 0.1), jnp.array([[1.0, 0, 0, 0]]), jnp.ones(1), cam, CONFIG)
    var = (float(cam.fx) * 0.1 / 5.0) ** 2 + CONFIG.dilation
    np.testing.assert_allclose(p.mean2d[0], [32.0, 24.0], atol=1e-4)
    np.testing.assert_allclose(p.conic[0], [1 / var, 0.0, 1 / var], rtol=1e-4)
    np.testing.assert_allclose(p.depth[0], 5.0, rtol=1e-6)
    np.testing.assert_allclose(p.extent[0], np.sqrt(2 * np.log(255.0) * var), rtol=1e-4)


def test_depth_distortion_is_the_double_sum_of_blended_depth_gaps():
    """One opaque layer has no distortion; two layers at depths z1 < z2 give
    ``2 w1 w2 (z1 - z2)^2`` at the pixel they share, and the other outputs do not change."""
    def layers(depths, opacity):
        n = len(depths)
        means = jnp.array([[0.0, 0.0, 3.0 - z] for z in depths])  # camera at z = 3 looking down -z
        return means, jnp.full((n, 3), 0.5), jnp.tile(jnp.array([1.0, 0, 0, 0]), (n, 1)), jnp.full(n, opacity), \
            jnp.ones((n, 3))

    c2w = jnp.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3]])
    cam = jax.tree_util.tree_map(jnp.asarray, make_cameras(c2w[None], 0.6, 16, 16))[0]
    one = rasterize(*layers([2.5], 0.99), cam, BACKGROUND, CONFIG, distortion=True)
    assert float(one["distortion"][8, 8]) < 1e-4
    two = rasterize(*layers([2.0, 3.0], 0.6), cam, BACKGROUND, CONFIG, distortion=True)
    plain = rasterize(*layers([2.0, 3.0], 0.6), cam, BACKGROUND, CONFIG)
    for key in ("rgb", "depth", "opacity"):
        np.testing.assert_allclose(two[key], plain[key], atol=1e-6)
    # at the centre pixel each layer's alpha is about 0.6: w1 = 0.6, w2 = 0.4 x 0.6
    alpha = 1.0 - float(1.0 - two["opacity"][8, 8]) ** 0.5
    w1, w2 = alpha, (1 - alpha) * alpha
    np.testing.assert_allclose(float(two["distortion"][8, 8]), 2 * w1 * w2 * 1.0**2, rtol=2e-2)
