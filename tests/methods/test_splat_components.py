"""The Gaussian path's sparse-view components: DropGaussian drops the stated share and
keeps the expected opacity; opacity decay multiplies every opacity, and stops."""

import jax
import jax.numpy as jnp
import numpy as np

from sparsefield.methods.splat_step import DropGaussian, OpacityDecay


def test_drop_gaussian_drops_its_rate_and_compensates_the_opacity():
    alive, opacity = jnp.ones(20000, bool), jnp.full(20000, 0.4)
    kept, scaled = DropGaussian(rate=0.25, ramp=False).apply(alive, opacity, jax.random.PRNGKey(0), 0.3)
    assert abs(float(kept.mean()) - 0.75) < 0.02
    np.testing.assert_allclose(scaled, 0.4 / 0.75, rtol=1e-6)
    assert abs(float(jnp.sum(scaled * kept)) / float(jnp.sum(opacity)) - 1.0) < 0.03  # in expectation, unchanged
    kept, scaled = DropGaussian(rate=0.25, ramp=True).apply(alive, opacity, jax.random.PRNGKey(0), 0.0)
    assert bool(kept.all()) and np.allclose(scaled, 0.4)  # the ramp starts at no drop
    kept, _ = DropGaussian(rate=0.25, ramp=True).apply(alive, opacity, jax.random.PRNGKey(0), 0.5)
    assert abs(float(kept.mean()) - 0.875) < 0.02
    dead = jnp.zeros(10, bool)
    assert not bool(DropGaussian(rate=0.5).apply(dead, jnp.ones(10), jax.random.PRNGKey(1), 1.0)[0].any())


def test_opacity_decay_multiplies_the_opacity_until_it_stops():
    logits = jnp.array([-3.0, 0.0, 2.0, 6.0])
    decay = OpacityDecay(factor=0.9, stop=0.5)
    np.testing.assert_allclose(jax.nn.sigmoid(decay.apply(logits, 0.2)), 0.9 * jax.nn.sigmoid(logits), rtol=1e-5)
    np.testing.assert_array_equal(decay.apply(logits, 0.6), logits)
