"""A prior that empty space is the default: density only where the views need it. The
radiance field's counterpart of Gaussian opacity decay; with few views, space behind the
surfaces every training view sees (occluded from all of them) is otherwise free to hold
density, which novel views see as floaters."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array

from .base import ConstantWeight, LossInputs


@dataclasses.dataclass(frozen=True)
class DensitySparsity(ConstantWeight):
    """``L = mean_x (1 - exp(-sigma(x) delta))`` over ``points`` uniform random points of
    the box each step, ``delta`` the renderer's sample spacing: the alpha a sample there
    would have, pushed towards 0 everywhere; the colour loss keeps it where the training
    rays need it."""

    needs: ClassVar[frozenset[str]] = frozenset({"density"})

    weight: float = 1e-3
    """Loss weight."""
    points: int = 4096
    """Random points of the box per step."""

    def __call__(self, inputs: LossInputs) -> Array:
        density, box, spacing, key = inputs.density
        x = box[0] + jax.random.uniform(key, (self.points, 3)) * (box[1] - box[0])
        return jnp.mean(1.0 - jnp.exp(-density(x) * spacing))
