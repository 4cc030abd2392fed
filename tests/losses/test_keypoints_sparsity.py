"""Keypoint depth (DS-NeRF) and density sparsity, by what they ask of a field: keypoint
depth is zero where the rendered depth meets the triangulated point and pulls it there,
ignores rays that leave the box and zero-confidence points; sparsity is the alpha of
empty space, zero for an empty field and pushing density down."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsefield.losses.base import LossInputs
from sparsefield.losses.keypoints import KeypointDepth, KeypointTargets
from sparsefield.losses.sparsity import DensitySparsity


def keypoint_inputs(depth, distance, weight, complete=None):
    depth = jnp.asarray(depth, jnp.float32)
    complete = jnp.ones_like(depth) if complete is None else jnp.asarray(complete, jnp.float32)
    rays = SimpleNamespace(depth=depth, complete=complete)
    targets = KeypointTargets(rays, jnp.asarray(distance, jnp.float32), jnp.asarray(weight, jnp.float32))
    return LossInputs(rays=None, batch={}, step=0, keypoints=targets)


def test_keypoint_depth_is_zero_at_the_point_and_relative_elsewhere():
    term = KeypointDepth()
    assert float(term(keypoint_inputs([2.0, 4.0], [2.0, 4.0], [1.0, 1.0]))) == 0.0
    # 10% short on one ray, 20% long on the other, confidences 1 and 3: (0.1 + 3 * 0.2) / 4
    np.testing.assert_allclose(term(keypoint_inputs([1.8, 4.8], [2.0, 4.0], [1.0, 3.0])), 0.175, rtol=1e-6)


def test_keypoint_depth_leaves_out_incomplete_rays_and_unweighted_points():
    term = KeypointDepth()
    inputs = keypoint_inputs([9.0, 9.0, 2.2], [2.0, 2.0, 2.0], [0.0, 1.0, 1.0], complete=[1.0, 0.0, 1.0])
    np.testing.assert_allclose(term(inputs), 0.1, rtol=1e-5)


def test_keypoint_depth_pulls_the_rendered_depth_to_the_point():
    term = KeypointDepth()
    grad = jax.grad(lambda d: term(keypoint_inputs(d, [2.0, 2.0], [1.0, 1.0])))(jnp.array([1.5, 2.5]))
    assert grad[0] < 0 < grad[1]  # a descent step lengthens the short ray and shortens the long one


def test_keypoint_depth_with_until_is_off_from_that_step():
    assert float(KeypointDepth(weight=0.1).weight_at(10_000)) == pytest.approx(0.1)
    term = KeypointDepth(weight=0.1, until=300)
    weights = jax.jit(term.weight_at)(jnp.array([0, 299, 300, 999]))
    np.testing.assert_allclose(weights, [0.1, 0.1, 0.0, 0.0])


def sparsity_inputs(density_fn):
    box = jnp.array([[-1.0] * 3, [1.0] * 3])
    return LossInputs(rays=None, batch={}, step=0, density=(density_fn, box, 0.01, jax.random.PRNGKey(0)))


def test_sparsity_is_the_alpha_of_random_points_of_the_box():
    term = DensitySparsity(points=20_000)
    assert float(term(sparsity_inputs(lambda x: jnp.zeros(x.shape[0])))) == 0.0
    # density 100 in the half x > 0: alpha 1 - exp(-100 * 0.01) on about half the points
    half = term(sparsity_inputs(lambda x: jnp.where(x[:, 0] > 0, 100.0, 0.0)))
    np.testing.assert_allclose(half, 0.5 * (1 - np.exp(-1.0)), rtol=0.03)


def test_sparsity_pushes_density_down():
    term = DensitySparsity(points=512)
    grad = jax.grad(lambda s: term(sparsity_inputs(lambda x: jnp.full(x.shape[0], s))))(5.0)
    assert grad > 0  # a descent step lowers the density
