"""InfoNeRF's ray entropy minimisation (Kim et al., CVPR 2022, eqs. 4-6)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .base import ConstantWeight, LossInputs, mean_over_complete


def ray_entropy(q: Float[Array, "R S"]) -> Float[Array, " R"]:
    """Shannon entropy in bits of ``p_i = q_i / sum_j q_j`` per ray:
    ``H(r) = -sum_i p_i log2 p_i`` (``0 log 0 = 0``)."""
    p = q / (jnp.sum(q, axis=-1, keepdims=True) + 1e-10)
    return -jnp.sum(p * jnp.log2(p + 1e-10), axis=-1)


@dataclasses.dataclass(frozen=True)
class RayEntropy(ConstantWeight):
    """A ray should hit one surface, so the density along it should be concentrated.

    ``p(r_i) = alpha_i / sum_j alpha_j`` with ``alpha_i = 1 - exp(-sigma_i delta_i)``,
    ``H(r) = -sum_i p(r_i) log p(r_i)``, ``L_entropy = (1/|R|) sum_r M(r) H(r)``. The
    mask ``M(r) = 1`` where the ray's opacity ``O(r) = sum_i w_i`` exceeds ``epsilon``, so
    rays through empty space (no surface to concentrate on) are left alone; the mean
    runs over all complete rays, masked ones counting zero, and the logarithm is base 2,
    as in InfoNeRF's code (its paper thresholds ``sum_i alpha_i`` instead of ``O(r)``).
    ``distribution = "weights"`` uses ``p_i = w_i / sum_j w_j`` instead, a common
    variant.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"samples"})

    weight: float = 1e-3
    """Loss weight lambda_H (InfoNeRF: 0.001)."""
    threshold: float = 0.1
    """epsilon: rays with opacity at or below it are masked out (InfoNeRF: 0.1)."""
    distribution: Literal["alpha", "weights"] = "alpha"
    """Normalise the sample alphas (InfoNeRF) or the compositing weights w_i."""

    def __call__(self, inputs: LossInputs) -> Array:
        rays = inputs.rays
        alpha = 1.0 - jnp.exp(-rays.sigma * rays.deltas)
        q = alpha if self.distribution == "alpha" else rays.weights
        hits = jax.lax.stop_gradient(rays.opacity > self.threshold)
        return mean_over_complete(ray_entropy(q) * hits.astype(q.dtype), rays)
