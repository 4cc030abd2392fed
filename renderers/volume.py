"""Volume rendering: compositing densities and colours along rays.

Max, "Optical Models for Direct Volume Rendering" (1995); NeRF's quadrature:
``alpha_i = 1 - exp(-sigma_i delta_i)``, ``T_i = exp(-sum_{j<i} sigma_j delta_j)``,
``w_i = T_i alpha_i``, ``C = sum_i w_i c_i + (1 - sum_i w_i) c_bg``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float


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
