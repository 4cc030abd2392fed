"""Loss terms on rendered rays and patches (DESIGN §5).

A term is a frozen dataclass holding its hyperparameters (weight and schedule included);
``term(outputs, batch, step)`` returns the unweighted value and ``term.weight_at(step)``
its weight, so the train step builds ``losses[name] = weight_at(step) * term(...)``.

``outputs`` is what `render_rays` returns (``weights [R, S]``, ``sigma [R, S]``,
``t [R, S]``, ``deltas [R, S]``, ``opacity [R]``, ``complete [R]`` ...) plus the train
step's ``s``/``ds`` (distances over the box diagonal), ``encoding`` (the encoding config)
and ``encoding_params``. Where the renderer gives them, ``outputs["packed"]`` holds the
evaluated samples alone (`sparsefield.renderers.render.shade_packed`, with ``s``/``ds``
too); terms that only sum over samples use it, which is much cheaper than the mostly
empty ``[R, S]`` arrays; ``batch`` is the ray batch (``rgb [R, 3]``, and ``alpha [R]``
when the data has masks).
Terms average over the complete rays only, like the colour loss.

A term that regularises novel views declares ``needs_patches = True`` and holds an
`UnseenPatches` config; the train step then draws those patches
(`sparsefield.datasets.batches.sample_patches`), renders them with the same renderer and
passes the result as ``outputs["patch"]`` (the same keys, ``N_p P^2`` rays, patch-major).
No colour loss is taken on them.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .volume import segment_cumsum, segment_starts

EPS = 1e-4
"""Opacities are clipped to ``[EPS, 1 - EPS]`` inside logarithms."""


def masked_mean(values: Float[Array, " R"], keep: Float[Array, " R"]) -> Float[Array, ""]:
    """Mean of ``values`` over the rays with ``keep = 1``."""
    return jnp.sum(values * keep) / jnp.maximum(jnp.sum(keep), 1.0)


def distortion(
    weights: Float[Array, "R S"], s: Float[Array, "R S"], ds: Float[Array, "R S"]
) -> Float[Array, " R"]:
    """Distortion loss of mip-NeRF 360 per ray, in linear time.

    ``L_dist = sum_{i,j} w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 ds_i`` with interval
    midpoints ``m_i = s_i`` (sorted along the ray) and lengths ``ds_i``. The double sum
    is ``2 sum_i w_i (m_i W_{<i} - (wm)_{<i})`` with exclusive prefix sums.
    """
    wm = weights * s
    w_before = jnp.cumsum(weights, axis=-1) - weights
    wm_before = jnp.cumsum(wm, axis=-1) - wm
    inter = 2.0 * jnp.sum(weights * (s * w_before - wm_before), axis=-1)
    intra = jnp.sum(weights**2 * ds, axis=-1) / 3.0
    return inter + intra


def distortion_packed(
    weights: Float[Array, " K"], s: Float[Array, " K"], ds: Float[Array, " K"],
    ray: Int[Array, " K"], num_rays: int, max_samples: int | None = None,
) -> Float[Array, " R"]:
    """`distortion` on packed samples (a ray's samples contiguous and in order, ``ray``
    their ray ids; ids outside ``[0, num_rays)`` are dropped). Skipped samples have zero
    weight, so this equals the dense loss."""
    starts = segment_starts(ray)
    w_before = segment_cumsum(weights, starts, max_samples)
    wm_before = segment_cumsum(weights * s, starts, max_samples)
    per_sample = 2.0 * weights * (s * w_before - wm_before) + weights**2 * ds / 3.0
    return jax.ops.segment_sum(per_sample, ray, num_rays)


@dataclasses.dataclass(frozen=True)
class Distortion:
    """mip-NeRF 360's distortion loss (Barron et al. 2022, eq. 15): pulls each ray's
    weights ``w`` into one compact interval, which removes semi-transparent floaters.

    Uses ``outputs["s"]`` and ``outputs["ds"]``: sample distances and interval lengths
    divided by the scene box diagonal, so ``s`` runs over ``[0, ~1]``.
    """

    weight: float = 1e-3
    """Loss weight lambda_dist."""

    def weight_at(self, step) -> float:
        return self.weight

    def __call__(self, outputs: dict, batch: dict, step) -> Array:
        if "packed" in outputs:
            p = outputs["packed"]
            per_ray = distortion_packed(p["weights"], p["s"], p["ds"], p["ray"], outputs["complete"].shape[0],
                                        outputs["t"].shape[-1])
        else:
            per_ray = distortion(outputs["weights"], outputs["s"], outputs["ds"])
        return masked_mean(per_ray, outputs["complete"].astype(per_ray.dtype))


@dataclasses.dataclass(frozen=True)
class TotalVariation:
    """Total variation on the tables of a dense grid (DVGO's smoothness prior):
    mean squared difference of neighbouring vertices, density and features weighted
    separately. Needs an encoding with ``total_variation`` (the voxel grid)."""

    weight: float = 1e-5
    """Weight of the TV of the density channels."""
    feature_ratio: float = 0.1
    """Weight of the feature-channel TV relative to the density TV."""

    def weight_at(self, step) -> float:
        return self.weight

    def __call__(self, outputs: dict, batch: dict, step) -> Array:
        enc, params = outputs["encoding"], outputs["encoding_params"]
        if not hasattr(enc, "total_variation"):
            raise ValueError(f"total variation needs a dense grid encoding, not {type(enc).__name__}")
        density = enc.total_variation(params, channels=(0,))
        if self.feature_ratio == 0.0:
            return density
        return density + self.feature_ratio * enc.total_variation(params)


def occlusion(
    sigma: Float[Array, "R S"], mask: Float[Array, "R S"]
) -> Float[Array, " R"]:
    """FreeNeRF's occlusion penalty per ray: ``(1/K) sum_k sigma_k m_k`` over the ``K``
    samples of the ray."""
    return jnp.sum(sigma * mask, axis=-1) / sigma.shape[-1]


@dataclasses.dataclass(frozen=True)
class Occlusion:
    """FreeNeRF's occlusion regularisation (Yang et al., CVPR 2023, eq. 6): few-shot
    fields put "floaters" right in front of the training cameras; this penalises density
    in the first samples of every ray,
    ``L_occ = sigma_K^T m_K / K = (1/K) sum_k sigma_k m_k``, averaged over rays, where
    ``sigma_K`` are the densities of the ray's ``K`` samples (near to far) and the mask
    ``m_k = 1`` for ``k < M`` (the regularisation range) and 0 beyond.

    FreeNeRF's black/white prior widens the range to ``M_bw`` on rays whose target colour
    is black or white (mean channel below ``bw_threshold`` or above ``1 - bw_threshold``),
    where a backdrop is likely (DTU). FreeNeRF tests the rendered colour; we test the
    ground-truth colour, which does not move with the field. With random backgrounds on
    masked data (the default there) background rays get random targets, so the prior
    only fires on genuinely black or white pixels; `MaskLoss` is the better tool there.

    Samples span the ray's segment inside the scene box, so ``M`` counts from where the
    ray enters the box; keep ``M / K`` smaller than the empty margin between box and
    object.
    """

    weight: float = 1e-2
    """Loss weight lambda_occ (FreeNeRF: 0.01)."""
    range: int = 10
    """M: samples from the ray's start that are penalised (FreeNeRF: 10 of 128)."""
    bw_range: int = 0
    """M_bw: range on black or white rays (FreeNeRF's DTU setting: 20); 0 turns it off,
    and with ``range = 0`` only black or white rays are penalised."""
    bw_threshold: float = 0.01
    """A target colour is black below this mean channel value, white above 1 minus it."""

    def weight_at(self, step) -> float:
        return self.weight

    def __call__(self, outputs: dict, batch: dict, step) -> Array:
        mean = jnp.mean(batch["rgb"], axis=-1)
        bw = (mean < self.bw_threshold) | (mean > 1.0 - self.bw_threshold)
        if "packed" in outputs:  # skipped samples have zero density: sum the packed ones
            p, num_rays = outputs["packed"], outputs["complete"].shape[0]
            num_samples = outputs["t"].shape[-1]
            k, ray_bw = p["sample"], bw[jnp.clip(p["ray"], 0, num_rays - 1)]
            mask = (k < self.range) | (ray_bw & (k < self.bw_range))
            per_ray = jax.ops.segment_sum(p["sigma"] * mask, p["ray"], num_rays) / num_samples
        else:
            sigma = outputs["sigma"]
            k = jnp.arange(sigma.shape[-1])
            mask = (k < self.range)[None, :] | (bw[:, None] & (k < self.bw_range)[None, :])
            per_ray = occlusion(sigma, mask.astype(sigma.dtype))
        return masked_mean(per_ray, outputs["complete"].astype(per_ray.dtype))


def ray_entropy(q: Float[Array, "R S"]) -> Float[Array, " R"]:
    """Shannon entropy in bits of ``p_i = q_i / sum_j q_j`` per ray:
    ``H(r) = -sum_i p_i log2 p_i`` (``0 log 0 = 0``)."""
    p = q / (jnp.sum(q, axis=-1, keepdims=True) + 1e-10)
    return -jnp.sum(p * jnp.log2(p + 1e-10), axis=-1)


@dataclasses.dataclass(frozen=True)
class RayEntropy:
    """InfoNeRF's ray entropy minimisation (Kim et al., CVPR 2022, eqs. 4-6): a ray
    should hit one surface, so the density along it should be concentrated.

    ``p(r_i) = alpha_i / sum_j alpha_j`` with ``alpha_i = 1 - exp(-sigma_i delta_i)``,
    ``H(r) = -sum_i p(r_i) log p(r_i)``, ``L_entropy = (1/|R|) sum_r M(r) H(r)``. The
    mask ``M(r) = 1`` where the ray's opacity ``O(r) = sum_i w_i`` exceeds ``epsilon``, so
    rays through empty space (no surface to concentrate on) are left alone; the mean
    runs over all complete rays, masked ones counting zero, and the logarithm is base 2,
    as in InfoNeRF's code (its paper thresholds ``sum_i alpha_i`` instead of ``O(r)``).
    ``distribution = "weights"`` uses ``p_i = w_i / sum_j w_j`` instead, a common
    variant.
    """

    weight: float = 1e-3
    """Loss weight lambda_H (InfoNeRF: 0.001)."""
    threshold: float = 0.1
    """epsilon: rays with opacity at or below it are masked out (InfoNeRF: 0.1)."""
    distribution: Literal["alpha", "weights"] = "alpha"
    """Normalise the sample alphas (InfoNeRF) or the compositing weights w_i."""

    def weight_at(self, step) -> float:
        return self.weight

    def __call__(self, outputs: dict, batch: dict, step) -> Array:
        alpha = 1.0 - jnp.exp(-outputs["sigma"] * outputs["deltas"])
        q = alpha if self.distribution == "alpha" else outputs["weights"]
        hits = jax.lax.stop_gradient(outputs["opacity"] > self.threshold)
        per_ray = ray_entropy(q) * hits.astype(q.dtype)
        return masked_mean(per_ray, outputs["complete"].astype(per_ray.dtype))


def binary_entropy(o: Float[Array, " R"]) -> Float[Array, " R"]:
    """``-(o log o + (1 - o) log(1 - o))`` in nats, ``o`` clipped to ``[EPS, 1 - EPS]``."""
    o = jnp.clip(o, EPS, 1.0 - EPS)
    return -(o * jnp.log(o) + (1.0 - o) * jnp.log(1.0 - o))


def binary_cross_entropy(o: Float[Array, " R"], a: Float[Array, " R"]) -> Float[Array, " R"]:
    """``-(a log o + (1 - a) log(1 - o))``, ``o`` clipped to ``[EPS, 1 - EPS]``."""
    o = jnp.clip(o, EPS, 1.0 - EPS)
    return -(a * jnp.log(o) + (1.0 - a) * jnp.log(1.0 - o))


@dataclasses.dataclass(frozen=True)
class OpacityPrior:
    """A prior on each ray's opacity ``O(r) = sum_i w_i`` (the accumulated alpha).

    ``entropy``: ``L = mean_r H_b(O(r))``, ``H_b(o) = -(o log o + (1 - o) log(1 - o))``,
    pushes every ray to be fully empty or fully opaque (the "beta" prior of Neural
    Volumes, Lombardi et al. 2019; semi-transparent haze is how few-shot fields cheat).
    ``l1``: ``L = mean_r |O(r)|``, a sparsity prior: empty space is the default and only
    rays the images need become opaque.
    """

    weight: float = 1e-3
    """Loss weight lambda_O."""
    kind: Literal["entropy", "l1"] = "entropy"
    """Binary entropy towards 0 or 1, or L1 towards 0."""

    def weight_at(self, step) -> float:
        return self.weight

    def __call__(self, outputs: dict, batch: dict, step) -> Array:
        o = outputs["opacity"]
        per_ray = binary_entropy(o) if self.kind == "entropy" else jnp.abs(o)
        return masked_mean(per_ray, outputs["complete"].astype(per_ray.dtype))


@dataclasses.dataclass(frozen=True)
class MaskLoss:
    """Mask supervision of the opacity where the data has alpha masks:
    ``L_mask = mean_r BCE(O(r), a(r)) = -mean_r [a log O + (1 - a) log(1 - O)]``, with
    ``O(r) = sum_i w_i`` the ray's opacity and ``a(r)`` the ground-truth alpha of its
    pixel (``batch["alpha"]``). A dense form of the visual hull: every background pixel
    of every training view must see empty space.
    """

    weight: float = 1e-2
    """Loss weight lambda_mask."""
    if_masks: bool = False
    """On data without alpha masks, turn the term off (with a note) instead of stopping
    with an error (the ``fewshot`` preset's setting)."""

    def weight_at(self, step) -> float:
        return self.weight

    def __call__(self, outputs: dict, batch: dict, step) -> Array:
        if "alpha" not in batch:
            raise ValueError("the mask loss needs alpha masks, and this dataset has none")
        per_ray = binary_cross_entropy(outputs["opacity"], batch["alpha"])
        return masked_mean(per_ray, outputs["complete"].astype(per_ray.dtype))


@dataclasses.dataclass(frozen=True)
class UnseenPatches:
    """Patches rendered from unseen poses near the training cameras (RegNeRF, sec. 3.2);
    see `sparsefield.datasets.batches.sample_patches` for how the poses are drawn."""

    num_patches: int = 16
    """N_p: patches per step (each from its own pose)."""
    size: int = 8
    """P: patch side in pixels (RegNeRF: 8)."""
    stride: float = 1.0
    """Spacing of the patch's rays in pixels of the training images."""
    angle_jitter: float = 0.2
    """Std of the Gaussian added to the unit direction from the scene centre to a
    training camera (about radians for small values)."""
    radius_jitter: float = 0.1
    """The camera's distance to the scene centre is scaled by 1 + U[-this, this]."""
    target_jitter: float = 0.02
    """Std of the look-at point around the scene centre, as a share of the box diagonal."""
    sample_budget: int = 2**14
    """Field evaluations for all patch rays together (K of the patch render)."""


def patch_depth(outputs: dict, size: int) -> Float[Array, "N P P"]:
    """Expected normalised distance per patch ray, ``d(r) = sum_i w_i s_i + (1 - O(r)) s_f``:
    the part of the ray nothing stops ends at the ray's far bound ``s_f`` (so empty rays
    have a finite, smooth depth), shaped ``[N_p, P, P]``."""
    s, ds, w = outputs["s"], outputs["ds"], outputs["weights"]
    s_far = s[:, -1] + 0.5 * ds[:, -1]
    d = jnp.sum(w * s, axis=-1) + (1.0 - jnp.sum(w, axis=-1)) * s_far
    return d.reshape(-1, size, size)


def depth_smoothness(depth: Float[Array, "N P P"], g: Float[Array, "N P P"]) -> Float[Array, " N"]:
    """RegNeRF's depth smoothness per patch (Niemeyer et al., CVPR 2022, eq. 4):
    ``(1 / (P-1)^2) sum_{i,j < P-1} g_ij [g_i,j+1 (d_ij - d_i,j+1)^2 + g_i+1,j (d_ij - d_i+1,j)^2]``
    with per-pixel weights ``g`` (all ones: the paper's loss). The paper sums over the
    patch; its code (and we) average, so the weight does not scale with P^2.
    """
    d00, d01, d10 = depth[:, :-1, :-1], depth[:, :-1, 1:], depth[:, 1:, :-1]
    g00, g01, g10 = g[:, :-1, :-1], g[:, :-1, 1:], g[:, 1:, :-1]
    sq = g00 * (g01 * (d00 - d01) ** 2 + g10 * (d00 - d10) ** 2)
    return jnp.mean(sq, axis=(1, 2))


@dataclasses.dataclass(frozen=True)
class DepthSmoothness:
    """RegNeRF's depth smoothness on patches from unseen poses (Niemeyer et al., CVPR
    2022, eq. 4): ``L_DS = mean_patches (1/(P-1)^2) sum_{i,j} (d(r_ij) - d(r_i,j+1))^2 +
    (d(r_ij) - d(r_i+1,j))^2`` where ``d(r)`` is the expected distance of ray ``r``
    (`patch_depth`, in units of the box diagonal) and ``r_ij`` the ray through pixel
    ``(i, j)`` of a ``P x P`` patch. Geometry seen from a novel view should be piecewise
    smooth; floaters and wall artefacts are not.

    With ``opacity_weighted`` each difference counts ``O(r_a) O(r_b)`` (opacities held
    constant), so silhouettes against empty space are not smoothed into the background
    (RegNeRF's scenes have no empty background, ours often do). With ``weight_start``
    the weight decays log-linearly from it to ``weight`` over ``decay_steps`` (RegNeRF's
    ``depth_tvnorm_decay``). Patches with a ray outside the sample budget are skipped.
    """

    needs_patches: ClassVar[bool] = True

    weight: float = 0.1
    """Loss weight lambda_DS (RegNeRF's final weight: 0.1)."""
    weight_start: float | None = None
    """Weight at step 0, decaying log-linearly to ``weight``; None: constant."""
    decay_steps: int = 512
    """Steps of the decay from ``weight_start`` to ``weight``."""
    opacity_weighted: bool = True
    """Weight each neighbour difference by both rays' opacities."""
    patches: UnseenPatches = UnseenPatches()
    """Where the patches come from."""

    def weight_at(self, step):
        if self.weight_start is None:
            return self.weight
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(self.decay_steps, 1), 0.0, 1.0)
        return jnp.exp((1.0 - frac) * jnp.log(self.weight_start) + frac * jnp.log(self.weight))

    def __call__(self, outputs: dict, batch: dict, step) -> Array:
        patch, size = outputs["patch"], self.patches.size
        depth = patch_depth(patch, size)
        opacity = jax.lax.stop_gradient(patch["opacity"].reshape(-1, size, size))
        g = opacity if self.opacity_weighted else jnp.ones_like(opacity)
        per_patch = depth_smoothness(depth, g)
        whole = jnp.all(patch["complete"].reshape(-1, size * size), axis=-1)
        return masked_mean(per_patch, whole.astype(per_patch.dtype))


