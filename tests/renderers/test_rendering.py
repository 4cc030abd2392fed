"""Cameras, compositing against closed forms, packed marching against the dense
reference and chunked image rendering."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from sparsefield.cameras import intersect_box, look_at, make_cameras, pixel_rays, image_rays
from sparsefield.renderers.render import RenderConfig, render_image, render_rays
from sparsefield.renderers.samplers import pack_samples
from sparsefield.renderers.volume import composite, composite_packed, segment_cumsum, segment_starts

BOX = jnp.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def test_pixel_rays_hand_worked_camera():
    # camera at (0, 0, 5) looking at the origin: the OpenGL camera looks down -Z
    cam = make_cameras(np.eye(4)[None, :3] + np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 5.0]]),
                       fov_x=math.pi / 2, width=4, height=2)
    assert np.isclose(cam.fx[0], 2.0)  # 0.5 * W / tan(45 deg)
    o, d = pixel_rays(cam[0], jnp.array([2.0, 4.0]), jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(o, [[0, 0, 5], [0, 0, 5]])
    np.testing.assert_allclose(d[0], [0, 0, -1], atol=1e-7)  # the image centre
    # right edge, top row: (+1, +0.5, -1) normalised (x right, y up)
    np.testing.assert_allclose(d[1], np.array([1.0, 0.5, -1.0]) / 1.5, atol=1e-6)
    o, d = image_rays(cam[0])
    assert d.shape == (2, 4, 3)
    np.testing.assert_allclose(d[0, 0], np.array([-0.75, 0.25, -1]) / np.linalg.norm([-0.75, 0.25, -1]), atol=1e-6)


def test_look_at_points_camera_at_target():
    c2w = look_at([3.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(-c2w[:, 2], [-1, 0, 0], atol=1e-6)  # forward = -Z axis
    np.testing.assert_allclose(c2w[:, 1], [0, 0, 1], atol=1e-6)  # up stays +Z
    np.testing.assert_allclose(c2w[:, :3].T @ c2w[:, :3], np.eye(3), atol=1e-6)


def test_intersect_box():
    o = jnp.array([[0.0, 0.0, 5.0], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    d = jnp.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    t0, t1, hit = intersect_box(o, d, BOX[0], BOX[1])
    np.testing.assert_allclose(t0, [4.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(t1[:2], [6.0, 1.0], atol=1e-6)
    assert list(np.asarray(hit)) == [True, True, False]


def test_composite_constant_slab_matches_closed_form():
    sigma, length, samples = 1.7, 2.0, 64
    t = (jnp.arange(samples) + 0.5) / samples * length
    deltas = jnp.full((1, samples), length / samples)
    rgb = jnp.broadcast_to(jnp.array([0.2, 0.4, 0.6]), (1, samples, 3))
    out = composite(jnp.full((1, samples), sigma), rgb, t[None], deltas, jnp.array([1.0, 1.0, 1.0]))
    opacity = 1.0 - math.exp(-sigma * length)  # 1 - T, T = exp(-sigma L)
    np.testing.assert_allclose(out["opacity"][0], opacity, rtol=1e-5)
    np.testing.assert_allclose(out["rgb"][0], np.array([0.2, 0.4, 0.6]) * opacity + (1 - opacity), rtol=1e-5)
    # expected depth: int_0^L t sigma e^{-sigma t} dt
    exact = (1 - math.exp(-sigma * length) * (1 + sigma * length)) / sigma
    np.testing.assert_allclose(out["depth"][0], exact, rtol=2e-3)


def test_weights_sum_at_most_one():
    sigma = jax.random.uniform(jax.random.PRNGKey(0), (100, 32)) * 50
    out = composite(sigma, jnp.zeros((100, 32, 3)), jnp.ones((100, 32)), jnp.full((100, 32), 0.1), jnp.zeros(3))
    total = np.asarray(out["weights"].sum(-1))
    assert np.all(total <= 1 + 1e-6) and np.all(total >= 0)


def random_packed(key, rays=6, samples=16, budget=64):
    """Dense ``[R, S]`` samples with about a third occupied, and their packed form."""
    k1, k2, k3 = jax.random.split(key, 3)
    mask = jax.random.uniform(k1, (rays, samples)) < 0.35
    sigma = jnp.where(mask, 40.0 * jax.random.uniform(k2, (rays, samples)), 0.0)
    rgb = jax.random.uniform(k3, (rays, samples, 3))
    t = jnp.broadcast_to(jnp.linspace(0.1, 3.0, samples), (rays, samples))
    deltas = jnp.full((rays, samples), 2.9 / samples)
    index, valid, _ = pack_samples(mask, budget)
    ray = jnp.where(valid, index // samples, rays)
    flat = lambda a: a.reshape(rays * samples, *a.shape[2:])[index]  # noqa: E731
    packed = (jnp.where(valid, flat(sigma), 0.0), flat(rgb), flat(t), flat(deltas), ray)
    return (sigma, rgb, t, deltas), packed, np.asarray(valid), np.asarray(index)


def test_segment_cumsum_is_an_exclusive_sum_per_segment():
    values = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    ray = jnp.array([0, 0, 0, 2, 2, 5, 5])
    want = [0, 1, 3, 0, 4, 0, 6]
    np.testing.assert_allclose(segment_cumsum(values, segment_starts(ray)), want)
    np.testing.assert_allclose(segment_cumsum(values, segment_starts(ray), max_length=3), want)
    long = jnp.arange(100.0)
    np.testing.assert_allclose(segment_cumsum(long, segment_starts(jnp.zeros(100, int)), 100),
                               np.cumsum(np.arange(100.0)) - np.arange(100.0))


def test_packed_compositing_equals_dense():
    (sigma, rgb, t, deltas), packed, valid, index = random_packed(jax.random.PRNGKey(3))
    background = jnp.array([0.1, 0.5, 0.9])
    dense = composite(sigma, rgb, t, deltas, background)
    out = composite_packed(*packed, sigma.shape[0], background, max_samples=sigma.shape[1])
    for key in ("rgb", "depth", "opacity"):
        np.testing.assert_allclose(out[key], dense[key], rtol=1e-5, atol=1e-6)
    # the packed weights are the dense ones at the occupied samples, zero in unused slots
    dense_w = np.asarray(dense["weights"]).ravel()
    np.testing.assert_allclose(np.asarray(out["weights"])[valid], dense_w[index[valid]], rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(out["weights"])[~valid] == 0)
    # and so are the gradients
    grad_dense = jax.grad(lambda s: composite(s, rgb, t, deltas, background)["rgb"].sum())(sigma)
    grad_packed = jax.grad(lambda s: composite_packed(s, *packed[1:], sigma.shape[0], background)["rgb"].sum())(
        packed[0])
    np.testing.assert_allclose(np.asarray(grad_packed)[valid], np.asarray(grad_dense).ravel()[index[valid]],
                               rtol=1e-4, atol=1e-6)


def test_pack_samples_equals_nonzero_on_random_masks():
    for fill, budget in ((0.0, 64), (0.3, 256), (0.3, 100), (1.0, 300)):  # 100, 300: overflow
        mask = jax.random.uniform(jax.random.PRNGKey(int(fill * 10) + budget), (40, 16)) < fill
        index, valid, complete = pack_samples(mask, budget)
        (want,) = jnp.nonzero(mask.ravel(), size=budget, fill_value=0)
        np.testing.assert_array_equal(index, want)
        np.testing.assert_array_equal(valid, np.arange(budget) < int(mask.sum()))
        np.testing.assert_array_equal(complete, np.cumsum(np.asarray(mask).sum(1)) <= budget)


def test_pack_samples_marks_complete_rays():
    mask = jnp.array([[1, 1, 0], [0, 1, 1], [1, 1, 1]], bool)
    index, valid, complete = pack_samples(mask, 5)
    assert list(np.asarray(index)[np.asarray(valid)]) == [0, 1, 4, 5, 6]
    assert list(np.asarray(complete)) == [True, True, False]


def ball_field(x, d):
    r = jnp.linalg.norm(x, axis=-1)
    sigma = 30.0 * jax.nn.sigmoid((0.5 - r) * 40.0)
    rgb = jnp.stack([0.5 + 0.5 * x[..., 0], 0.5 + 0.25 * d[..., 1], jnp.full_like(r, 0.3)], -1)
    return sigma, rgb


def random_rays(n, key):
    o = jnp.array([0.0, 0.0, 3.0]) + 0.2 * jax.random.normal(key, (n, 3))
    target = 0.6 * jax.random.uniform(jax.random.fold_in(key, 1), (n, 3), minval=-1, maxval=1)
    d = target - o
    return o, d / jnp.linalg.norm(d, axis=-1, keepdims=True)


def test_packed_march_equals_dense_reference():
    o, d = random_rays(64, jax.random.PRNGKey(0))
    bg = jnp.ones((64, 3))
    dense = render_rays(ball_field, o, d, bg, BOX, None, RenderConfig(num_samples=48, sample_budget=64 * 48), None)
    small = render_rays(ball_field, o, d, bg, BOX, None, RenderConfig(num_samples=48, sample_budget=20 * 48), None)
    assert 18 <= int(small.complete.sum()) <= 21
    keep = np.asarray(small.complete)
    np.testing.assert_allclose(small.rgb[keep], dense.rgb[keep], atol=1e-6)
    assert dense.complete.all()


def test_render_image_matches_dense_rendering():
    c2w = look_at([0.0, -3.0, 1.0], [0.0, 0.0, 0.0])
    cam = make_cameras(c2w[None], fov_x=0.8, width=24, height=20)[0]
    fn = lambda params, x, d: ball_field(x, d)  # noqa: E731
    cfg = RenderConfig(num_samples=64, chunk=128)
    img = render_image(fn, {}, cam, BOX, None, cfg, jnp.ones(3))
    o, d = image_rays(cam)
    ref = render_rays(ball_field, o.reshape(-1, 3), d.reshape(-1, 3), jnp.ones((480, 3)), BOX, None,
                      RenderConfig(num_samples=64, sample_budget=480 * 64), None)
    np.testing.assert_allclose(img["rgb"].reshape(-1, 3), ref.rgb, atol=1e-5)
    np.testing.assert_allclose(img["opacity"].reshape(-1), ref.opacity, atol=1e-5)
    assert img["rgb"].shape == (20, 24, 3) and img["opacity"].max() > 0.99
    # behind an opaque surface samples no longer count as seen
    assert np.mean(img["samples"][img["opacity"] > 0.999] < 40) > 0.8


def test_surface_depth_is_where_the_transmittance_falls_through_the_level():
    """A half-space z < 0 of density S seen straight down from z = 3: the transmittance
    past the plane (t = 3) is exp(-S (t - 3)), so it falls through the level L at
    3 + ln(1 / L) / S, inside the first dense bin (S = 20) or a later one (S = 5); the
    plane is a bin boundary (64 bins over t in [2, 4]), so the piecewise-constant model
    is exact. The expected depth lies deeper; a ray that meets nothing has depth 0."""
    from sparsefield.renderers.render import SURFACE_TRANSMITTANCE as level

    down = look_at([0.0, 0.0, 3.0], [0.0, 0.0, 0.0], up=(0.0, 1.0, 0.0))
    cam = make_cameras(down[None], fov_x=1e-3, width=1, height=1)[0]
    cfg = RenderConfig(num_samples=64, chunk=128)
    for density in (20.0, 5.0):
        def fn(params, x, d, density=density):
            return jnp.where(x[..., 2] < 0.0, density, 0.0), jnp.full(x.shape, 0.5)

        img = render_image(fn, {}, cam, BOX, None, cfg, jnp.ones(3))
        np.testing.assert_allclose(img["surface_depth"][0, 0], 3.0 + math.log(1.0 / level) / density, atol=1e-4)
        assert img["depth"][0, 0] / img["opacity"][0, 0] > img["surface_depth"][0, 0] + 0.3 / density
    up = make_cameras(look_at([0.0, 0.0, 3.0], [0.0, 0.0, 6.0], up=(0.0, 1.0, 0.0))[None], 1e-3, 1, 1)[0]
    empty = render_image(lambda p, x, d: (jnp.zeros(x.shape[:-1]), jnp.zeros(x.shape)), {}, up, BOX, None, cfg,
                         jnp.ones(3))
    assert empty["surface_depth"][0, 0] == 0.0
