"""Frequency (sinusoidal positional) encoding, NeRF's gamma(x).

Mildenhall et al., "NeRF", ECCV 2020: ``gamma(p) = (p, sin(2^k pi p), cos(2^k pi p))`` for
``k = 0..K-1``. Used for view directions and as a parameter-free positional encoding.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


@dataclasses.dataclass(frozen=True)
class Frequency:
    """Sinusoidal encoding with ``num_freqs`` octaves K (NeRF's L)."""

    num_freqs: int = 10
    """Number of frequency octaves K; frequencies are 2^0 .. 2^(K-1) times pi."""
    include_input: bool = True
    """Concatenate the raw input p in front of the sinusoids."""
    dim: int = 3
    """Input dimension D."""

    @property
    def out_dim(self) -> int:
        return self.dim * (2 * self.num_freqs + int(self.include_input))

    def init(self, key: jax.Array) -> dict:
        del key
        return {}

    def apply(self, params: dict, x: Float[Array, "... D"]) -> Float[Array, "... F"]:
        del params
        freqs = jnp.pi * 2.0 ** jnp.arange(self.num_freqs, dtype=x.dtype)
        # Inputs in [0, 1] are mapped to [-1, 1] so the lowest octave spans one period.
        angles = (2.0 * x - 1.0)[..., None, :] * freqs[:, None]  # [..., K, D]
        feats = [jnp.sin(angles), jnp.cos(angles)]
        out = jnp.concatenate(feats, axis=-2).reshape(*x.shape[:-1], -1)
        return jnp.concatenate([x, out], axis=-1) if self.include_input else out
