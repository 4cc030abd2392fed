"""Loss terms on rendered rays (DESIGN §5).

A term is a frozen dataclass holding its hyperparameters (weight and schedule included);
``term(outputs, batch, step)`` returns the unweighted value and ``term.weight_at(step)``
its weight, so the train step builds ``losses[name] = weight_at(step) * term(...)``.

``outputs`` is what `render_rays` returns (``weights [R, S]``, ``t [R, S]``,
``deltas [R, S]``, ``opacity [R]``, ``complete [R]`` ...) plus the train step's
``s``/``ds`` (distances over the box diagonal), ``encoding`` (the encoding config) and
``encoding_params``; ``batch`` is the ray batch.
Terms average over the complete rays only, like the colour loss.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jaxtyping import Array, Float


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


@dataclasses.dataclass(frozen=True)
class Regularizers:
    """The loss terms of a run besides the colour loss; each is off when None."""

    distortion: Distortion | None = None
    """mip-NeRF 360 distortion loss on the ray weights."""
    tv: TotalVariation | None = None
    """Total variation of a dense grid's tables (voxel grid)."""

    def terms(self) -> dict:
        """``name -> term`` for the terms that are on."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }
