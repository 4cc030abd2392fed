"""mip-NeRF 360's distortion loss (Barron et al. 2022, eq. 15), dense and on packed samples."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
from jaxtyping import Array, Float, Int
import jax.numpy as jnp

from ..renderers.volume import segment_cumsum, segment_starts
from .base import ConstantWeight, LossInputs, mean_over_complete


def distortion(
    weights: Float[Array, "R S"], s: Float[Array, "R S"], ds: Float[Array, "R S"]
) -> Float[Array, " R"]:
    """Distortion loss per ray, in linear time (the dense reference).

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
class Distortion(ConstantWeight):
    """mip-NeRF 360's distortion loss: pulls each ray's weights ``w`` into one compact
    interval, which removes semi-transparent floaters. Reads the packed samples' ``s``
    and ``ds``: distances and interval lengths normalised to the scene (over the box
    diagonal, or the scene space's own normalisation), so ``s`` runs over ``[0, ~1]``."""

    needs: ClassVar[frozenset[str]] = frozenset({"samples"})

    weight: float = 1e-3
    """Loss weight lambda_dist."""

    def __call__(self, inputs: LossInputs) -> Array:
        rays = inputs.rays
        p = rays.samples
        per_ray = distortion_packed(p.weights, p.s, p.ds, p.ray, rays.complete.shape[0], rays.t.shape[-1])
        return mean_over_complete(per_ray, rays)
