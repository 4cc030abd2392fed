"""Depth at the training views' keypoints (DS-NeRF, Deng et al., CVPR 2022): SIFT
features matched across the training views and triangulated with the known poses
(`sparsefield.datasets.triangulation`) say where the surface is along the rays through
them; no pretrained network is involved."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
from jaxtyping import Array

from .base import LossInputs


@dataclasses.dataclass(frozen=True)
class KeypointTargets:
    """Rays through keypoints as rendered (`RenderedRays`: ``depth``, ``opacity``,
    ``complete``), the distance along each ray to its triangulated point, and the
    keypoint's weight (its confidence; 0 for rays to leave out)."""

    rays: object
    distance: Array
    weight: Array


@dataclasses.dataclass(frozen=True)
class KeypointDepth:
    """``L = sum_k w_k |D_k - d_k| / d_k / sum_k w_k``: the rendered expected distance
    ``D = sum_i w_i t_i`` of the ray through keypoint ``k`` against the distance ``d_k``
    of its triangulated point, relative, weighted by the keypoint's confidence ``w_k``
    (from its reprojection error). ``D`` is unnormalised, so the term also asks the ray
    to be opaque: a keypoint lies on a surface. DS-NeRF's depth loss in L1 form."""

    needs: ClassVar[frozenset[str]] = frozenset({"keypoints"})

    weight: float = 0.1
    """Loss weight lambda_depth."""
    rays: int = 512
    """Keypoint rays per step (radiance field; a Gaussian scene reads the keypoints of its crop)."""
    sample_budget: int = 2**14
    """Field evaluations for all keypoint rays together (radiance field)."""
    until: int | None = None
    """Training step from which the term is off (None: on throughout): the points then
    shape the geometry early, while the field is coarse, and leave the last steps to the
    colour alone."""

    def weight_at(self, step):
        if self.until is None:
            return self.weight
        return jnp.where(jnp.asarray(step) < self.until, self.weight, 0.0)

    def __call__(self, inputs: LossInputs) -> Array:
        kp = inputs.keypoints
        weight = kp.weight * kp.rays.complete
        error = jnp.abs(kp.rays.depth - kp.distance) / jnp.maximum(kp.distance, 1e-6)
        return jnp.sum(weight * error) / jnp.maximum(jnp.sum(weight), 1e-6)
