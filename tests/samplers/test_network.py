"""The LeC2O occupancy network: the renderer's query, learning a known occupancy from a
density field with the imbalanced loss, and the explicit density loss's direction."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsefield.samplers.network import OccupancyNetConfig, OccupancyNetState, occupancy_losses

BOX = jnp.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
CONFIG = OccupancyNetConfig(points=2048)


def ball(x):
    """Dense inside a ball of radius 0.5 (6.5% of the box), empty elsewhere."""
    return jnp.where(jnp.linalg.norm(x, axis=-1) < 0.5, 50.0, 0.0)


def test_query_is_all_occupied_in_warm_up_and_false_outside_the_cube():
    params, _ = CONFIG.init(jax.random.PRNGKey(0))
    unit = jnp.array([[0.5, 0.5, 0.5], [0.1, 0.9, 0.2], [1.2, 0.5, 0.5]])
    warm = OccupancyNetState(params, jnp.array(True), CONFIG)
    np.testing.assert_array_equal(warm.query(unit), [True, True, False])


def test_network_learns_the_occupancy_of_a_ball_within_the_ratio_cap():
    params, _ = CONFIG.init(jax.random.PRNGKey(0))
    opt = optax.adam(1e-2)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, key):
        loss = lambda p: occupancy_losses(CONFIG, p, ball, BOX, 0.02, key)["occupancy"]  # noqa: E731
        grads = jax.grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    for i in range(100):
        params, opt_state = step(params, opt_state, jax.random.PRNGKey(i))
    unit = jax.random.uniform(jax.random.PRNGKey(999), (20000, 3))
    truth = np.asarray(ball(BOX[0] + unit * 2.0) > 0)
    said = np.asarray(OccupancyNetState(params, jnp.array(False), CONFIG).query(unit))
    assert np.mean(said[truth]) > 0.95  # the ball is kept (occupied points weigh 4x)
    assert np.mean(~said[~truth]) > 0.9  # most empty space is skipped
    assert np.mean(said) < CONFIG.rho


def test_density_loss_pushes_density_down_where_the_network_says_empty():
    params, _ = CONFIG.init(jax.random.PRNGKey(1))
    params["mlp"][-1]["b"] = params["mlp"][-1]["b"] - 10.0  # says empty everywhere

    def density_loss(scale):
        fn = lambda x: scale * jnp.ones(x.shape[:-1])  # noqa: E731
        return occupancy_losses(CONFIG, params, fn, BOX, 0.02, jax.random.PRNGKey(0))["density"]

    assert float(jax.grad(density_loss)(1.0)) > 0.0  # descending lowers the density
    params["mlp"][-1]["b"] = params["mlp"][-1]["b"] + 20.0  # now occupied everywhere
    assert abs(float(jax.grad(density_loss)(1.0))) < 1e-6
