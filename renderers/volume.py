"""Volume rendering: compositing densities and colours along rays.

Max, "Optical Models for Direct Volume Rendering" (1995); NeRF's quadrature:
``alpha_i = 1 - exp(-sigma_i delta_i)``, ``T_i = exp(-sum_{j<i} sigma_j delta_j)``,
``w_i = T_i alpha_i``, ``C = sum_i w_i c_i + (1 - sum_i w_i) c_bg``.

Two layouts: dense ``[R, S]`` arrays (`composite`), and packed samples (`composite_packed`):
a flat list of the evaluated samples only, each with its ray id, a ray's samples
contiguous and in order along it. The renderer uses the packed form: with an occupancy
grid only a few of the ``S`` samples of a ray are evaluated, and compositing them alone
is several times cheaper than compositing the mostly empty dense arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


def composite_weights(
    sigma: Float[Array, "R S"], deltas: Float[Array, "R S"]
) -> tuple[Float[Array, "R S"], Float[Array, "R S"]]:
    """Weights ``w_i = T_i alpha_i`` and transmittance ``T_i`` before each sample.

    Args:
        sigma: densities (1 / world length), zero for skipped samples.
        deltas: sample interval lengths ``delta_i`` (world length).
    """
    tau = sigma * deltas
    excl = jnp.cumsum(tau, axis=-1) - tau  # exclusive prefix sum: sum_{j<i} tau_j
    trans = jnp.exp(-excl)
    alpha = 1.0 - jnp.exp(-tau)
    return trans * alpha, trans


def composite(
    sigma: Float[Array, "R S"],
    rgb: Float[Array, "R S 3"],
    t: Float[Array, "R S"],
    deltas: Float[Array, "R S"],
    background: Float[Array, "R 3"] | Float[Array, "3"],
) -> dict[str, Array]:
    """Composite samples front to back.

    Returns:
        ``rgb [R, 3]`` (on ``background``), ``depth [R]`` (expected ray distance
        ``sum w_i t_i``, unnormalised, so empty rays have depth 0), ``opacity [R]``
        (``sum w_i``) and ``weights [R, S]``.
    """
    weights, _ = composite_weights(sigma, deltas)
    opacity = jnp.sum(weights, axis=-1)
    color = jnp.sum(weights[..., None] * rgb, axis=-2)
    color = color + (1.0 - opacity[..., None]) * background
    depth = jnp.sum(weights * t, axis=-1)
    return {"rgb": color, "depth": depth, "opacity": opacity, "weights": weights}


def segment_starts(ray: Int[Array, " K"]) -> Bool[Array, " K"]:
    """True at the first packed sample of each ray (where the ray id changes)."""
    return jnp.concatenate([jnp.ones(1, bool), ray[1:] != ray[:-1]])


def segment_cumsum(
    values: Float[Array, " K"], starts: Bool[Array, " K"], max_length: int | None = None
) -> Float[Array, " K"]:
    """Exclusive prefix sum within each segment (``starts`` marks the first entry of each).

    A segmented Hillis-Steele scan: step ``j`` adds the partial sum ``2^j`` entries back
    unless a segment starts in between, so ``ceil(log2(max_length))`` elementwise steps
    suffice when no segment is longer than ``max_length`` (a ray has at most ``S``
    samples). Each segment's sum starts from zero: no precision is lost to the rays
    before it.
    """
    size = values.shape[0]
    longest = size if max_length is None else min(max_length, size)
    inclusive, closed = values, starts  # closed: a segment start lies within the window
    shift = 1
    while shift < longest:
        back = jnp.concatenate([jnp.zeros(shift, values.dtype), inclusive[:-shift]])
        inclusive = jnp.where(closed, inclusive, inclusive + back)
        closed = closed | jnp.concatenate([jnp.ones(shift, bool), closed[:-shift]])
        shift *= 2
    return inclusive - values


def composite_packed(
    sigma: Float[Array, " K"],
    rgb: Float[Array, "K 3"],
    t: Float[Array, " K"],
    deltas: Float[Array, " K"],
    ray: Int[Array, " K"],
    num_rays: int,
    background: Float[Array, "R 3"] | Float[Array, "3"],
    max_samples: int | None = None,
) -> dict[str, Array]:
    """`composite` on packed samples: ``ray [K]`` is each sample's ray id, a ray's samples
    contiguous and sorted along it; ids outside ``[0, num_rays)`` (padding) are dropped.
    ``max_samples`` bounds the samples of one ray (`segment_cumsum`).

    Returns:
        per ray ``rgb [R, 3]``, ``depth [R]``, ``opacity [R]``; per sample ``weights [K]``
        and ``trans [K]`` (transmittance before the sample).
    """
    tau = sigma * deltas
    trans = jnp.exp(-segment_cumsum(tau, segment_starts(ray), max_samples))
    weights = trans * (1.0 - jnp.exp(-tau))

    def per_ray(v):
        return jax.ops.segment_sum(v, ray, num_rays)

    opacity = per_ray(weights)
    color = per_ray(weights[:, None] * rgb) + (1.0 - opacity[..., None]) * background
    depth = per_ray(weights * t)
    return {"rgb": color, "depth": depth, "opacity": opacity, "weights": weights, "trans": trans}
