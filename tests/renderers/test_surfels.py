"""Surfel rasterizer (2DGS): the tiled fast path against the dense world-space ray-plane
reference (values and gradients), its hand-written VJP against finite differences, and
single disks against closed forms: face-on footprint, plane-intersection depth, edge-on
fallback to the low-pass filter, depth distortion of two layers, the normals of a depth
map and the normal consistency between them and the disks'."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from sparsefield.cameras import look_at, make_cameras
from sparsefield.methods.surfel_step import normal_consistency
from sparsefield.renderers.surfels import (
    SurfelRenderConfig, composite_kernel, depth_normals, intersection_geometry, project, rasterize, render_dense,
    surfel_alpha,
)

CONFIG = SurfelRenderConfig(tile_size=8, tile_capacity=128, chunk=16, pairs_per_gaussian=16.0)
BACKGROUND = jnp.array([0.2, 0.3, 0.9])


def camera(eye=(0.3, -3.0, 1.0), width=36, height=28, fov=0.8, up=(0.0, 0.0, 1.0)):
    cams = make_cameras(look_at(list(eye), [0.0, 0.0, 0.0], up=up)[None], fov, width, height)
    return jax.tree_util.tree_map(jnp.asarray, cams)[0]


def random_surfels(seed, n=120, scale=0.1):
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    return (jax.random.uniform(k[0], (n, 3), minval=-0.8, maxval=0.8),
            scale * jnp.exp(0.5 * jax.random.normal(k[1], (n, 2))),
            jax.random.normal(k[2], (n, 4)),
            jax.random.uniform(k[3], (n,), minval=0.05, maxval=1.0),
            jax.random.uniform(k[4], (n, 3)))


def weighted_sum(out):
    """A loss that weighs every pixel and output differently."""
    w = jnp.sin(jnp.arange(out["rgb"].size, dtype=out["rgb"].dtype)).reshape(out["rgb"].shape)
    return (jnp.sum(out["rgb"] * w) + 0.1 * jnp.sum(out["depth"] * w[..., 0]) + jnp.sum(out["opacity"] * w[..., 1])
            + jnp.sum(out["normal"] * w[..., ::-1]) + 3.0 * jnp.sum(out["distortion"] * w[..., 2]))


@pytest.fixture(scope="module")
def fast_and_dense():
    """Images and gradients of random surfels by both paths, one compiled program each;
    the fast path's gradients include the screen-space offsets'."""
    g, cam = random_surfels(0), camera()
    offset = jnp.zeros((g[0].shape[0], 2))

    def both(fn, *args):
        return jax.jit(jax.grad(lambda *a: (lambda out: (weighted_sum(out), out))(fn(*a)), argnums=tuple(range(6)),
                                has_aux=True))(*args)

    fast = both(lambda o, *a: rasterize(*a, cam, BACKGROUND, CONFIG, mean2d_offset=o), offset, *g)
    dense = both(lambda c, *a: render_dense(*a, c, BACKGROUND, CONFIG), cam, *g)
    return fast, dense


def test_fast_path_equals_dense_reference(fast_and_dense):
    (_, fast), (_, ref) = fast_and_dense
    assert int(fast["overflow"]) == 0
    assert float(jnp.mean(ref["opacity"])) > 0.2 and float(jnp.mean(ref["distortion"])) > 0.01
    for key in ("rgb", "depth", "opacity", "normal", "distortion"):
        err = jnp.max(jnp.abs(fast[key] - ref[key])) / jnp.max(jnp.abs(ref[key]))
        assert err < 1e-4, (key, float(err))


def test_gradients_equal_dense_reference(fast_and_dense):
    """Every input's gradient, and the screen-space offsets': shifting every surfel's
    image by ``dx`` pixels is moving the principal point by ``dx``, so their gradients
    sum to the reference's gradient with respect to ``c_x, c_y``."""
    (fast, _), (ref, _) = fast_and_dense
    for a, b in zip(fast[1:], ref[1:]):
        assert bool(jnp.all(jnp.isfinite(a)))
        assert float(jnp.max(jnp.abs(a - b))) < 1e-4 * float(jnp.max(jnp.abs(b))) + 1e-6
    np.testing.assert_allclose(jnp.sum(fast[0], 0), [ref[0].cx, ref[0].cy], rtol=1e-3)


def test_compositing_vjp_matches_finite_differences():
    """Two tiles of 3 pixels near random surfels' centres, lists of 5 and 8 surfels in
    chunks of 2 (the carried transmittance and early termination both matter), one tile
    per group, float64: the hand-written VJP (pulled back through the intersection
    kernel) against central differences."""
    with jax.enable_x64(True):
        g = [x.astype(jnp.float64) for x in random_surfels(4, n=8, scale=0.4)]
        proj = project(*g[:4], camera(width=12, height=8), CONFIG)
        geom = intersection_geometry(proj.transform, proj.center, 3.0)
        pix = proj.center[jnp.array([[0, 1, 2], [3, 4, 5]])] + 0.3
        valid = jnp.arange(8)[None, :] < jnp.array([[5], [8]])
        kernel = functools.partial(surfel_alpha, filter_sigma=CONFIG.filter_sigma, near=CONFIG.near)
        feat = jnp.concatenate([g[4], proj.normal], -1)

        def f(geom, opac, feat, bg):
            out, t = composite_kernel(kernel, 2, 1, pix, jnp.stack([geom] * 2), jnp.stack([opac] * 2),
                                      jnp.stack([feat] * 2), valid, bg)
            return jnp.sum(out * jnp.sin(jnp.arange(8.0))) + 3.0 * jnp.sum(t)

        alpha = kernel(pix, jnp.stack([geom] * 2), jnp.stack([g[3]] * 2), valid)[0]
        assert float(jnp.mean(alpha > 0.05)) > 0.3
        check_grads(jax.jit(f), (geom, g[3], feat, jnp.linspace(0.1, 0.8, 8)), order=1, modes=["rev"], eps=1e-6)


SIZE = 32
"""Every single-disk test renders 32 x 32 pixels and two surfel slots, so one compiled
program serves them all."""


@jax.jit
def render(g, alive, cam):
    return rasterize(*g, cam, BACKGROUND, CONFIG, alive)


def disks(*specs):
    """Surfel parameters of one or two disks ``(center, rotation, scales, opacity)`` in
    two slots, and the slots' ``alive``."""
    rows = [(c, r, s, o) for c, r, s, o in specs] + [((0.0, 0.0, 0.0), (1.0, 0, 0, 0), (0.1, 0.1), 0.5)] * (2 - len(specs))
    g = (jnp.array([r[0] for r in rows]), jnp.array([r[2] for r in rows]), jnp.array([r[1] for r in rows]),
         jnp.array([r[3] for r in rows]), jnp.array([[1.0, 0.5, 0.25]] * 2))
    return g, jnp.arange(2) < len(specs)


def axis_angle(axis, angle):
    return tuple(float(a) for a in (math.cos(angle / 2), *(math.sin(angle / 2) * np.asarray(axis, float))))


def pixel_grid(cam):
    j, i = np.meshgrid(np.arange(cam.height), np.arange(cam.width), indexing="ij")
    return i + 0.5 - float(cam.cx), j + 0.5 - float(cam.cy)


FRONT = camera(eye=(0.0, 0.0, 5.0), width=SIZE, height=SIZE, fov=0.5, up=(0.0, 1.0, 0.0))
"""On the +z axis looking at the origin, image x along world x, image y along world -y."""


def test_face_on_disk_renders_its_gaussian_footprint():
    """A disk facing a camera at distance z, turned by phi in its plane: opacity
    ``o exp(-(u^2 + v^2) / 2)`` with ``(u, v) = R_phi^T (x z / f, -y z / f) / s``; depth z;
    normal +z."""
    phi, s, o = 0.6, np.array([0.4, 0.2]), 0.8
    out = render(*disks(((0.0, 0.0, 0.0), axis_angle([0, 0, 1], phi), tuple(s), o)), FRONT)
    x, y = pixel_grid(FRONT)
    px, py = x * 5.0 / float(FRONT.fx), -y * 5.0 / float(FRONT.fy)
    u = (math.cos(phi) * px + math.sin(phi) * py) / s[0]
    v = (-math.sin(phi) * px + math.cos(phi) * py) / s[1]
    expected = o * np.exp(-0.5 * (u * u + v * v))
    expected = np.where(expected >= 1 / 255, expected, 0.0)
    np.testing.assert_allclose(out["opacity"], expected, atol=2e-6)
    hit = expected > 0
    assert 50 < hit.sum() < SIZE * SIZE
    np.testing.assert_allclose(np.asarray(out["depth"])[hit] / expected[hit], 5.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out["normal"])[hit] / expected[hit, None], [[0.0, 0.0, 1.0]] * hit.sum(),
                               atol=1e-5)


def test_tilted_disk_depth_is_the_plane_intersection():
    """The depth of a tilted disk (normalised by opacity) at each covered pixel is the view
    depth where the pixel's ray meets the disk's plane."""
    cam = camera(width=SIZE, height=SIZE)
    n = np.array([0.2, -0.9, 0.4]) / np.linalg.norm([0.2, -0.9, 0.4])
    axis = np.cross([0.0, 0.0, 1.0], n)
    p = np.array([0.1, 0.2, -0.1])
    out = render(*disks((tuple(p), axis_angle(axis / np.linalg.norm(axis), math.acos(n[2])), (0.5, 0.3), 0.8)), cam)
    x, y = pixel_grid(cam)
    c2w = np.asarray(cam.c2w, np.float64)
    d = np.stack([x / float(cam.fx), -y / float(cam.fy), -np.ones_like(x)], -1) @ c2w[:3, :3].T  # z-depth 1 rays
    z = np.dot(p - c2w[:, 3], n) / (d @ n)
    hit = np.asarray(out["opacity"]) > 0.05
    assert hit.sum() > 100
    np.testing.assert_allclose(np.asarray(out["depth"])[hit] / np.asarray(out["opacity"])[hit], z[hit], rtol=1e-4)


def test_edge_on_disk_falls_back_to_the_low_pass_filter():
    """A disk whose plane holds the camera centre: every ray meets the plane at the
    camera, far outside the disk, so only the filter ``o exp(-|x - c|^2 / (2 sigma^2))``
    around the projected centre remains (the disk does not vanish, nor spread)."""
    c, o = np.array([0.0, -0.07, 0.0]), 0.9  # in the plane x = 0, as the camera
    out = render(*disks((tuple(c), axis_angle([0, 1, 0], math.pi / 2), (0.3, 0.3), o)), FRONT)
    cx, cy = float(FRONT.fx) * c[0] / 5.0, -float(FRONT.fy) * c[1] / 5.0
    x, y = pixel_grid(FRONT)
    expected = o * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * CONFIG.filter_sigma**2))
    expected = np.where(expected >= 1 / 255, expected, 0.0)
    np.testing.assert_allclose(out["opacity"], expected, atol=2e-6)
    assert 0 < (expected > 0).sum() <= 25


def test_depth_distortion_of_two_layers():
    """Two face-on disks ``delta`` apart along the axis: ``sum_ij w_i w_j (z_i - z_j)^2 =
    2 w_1 w_2 delta^2``, 0 for one layer or for coincident ones, growing with the spread."""
    big, o = (30.0, 30.0), 0.5

    def centre_distortion(*delta):
        out = render(*disks(*[((0.0, 0.0, -d), (1.0, 0.0, 0.0, 0.0), big, o) for d in delta]), FRONT)
        return float(out["distortion"][SIZE // 2, SIZE // 2])

    np.testing.assert_allclose(centre_distortion(0.0), 0.0, atol=1e-8)
    np.testing.assert_allclose(centre_distortion(0.0, 0.0), 0.0, atol=1e-6)
    d1, d2 = centre_distortion(0.0, 0.1), centre_distortion(0.0, 0.2)
    w = o * math.exp(-0.5 * 2 * (0.5 * 5.0 / float(FRONT.fx) / 30.0) ** 2)
    np.testing.assert_allclose(d1, 2 * w * (1 - w) * w * 0.1**2, rtol=1e-3)
    np.testing.assert_allclose(d2, 4 * d1, rtol=1e-3)


def test_depth_normals_of_a_plane():
    """The normal of a tilted plane's depth map is the plane's normal, facing the camera."""
    cam = camera(eye=(0.0, 0.0, 5.0), width=12, height=10, fov=0.5, up=(0.0, 1.0, 0.0))
    n = np.array([0.3, -0.2, 0.93])
    n /= np.linalg.norm(n)
    x, y = pixel_grid(cam)
    z = -5.0 * n[2] / (np.stack([x / float(cam.fx), -y / float(cam.fy), -np.ones_like(x)], -1) @ n)  # plane n.x = 0
    normals = np.asarray(depth_normals(jnp.asarray(z, jnp.float32), jnp.ones(z.shape), cam))
    np.testing.assert_allclose(normals[1:-1, 1:-1], np.broadcast_to(n, (8, 10, 3)), atol=1e-4)
    assert np.all(normals[0] == 0) and np.all(normals[:, -1] == 0)


def test_normal_consistency_of_rendered_disks():
    """2DGS's normal consistency (`sparsefield.methods.surfel_step`, tested here to share
    this file's compiled renderer): 0 for a disk facing the camera, 0 for a tilted one
    (its normals and its depth map's agree), and ``A_f - A_t cos theta`` for the tilted
    disk's normals against the facing disk's depth (opacities ``A_f``, ``A_t``)."""
    o, theta = 0.9, 0.5
    facing = render(*disks(((0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), (40.0, 40.0), o)), FRONT)
    tilted = render(*disks(((0.0, 0.0, 0.0), axis_angle(np.array([1, 1, 0]) / np.sqrt(2), theta), (2.0, 2.0), o)),
                    FRONT)
    assert float(jnp.min(tilted["opacity"])) > 0.3  # it covers the view
    np.testing.assert_allclose(normal_consistency(facing, FRONT), 0.0, atol=1e-5)
    np.testing.assert_allclose(normal_consistency(tilted, FRONT), 0.0, atol=1e-4)
    mixed = {**facing, "normal": tilted["normal"]}
    expected = np.mean((facing["opacity"] - tilted["opacity"] * math.cos(theta))[1:-1, 1:-1])
    np.testing.assert_allclose(normal_consistency(mixed, FRONT), expected, rtol=1e-4)
