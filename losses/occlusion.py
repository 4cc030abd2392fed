"""FreeNeRF's occlusion regularisation (Yang et al., CVPR 2023, eq. 6)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .base import ConstantWeight, LossInputs, mean_over_complete


def occlusion(sigma: Float[Array, "R S"], mask: Float[Array, "R S"]) -> Float[Array, " R"]:
    """The occlusion penalty per ray (dense reference): ``(1/K) sum_k sigma_k m_k`` over
    the ``K`` samples of the ray."""
    return jnp.sum(sigma * mask, axis=-1) / sigma.shape[-1]


@dataclasses.dataclass(frozen=True)
class Occlusion(ConstantWeight):
    """Few-shot fields put "floaters" right in front of the training cameras; this
    penalises density in the first samples of every ray,
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
    object. Skipped samples have zero density, so summing the packed samples is exact.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"samples"})

    weight: float = 1e-2
    """Loss weight lambda_occ (FreeNeRF: 0.01)."""
    range: int = 10
    """M: samples from the ray's start that are penalised (FreeNeRF: 10 of 128)."""
    bw_range: int = 0
    """M_bw: range on black or white rays (FreeNeRF's DTU setting: 20); 0 turns it off,
    and with ``range = 0`` only black or white rays are penalised."""
    bw_threshold: float = 0.01
    """A target colour is black below this mean channel value, white above 1 minus it."""

    def __call__(self, inputs: LossInputs) -> Array:
        rays, p = inputs.rays, inputs.rays.samples
        mean = jnp.mean(inputs.batch["rgb"], axis=-1)
        bw = (mean < self.bw_threshold) | (mean > 1.0 - self.bw_threshold)
        num_rays, num_samples = rays.t.shape
        ray_bw = bw[jnp.clip(p.ray, 0, num_rays - 1)]
        mask = (p.sample < self.range) | (ray_bw & (p.sample < self.bw_range))
        per_ray = jax.ops.segment_sum(p.sigma * mask, p.ray, num_rays) / num_samples
        return mean_over_complete(per_ray, rays)