def unseen_patches(terms: dict) -> UnseenPatches | None:
    """The `UnseenPatches` config the ``terms`` need, or None when none needs patches.

    Raises:
        ValueError: two terms ask for different patches (one set is rendered per step).
    """
    wanted = {term.patches for term in terms.values() if getattr(term, "needs_patches", False)}
    if len(wanted) > 1:
        raise ValueError(f"loss terms ask for different unseen-view patches: {sorted(map(str, wanted))}")
    return next(iter(wanted), None)


@dataclasses.dataclass(frozen=True)
class Regularizers:
    """The loss terms of a run besides the colour loss; each is off when None."""

    distortion: Distortion | None = None
    """mip-NeRF 360 distortion loss on the ray weights."""
    tv: TotalVariation | None = None
    """Total variation of a dense grid's tables (voxel grid)."""
    occlusion: Occlusion | None = None
    """FreeNeRF's occlusion regularisation (density in the first samples of each ray)."""
    entropy: RayEntropy | None = None
    """InfoNeRF's ray entropy (concentrate each hitting ray's density)."""
    opacity: OpacityPrior | None = None
    """Opacity prior: binary entropy (0 or 1) or L1 sparsity."""
    mask: MaskLoss | None = None
    """BCE of the ray opacity against the alpha mask (data with masks only)."""
    depth_smoothness: DepthSmoothness | None = None
    """RegNeRF's depth smoothness on patches from unseen poses."""

    def terms(self) -> dict:
        """``name -> term`` for the terms that are on."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }
