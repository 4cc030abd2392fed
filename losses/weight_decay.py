"""Weight decay on a grid encoding's tables (Zip-NeRF's normalized weight decay)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
from jaxtyping import Array

from .base import ConstantWeight, LossInputs


@dataclasses.dataclass(frozen=True)
class GridWeightDecay(ConstantWeight):
    """``L = sum_l mean(V_l^2)``: the mean squared feature of each level's table, summed
    over the levels (Barron et al., Zip-NeRF, ICCV 2023), so every level weighs the same
    whatever its size. Entries that the training rays seldom read shrink towards 0, the
    grid's neutral value, instead of keeping what a few rays (or a hash collision) left in
    them; under Adam an entry that the colour loss uses keeps it. Needs a grid encoding
    (tables ``[L, T, F]``)."""

    needs: ClassVar[frozenset[str]] = frozenset({"tables"})

    weight: float = 0.1
    """Loss weight (Zip-NeRF: 0.1)."""

    def __call__(self, inputs: LossInputs) -> Array:
        params = inputs.encoding_params
        if not isinstance(params, dict) or "table" not in params:
            raise ValueError(f"grid weight decay needs a grid encoding, not {type(inputs.encoding).__name__}")
        table = params["table"]
        return jnp.sum(jnp.mean(jnp.square(table), axis=tuple(range(1, table.ndim))))
