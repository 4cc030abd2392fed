"""The samplers: the occupancy grid follows the density and skips empty space, carving by
visual hull and view count; every sampler answers the one interface the radiance field
calls (`sparsefield.samplers.base`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsefield.cameras import image_rays, make_cameras, orbit_poses
from sparsefield.fields.gaussians import hull_test
from sparsefield.renderers.render import RenderConfig, render_rays
from sparsefield.samplers.base import EverySample
from sparsefield.samplers.grid import (
    OccupancyGridConfig,
    carve_visual_hull,
    init_occupancy,
    query_occupancy,
    update_occupancy,
)
from sparsefield.samplers.network import OccupancyNetConfig

BOX = jnp.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


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


def test_occupancy_grid_follows_density_and_skips_empty_space():
    config = OccupancyGridConfig(resolution=16, warmup_steps=0, chunk=1024)
    state = init_occupancy(config)
    density = lambda x: ball_field(x, x)[0]  # noqa: E731
    for k in range(10):  # repeated refreshes: the EMA-max approaches each cell's max density
        state = update_occupancy(config, state, density, BOX, 2 / 64, jax.random.PRNGKey(k), jnp.array(10))
    occupied = np.asarray(state.occupied)
    centres = (np.stack(np.meshgrid(*[np.arange(16)] * 3, indexing="ij"), -1) + 0.5) / 16 * 2 - 1
    r = np.linalg.norm(centres, axis=-1)
    assert occupied[r < 0.4].all() and not occupied[r > 0.75].any()
    assert not bool(query_occupancy(state, jnp.array([1.5, 0.5, 0.5])))
    # warm-up keeps every cell occupied
    warm = update_occupancy(OccupancyGridConfig(resolution=16, chunk=1024), init_occupancy(config),
                            density, BOX, 2 / 64, jax.random.PRNGKey(0), jnp.array(0))
    assert np.asarray(warm.occupied).all()
    # with the grid, the march skips most samples but the image stays the same
    o, d = random_rays(64, jax.random.PRNGKey(1))
    cfg = RenderConfig(num_samples=64, sample_budget=64 * 64)
    with_grid = render_rays(ball_field, o, d, jnp.ones((64, 3)), BOX, state, cfg, None)
    without = render_rays(ball_field, o, d, jnp.ones((64, 3)), BOX, None, cfg, None)
    assert int(with_grid.marched) < 0.5 * int(without.marched)
    # skipped cells each hold alpha below the 1% threshold: small, bounded differences
    np.testing.assert_allclose(with_grid.rgb, without.rgb, atol=0.03)
    assert float(jnp.mean(jnp.abs(with_grid.rgb - without.rgb))) < 3e-3




def test_visual_hull_carving_keeps_the_object_and_removes_background():
    poses = orbit_poses([0, 0, 0], 3.0, 20.0, 6)
    cams = make_cameras(poses, fov_x=0.9, width=40, height=40)
    masks = []
    for k in range(6):  # alpha mask of a ball of radius 0.5 at the origin
        o, d = image_rays(cams[k])
        b = jnp.sum(o * d, -1)
        disc = b**2 - (jnp.sum(o * o, -1) - 0.25)
        masks.append(np.asarray(disc > 0, np.float32))
    config = OccupancyGridConfig(resolution=16)
    grid = carve_visual_hull(init_occupancy(config), cams, np.stack(masks), np.asarray(BOX))
    allowed = np.asarray(grid.allowed)
    centres = (np.stack(np.meshgrid(*[np.arange(16)] * 3, indexing="ij"), -1) + 0.5) / 16 * 2 - 1
    r = np.linalg.norm(centres, axis=-1)
    assert allowed[r < 0.55].all()  # every cell touching the ball survives
    assert allowed.mean() < 0.35 and not allowed[r > 1.2].any()
    assert not np.asarray(grid.occupied)[~allowed].any()


def test_carving_by_view_count_needs_no_masks():
    """Cells that fewer than ``min_seen`` cameras see are forbidden (the same count as the
    Gaussians' `hull_test`); the centre, seen by all six, survives every count."""
    cams = make_cameras(orbit_poses([0, 0, 0], 3.0, 20.0, 6), fov_x=0.6, width=40, height=40)
    config = OccupancyGridConfig(resolution=16)
    centres = ((np.stack(np.meshgrid(*[np.arange(16)] * 3, indexing="ij"), -1) + 0.5) / 16 * 2 - 1).reshape(-1, 3)
    kept = []
    for k in (1, 3, 6):
        allowed = np.asarray(carve_visual_hull(init_occupancy(config), cams, None, np.asarray(BOX), min_seen=k).allowed)
        np.testing.assert_array_equal(allowed.reshape(-1), hull_test(centres, cams, None, min_views=k)[0])
        assert allowed.reshape(-1)[np.linalg.norm(centres, axis=-1) < 0.3].all()
        kept.append(allowed.mean())
    assert kept[0] > kept[1] > kept[2] > 0


@pytest.mark.parametrize("sampler", [OccupancyGridConfig(resolution=8, update_every=2, warmup_steps=0, chunk=512),
                                     OccupancyNetConfig(points=256, warmup_steps=0), EverySample()])
def test_every_sampler_answers_the_same_calls(sampler):
    """init / occupancy / update / losses / carve, jitted where the train step jits them:
    the grid refreshes every ``update_every`` steps, the network trains through its
    losses, and no sampler marks a point outside the box."""
    density = lambda x: ball_field(x, x)[0]  # noqa: E731
    params, state = sampler.init(jax.random.PRNGKey(0))
    update = jax.jit(lambda s, step: sampler.update(s, density, BOX, 2 / 64, jax.random.PRNGKey(1), step))
    losses = jax.jit(lambda p, step: sampler.losses(p, density, BOX, 2 / 64, jax.random.PRNGKey(2), step))
    state = update(state, jnp.array(4))
    loss_terms, metrics = losses(params, jnp.array(4))
    occupancy = sampler.occupancy(params, state, jnp.array(4))
    if isinstance(sampler, EverySample):
        assert occupancy is None and loss_terms == {} and state is None
        return
    inside, outside = jnp.zeros((1, 3)) + 0.5, jnp.array([[1.5, 0.5, 0.5]])
    assert bool(occupancy.query(inside)[0]) and not bool(occupancy.query(outside)[0])
    if isinstance(sampler, OccupancyGridConfig):
        assert loss_terms == {} and float(state.density.max()) > 1.0
        skipped = update(state, jnp.array(5))  # not a refresh step: unchanged
        np.testing.assert_array_equal(np.asarray(skipped.density), np.asarray(state.density))
    else:
        assert set(loss_terms) == {"occupancy", "occupancy_density"} and "occupied" in metrics
        grads = jax.grad(lambda p: sum(losses(p, jnp.array(4))[0].values()))(params)
        assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(grads))
