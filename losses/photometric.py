"""Colour losses between a render and its target image: the D-SSIM term Gaussian
splatting trains with (3DGS: ``(1 - lambda) L1 + lambda (1 - SSIM)``)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import metrics


def ssim_for_training(x: Float[Array, "H W C"], y: Float[Array, "H W C"]) -> Float[Array, ""]:
    """SSIM with the same 11x11 Gaussian window as `sparsefield.metrics.ssim`, without its
    clipping of ``sigma_xy`` by ``sqrt(sigma_x^2 sigma_y^2)`` (as 3DGS trains): that
    square root has an infinite derivative on flat patches such as a plain background.

    The five local statistics are blurred together, each axis as one product with a
    banded matrix: on a 160x160 crop, forward + backward take 3.7 ms against 59 ms for
    the sum of 11 shifted slices `sparsefield.metrics.ssim` uses, whose backward pads
    every slice (a quarter of a splat train step on a 2-core CPU)."""
    w = metrics.gaussian_window(metrics.SSIM_SIZE, metrics.SSIM_SIGMA)
    rows, cols = jnp.asarray(band_matrix(x.shape[-3], w)), jnp.asarray(band_matrix(x.shape[-2], w))
    c = x.shape[-1]
    stats = jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1)
    stats = jnp.einsum("hk,kwc->hwc", rows, stats)
    stats = jnp.einsum("hkc,wk->hwc", stats, cols)
    mu_x, mu_y, xx, yy, xy = (stats[..., i * c:(i + 1) * c] for i in range(5))
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = metrics.SSIM_K1**2, metrics.SSIM_K2**2
    return jnp.mean((2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)))


def band_matrix(n: int, w: np.ndarray) -> np.ndarray:
    """``[n - k + 1, n]``: row ``i`` holds the window ``w`` at columns ``i .. i + k - 1``, so
    a product with it is the 'valid' correlation with ``w`` along that axis."""
    k = len(w)
    band = np.zeros((n - k + 1, n), np.float32)
    for i in range(n - k + 1):
        band[i, i:i + k] = w
    return band


def l1_dssim(pred: Float[Array, "H W C"], target: Float[Array, "H W C"], ssim_weight: float) -> Float[Array, ""]:
    """3DGS's colour loss ``(1 - lambda) |pred - target|_1 + lambda (1 - SSIM)`` (means);
    images smaller than the SSIM window get the L1 term alone."""
    l1 = jnp.mean(jnp.abs(pred - target))
    if min(pred.shape[-3:-1]) < metrics.SSIM_SIZE:
        return l1
    return (1.0 - ssim_weight) * l1 + ssim_weight * (1.0 - ssim_for_training(pred, target))
