"""Loss terms: values on hand-made inputs against their definitions."""

import itertools

import jax.numpy as jnp
import numpy as np

from sparsefield.renderers.regularizers import Distortion, Regularizers, distortion


def brute_force_distortion(w, s, ds):
    pairs = sum(w[i] * w[j] * abs(s[i] - s[j]) for i, j in itertools.product(range(len(w)), repeat=2))
    return pairs + np.sum(w**2 * ds) / 3.0


def test_distortion_matches_double_sum():
    rng = np.random.default_rng(0)
    w = rng.random((4, 9))
    s = np.sort(rng.random((4, 9)), axis=-1)
    ds = rng.random((4, 9)) * 0.1
    want = [brute_force_distortion(w[r], s[r], ds[r]) for r in range(4)]
    got = distortion(jnp.asarray(w), jnp.asarray(s), jnp.asarray(ds))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_distortion_prefers_one_compact_interval():
    s = jnp.linspace(0.05, 0.95, 10)[None]
    ds = jnp.full((1, 10), 0.1)
    concentrated = jnp.zeros((1, 10)).at[0, 4].set(1.0)
    spread = jnp.zeros((1, 10)).at[0, 1].set(0.5).at[0, 8].set(0.5)
    # One full-weight interval: only the intra term, w^2 ds / 3.
    np.testing.assert_allclose(distortion(concentrated, s, ds), [0.1 / 3.0], rtol=1e-6)
    # Two half-weight intervals 0.7 apart: 2 * 0.25 * 0.7 + 2 * 0.25 * 0.1 / 3.
    np.testing.assert_allclose(distortion(spread, s, ds), [0.35 + 0.05 / 3.0], rtol=1e-6)


def test_distortion_term_averages_complete_rays_only():
    outputs = {
        "weights": jnp.array([[1.0, 0.0], [0.5, 0.5]]),
        "s": jnp.array([[0.25, 0.75], [0.25, 0.75]]),
        "ds": jnp.full((2, 2), 0.5),
        "complete": jnp.array([True, False]),
    }
    np.testing.assert_allclose(Distortion()(outputs, {}, 0), 0.5 / 3.0, rtol=1e-6)


def test_regularizers_lists_terms_that_are_on():
    assert Regularizers().terms() == {}
    assert list(Regularizers(distortion=Distortion()).terms()) == ["distortion"]
