"""Total variation on the tables of a dense grid (DVGO's smoothness prior)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from jaxtyping import Array

from .base import ConstantWeight, LossInputs


@dataclasses.dataclass(frozen=True)
class TotalVariation(ConstantWeight):
    """Mean squared difference of neighbouring vertices, density and features weighted
    separately. Needs an encoding with ``total_variation`` (the voxel grid)."""

    needs: ClassVar[frozenset[str]] = frozenset({"tables"})

    weight: float = 1e-5
    """Weight of the TV of the density channels."""
    feature_ratio: float = 0.1
    """Weight of the feature-channel TV relative to the density TV."""

    def __call__(self, inputs: LossInputs) -> Array:
        enc, params = inputs.encoding, inputs.encoding_params
        if not hasattr(enc, "total_variation"):
            raise ValueError(f"total variation needs a dense grid encoding, not {type(enc).__name__}")
        density = enc.total_variation(params, channels=(0,))
        if self.feature_ratio == 0.0:
            return density
        return density + self.feature_ratio * enc.total_variation(params)
