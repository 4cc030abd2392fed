"""CAM and the coarse-to-fine (FreeNeRF) mask."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sparsefield.fields.field import FieldConfig, RadianceField
from sparsefield.fields.frequency import CoarseToFine, Frequency
from sparsefield.fields.grid import HashGrid
from sparsefield.fields.mlp import apply_mlp, init_mlp
from sparsefield.fields.modulation import CAM

BOX = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
SMALL_GRID = HashGrid(levels=4, log2_table_size=10, max_res=32)


def test_cam_with_zero_modulation_leaves_the_mlp_unchanged():
    cam = CAM(resolution=4, normalize=False)
    mlp = init_mlp(jax.random.PRNGKey(0), [5, 16, 3])
    params = jax.tree_util.tree_map(jnp.zeros_like, cam.init(jax.random.PRNGKey(1), 16))
    x = jax.random.uniform(jax.random.PRNGKey(2), (7, 3))
    h = jax.random.normal(jax.random.PRNGKey(3), (7, 5))
    plain = apply_mlp(mlp, h)
    modulated = apply_mlp(mlp, h, lambda z: cam.modulate(params, x, z))
    np.testing.assert_array_equal(plain, modulated)


def test_cam_scale_and_shift_follow_the_grid():
    cam = CAM(resolution=2, normalize=False)
    table = jnp.zeros((1, 27, 4)).at[..., :2].set(1.0).at[..., 2:].set(0.5)  # gamma 2, beta 0.5
    h = jnp.array([[1.0, -3.0]])
    out = cam.modulate({"table": table}, jnp.array([[0.3, 0.6, 0.9]]), h)
    np.testing.assert_allclose(out, 2.0 * h + 0.5, rtol=1e-6)


def test_cam_normalises_features_when_asked():
    cam = CAM(resolution=2, normalize=True)
    params = {"table": jnp.zeros((1, 27, 8))}
    out = cam.modulate(params, jnp.full((3, 3), 0.5), jnp.arange(12.0).reshape(3, 4))
    np.testing.assert_allclose(jnp.mean(out, -1), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.var(out, -1), 1.0, rtol=1e-3)


def test_coarse_to_fine_mask_opens_levels_linearly():
    c2f = CoarseToFine(fraction=0.5, start=1.0)
    levels = np.array([-1, 0, 1, 2, 3])
    np.testing.assert_allclose(c2f.mask(levels, 0.0), [1, 1, 0, 0, 0])
    # progress 0.25 of 0.5: ptr = 1 + 4 * 0.5 = 3 -> levels 0..2 open.
    np.testing.assert_allclose(c2f.mask(levels, 0.25), [1, 1, 1, 1, 0])
    np.testing.assert_allclose(c2f.mask(levels, 0.3125), [1, 1, 1, 1, 0.5])
    np.testing.assert_allclose(c2f.mask(levels, 0.9), [1, 1, 1, 1, 1])


def test_frequency_feature_levels_match_the_layout():
    enc = Frequency(num_freqs=3, dim=2)
    levels = enc.feature_levels
    assert levels.shape == (enc.out_dim,)
    x = jnp.array([[0.3, 0.7]])
    feats = enc.apply({}, x)
    # Features of octave 0 are sin/cos(pi (2x - 1)).
    np.testing.assert_allclose(feats[0, levels == 0], jnp.concatenate(
        [jnp.sin(jnp.pi * (2 * x[0] - 1)), jnp.cos(jnp.pi * (2 * x[0] - 1))]), rtol=1e-6)


def test_field_with_mask_and_cam_runs_and_full_progress_equals_no_mask():
    config = FieldConfig(encoding=SMALL_GRID, coarse_to_fine=CoarseToFine(), cam=CAM(resolution=4))
    field = RadianceField(config, BOX)
    params = field.init(jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (9, 3), minval=-1, maxval=1)
    d = jnp.tile(jnp.array([[0.0, 0.0, 1.0]]), (9, 1))
    sigma0, rgb0 = field(params, x, d, progress=0.0)
    sigma1, rgb1 = field(params, x, d, progress=1.0)
    sigma, rgb = field(params, x, d)
    assert np.all(np.isfinite(sigma0)) and np.all(np.isfinite(rgb0))
    np.testing.assert_allclose(sigma1, sigma, rtol=1e-6)
    plain = RadianceField(dataclasses.replace(config, coarse_to_fine=None), BOX)
    np.testing.assert_allclose(plain(params, x, d)[0], sigma, rtol=1e-6)
