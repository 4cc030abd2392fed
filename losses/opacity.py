"""Priors on each ray's opacity ``O(r) = sum_i w_i``: a prior towards 0 or 1 (or 0), and
supervision by the ground-truth alpha masks."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import jax.numpy as jnp
from jaxtyping import Array

from .base import ConstantWeight, LossInputs, binary_cross_entropy, binary_entropy, mean_over_complete


@dataclasses.dataclass(frozen=True)
class OpacityPrior(ConstantWeight):
    """``entropy``: ``L = mean_r H_b(O(r))``, ``H_b(o) = -(o log o + (1 - o) log(1 - o))``,
    pushes every ray to be fully empty or fully opaque (the "beta" prior of Neural
    Volumes, Lombardi et al. 2019; semi-transparent haze is how few-shot fields cheat).
    ``l1``: ``L = mean_r |O(r)|``, a sparsity prior: empty space is the default and only
    rays the images need become opaque.
    """

    needs: ClassVar[frozenset[str]] = frozenset()

    weight: float = 1e-3
    """Loss weight lambda_O."""
    kind: Literal["entropy", "l1"] = "entropy"
    """Binary entropy towards 0 or 1, or L1 towards 0."""

    def __call__(self, inputs: LossInputs) -> Array:
        o = inputs.rays.opacity
        per_ray = binary_entropy(o) if self.kind == "entropy" else jnp.abs(o)
        return mean_over_complete(per_ray, inputs.rays)


@dataclasses.dataclass(frozen=True)
class MaskLoss(ConstantWeight):
    """Mask supervision of the opacity where the data has alpha masks:
    ``L_mask = mean_r BCE(O(r), a(r)) = -mean_r [a log O + (1 - a) log(1 - O)]``, with
    ``O(r)`` the ray's opacity and ``a(r)`` the ground-truth alpha of its pixel
    (``batch["alpha"]``). A dense form of the visual hull: every background pixel of
    every training view must see empty space.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"alpha"})

    weight: float = 1e-2
    """Loss weight lambda_mask."""
    if_masks: bool = False
    """On data without alpha masks, turn the term off (with a note) instead of stopping
    with an error (the ``fewshot`` preset's setting)."""

    def __call__(self, inputs: LossInputs) -> Array:
        per_ray = binary_cross_entropy(inputs.rays.opacity, inputs.batch["alpha"])
        return mean_over_complete(per_ray, inputs.rays)
