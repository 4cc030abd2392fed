"""Scene parameterisations: NDC rays against the projection of world points, the
contraction's closed form, sample placement (uniform inside the box, uniform in disparity
beyond), and rendering a constant-density slab through each space."""

import jax
import jax.numpy as jnp
import numpy as np

from sparsefield.renderers.render import RenderConfig, render_rays
from sparsefield.renderers.spaces import NDC, Contraction

BOX = jnp.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def test_ndc_ray_passes_through_the_projection_of_its_world_points():
    ndc = NDC(near=1.0, focal_x=0.8, focal_y=0.9)
    o = jnp.array([[0.1, -0.2, 0.05], [0.0, 0.0, 0.0]])
    d = jnp.array([[0.2, 0.1, -1.0], [-0.3, 0.2, -1.0]])
    d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
    o_ndc, d_ndc = ndc.rays(o, d)
    for t in (1.5, 4.0, 50.0):
        x = o + t * d
        proj = jnp.stack([-1.6 * x[:, 0] / x[:, 2], -1.8 * x[:, 1] / x[:, 2], 1 + 2 / x[:, 2]], -1)
        t_ndc = (proj[:, 2] - o_ndc[:, 2]) / d_ndc[:, 2]
        np.testing.assert_allclose(o_ndc + t_ndc[:, None] * d_ndc, proj, atol=1e-5)
        assert np.all((t_ndc > 0) & (t_ndc < 1))
    np.testing.assert_allclose(o_ndc[:, 2], -1.0, atol=1e-6)  # the near plane is z' = -1
    np.testing.assert_allclose(o_ndc[:, 2] + d_ndc[:, 2], 1.0, atol=1e-6)  # t' = 1: infinity


def test_contraction_is_identity_inside_and_squeezes_space_into_twice_the_box():
    c = Contraction()
    inside = jnp.array([[0.5, -0.9, 0.99], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(c.contract(inside, BOX), inside, atol=1e-7)
    far = jnp.array([[3.0, 0.0, 0.0], [0.0, -1e6, 10.0]])
    np.testing.assert_allclose(c.contract(far, BOX), [[2.0 - 1 / 3, 0, 0], [0, -2.0 + 1e-6, 10 / 1e6 * (2 - 1e-6)]],
                               atol=1e-5)
    assert np.all(np.abs(c.contract(far * 1e3, BOX)) < 2.0 + 1e-6)
    np.testing.assert_allclose(c.param_box(BOX), 2 * BOX)


def test_contraction_samples_uniform_in_the_box_then_in_disparity():
    c = Contraction(far=100.0, inner_fraction=0.5)
    o, d = jnp.zeros((1, 3)), jnp.array([[1.0, 0.0, 0.0]])
    t, deltas, x, hit = c.sample(o, d, 8, None, BOX)
    t = np.asarray(t[0])
    np.testing.assert_allclose(t[:4], [0.125, 0.375, 0.625, 0.875], atol=1e-6)  # inside: uniform in t
    disparity = 1.0 / t[4:]
    np.testing.assert_allclose(np.diff(disparity), np.diff(disparity)[0], rtol=1e-4)  # beyond: in 1 / t
    assert np.all(np.diff(t) > 0) and t[-1] < 100.0
    np.testing.assert_allclose(np.sum(np.asarray(deltas)), 100.0, rtol=1e-5)  # the bins tile [0, far]
    assert np.all(np.abs(np.asarray(x)) <= 2.0) and bool(hit.all())


def test_slab_transmittance_through_each_space():
    """A density that is constant in world space gives exp(-sigma L) along the box part of
    a ray in contracted space, and exp(-sigma L_ndc) along the NDC segment."""
    sigma0 = 0.7
    field = lambda x, d: (jnp.full(x.shape[:-1], sigma0), jnp.ones(x.shape[:-1] + (3,)))  # noqa: E731
    slab = lambda x, d: (jnp.where(jnp.abs(x[..., 0]) <= 1.0, sigma0, 0.0), jnp.ones(x.shape[:-1] + (3,)))  # noqa: E731
    o, d = jnp.array([[0.0, 0.0, 0.0]]), jnp.array([[1.0, 0.0, 0.0]])
    config = RenderConfig(num_samples=256, sample_budget=512, space=Contraction(far=100.0, inner_fraction=0.5))
    out = render_rays(slab, o, d, jnp.zeros(3), BOX, None, config, None)
    np.testing.assert_allclose(1.0 - float(out.opacity[0]), np.exp(-sigma0 * 1.0), rtol=1e-3)
    ndc = NDC(near=1.0, focal_x=1.0, focal_y=1.0)
    config = RenderConfig(num_samples=64, sample_budget=128, space=ndc)
    o, d = jnp.zeros((1, 3)), jnp.array([[0.0, 0.0, -1.0]])
    out = render_rays(field, o, d, jnp.zeros(3), BOX, None, config, jax.random.PRNGKey(0))
    length = float(jnp.linalg.norm(ndc.rays(o, d)[1]))  # the NDC ray runs t' in [0, 1]
    np.testing.assert_allclose(1.0 - float(out.opacity[0]), np.exp(-sigma0 * length), rtol=1e-4)
