"""RegNeRF's depth smoothness on patches rendered from unseen poses (Niemeyer et al.,
CVPR 2022, sec. 3.2 and eq. 4), the same smoothness on their colour, and where those
patches come from."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .base import LossInputs, masked_mean


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


def depth_smoothness(depth: Float[Array, "N P P"], g: Float[Array, "N P P"]) -> Float[Array, " N"]:
    """RegNeRF's depth smoothness per patch:
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
    """``L_DS = mean_patches (1/(P-1)^2) sum_{i,j} (d(r_ij) - d(r_i,j+1))^2 +
    (d(r_ij) - d(r_i+1,j))^2`` where ``d(r)`` is the expected normalised distance of ray
    ``r`` with the part nothing stops ending at the ray's far bound
    (``RenderedRays.distance``) and ``r_ij`` the ray through pixel ``(i, j)`` of a
    ``P x P`` patch. Geometry seen from a novel view should be piecewise smooth; floaters
    and wall artefacts are not.

    With ``opacity_weighted`` each difference counts ``O(r_a) O(r_b)`` (opacities held
    constant), so silhouettes against empty space are not smoothed into the background
    (RegNeRF's scenes have no empty background, ours often do). With ``weight_start``
    the weight decays log-linearly from it to ``weight`` over ``decay_steps`` (RegNeRF's
    ``depth_tvnorm_decay``). Patches with a ray outside the sample budget are skipped.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"patches"})

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

    def __call__(self, inputs: LossInputs) -> Array:
        patch, shape = inputs.patches, inputs.patch_shape
        depth = patch.distance.reshape(shape)
        opacity = jax.lax.stop_gradient(patch.opacity.reshape(shape))
        g = opacity if self.opacity_weighted else jnp.ones_like(opacity)
        per_patch = depth_smoothness(depth, g)
        whole = jnp.all(patch.complete.reshape(shape[0], -1), axis=-1)
        return masked_mean(per_patch, whole.astype(per_patch.dtype))


@dataclasses.dataclass(frozen=True)
class ColorSmoothness:
    """RegNeRF's smoothness term on the colour of the unseen-pose patches instead of their
    depth: ``mean_patches (1/(P-1)^2) sum_{i,j} g_ij [g_i,j+1 |c_ij - c_i,j+1|^2 +
    g_i+1,j |c_ij - c_i+1,j|^2]`` with ``g`` the rays' opacities (held constant). What
    the training views pin down shows in the unseen views too; what they leave free
    (the extent of a Gaussian along a training camera's ray, colour seen from new
    directions) shows as streaks and speckle there, which this smooths."""

    needs: ClassVar[frozenset[str]] = frozenset({"patches"})

    weight: float = 0.1
    """Loss weight."""
    patches: UnseenPatches = UnseenPatches()
    """Where the patches come from."""

    def weight_at(self, step):
        return self.weight

    def __call__(self, inputs: LossInputs) -> Array:
        patch, shape = inputs.patches, inputs.patch_shape
        rgb = patch.rgb.reshape(*shape, 3)
        g = jax.lax.stop_gradient(patch.opacity.reshape(shape))
        per_patch = sum(depth_smoothness(rgb[..., c], g) for c in range(3))
        whole = jnp.all(patch.complete.reshape(shape[0], -1), axis=-1)
        return masked_mean(per_patch, whole.astype(per_patch.dtype))


def unseen_patches(terms: dict) -> UnseenPatches | None:
    """The `UnseenPatches` config the ``terms`` need, or None when none needs patches.

    Raises:
        ValueError: two terms ask for different patches (one set is rendered per step).
    """
    wanted = {term.patches for term in terms.values() if "patches" in getattr(term, "needs", ())}
    if len(wanted) > 1:
        raise ValueError(f"loss terms ask for different unseen-view patches: {sorted(map(str, wanted))}")
    return next(iter(wanted), None)
