"""Cross-view photometric consistency: rays whose rendered depth puts their surface point
where the other views see the same colour score zero; a wrong depth scores more, and the
gradient moves the depth towards the right one."""

import jax
import jax.numpy as jnp
import numpy as np

from sparsefield.cameras import image_rays, look_at, make_cameras
from sparsefield.datasets.batches import RayData
from sparsefield.losses.base import LossInputs
from sparsefield.losses.consistency import CrossViewConsistency, bilinear
from sparsefield.renderers.render import RenderedRays

SIZE = 48


def plane_views():
    """Two cameras 3 units above a textured plane z = 0 (a smooth pattern, so bilinear
    sampling is accurate), looking down at it from 0.6 apart: their images and cameras."""
    eyes = [(-0.3, 0.0, 3.0), (0.3, 0.0, 3.0)]
    cams = make_cameras(np.stack([look_at(e, (e[0], 0.0, 0.0), up=(0, 1, 0)) for e in eyes]), 0.8, SIZE, SIZE)
    images = []
    for k in range(2):
        o, d = (np.asarray(a) for a in image_rays(jax.tree_util.tree_map(jnp.asarray, cams[k])))
        t = -o[..., 2] / d[..., 2]
        x, y = (o + t[..., None] * d)[..., 0], (o + t[..., None] * d)[..., 1]
        images.append(np.stack([0.5 + 0.4 * np.sin(6 * x), 0.5 + 0.4 * np.cos(5 * y), 0.5 + 0.2 * np.sin(4 * (x + y))], -1))
    data = RayData(jnp.asarray(np.stack(images), jnp.float32), jnp.ones((2, SIZE, SIZE)),
                   jax.tree_util.tree_map(jnp.asarray, cams), jnp.ones(3), False)
    return data, cams


def rays_of_view_0(data, scale):
    """The centre pixels of view 0, rendered at ``scale`` times their true distance."""
    o, d = image_rays(jax.tree_util.tree_map(jnp.asarray, data.cameras[0]))
    sl = slice(SIZE // 4, 3 * SIZE // 4)
    o, d, rgb = o[sl, sl].reshape(-1, 3), d[sl, sl].reshape(-1, 3), data.images[0, sl, sl].reshape(-1, 3)
    true = -o[:, 2] / d[:, 2]
    n = o.shape[0]
    batch = {"origins": o, "directions": d, "rgb": rgb, "view": jnp.zeros(n, jnp.int32)}
    return true, batch, n


def loss_at(scale, data):
    true, batch, n = rays_of_view_0(data, scale)
    rays = RenderedRays(rgb=batch["rgb"], depth=true * scale, opacity=jnp.ones(n), complete=jnp.ones(n, bool),
                        distance=jnp.zeros(n))
    return CrossViewConsistency()(LossInputs(rays, batch, 0, views=data))


def test_the_right_depth_is_consistent_and_a_wrong_one_is_not():
    data, _ = plane_views()
    assert float(loss_at(1.0, data)) < 0.01
    assert float(loss_at(0.9, data)) > 5 * float(loss_at(1.0, data))
    assert float(loss_at(1.1, data)) > 5 * float(loss_at(1.0, data))


def test_the_gradient_moves_depth_towards_the_surface():
    data, _ = plane_views()
    grad_near = jax.grad(lambda s: loss_at(s, data))(0.97)
    grad_far = jax.grad(lambda s: loss_at(s, data))(1.03)
    assert float(grad_near) < 0 < float(grad_far)


def test_a_ray_seen_by_no_other_view_and_a_transparent_ray_count_nothing():
    data, _ = plane_views()
    true, batch, n = rays_of_view_0(data, 1.0)
    rays = RenderedRays(rgb=batch["rgb"], depth=true * 1.3, opacity=jnp.full(n, 0.2), complete=jnp.ones(n, bool),
                        distance=jnp.zeros(n))
    assert float(CrossViewConsistency()(LossInputs(rays, batch, 0, views=data))) == 0.0  # below min_opacity
    behind = {**batch, "directions": -batch["directions"]}  # points behind both cameras
    rays = RenderedRays(rgb=batch["rgb"], depth=true, opacity=jnp.ones(n), complete=jnp.ones(n, bool),
                        distance=jnp.zeros(n))
    assert float(CrossViewConsistency()(LossInputs(rays, behind, 0, views=data))) == 0.0


def test_bilinear_sampling_interpolates_pixel_centres():
    image = jnp.arange(12.0).reshape(3, 4, 1)
    np.testing.assert_allclose(bilinear(image, jnp.array([[0.5, 0.5], [1.5, 0.5], [1.0, 1.0], [3.5, 2.5]])),
                               [[0.0], [1.0], [(0 + 1 + 4 + 5) / 4], [11.0]])
