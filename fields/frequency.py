"""Frequency (sinusoidal positional) encoding, NeRF's gamma(x).

Mildenhall et al., "NeRF", ECCV 2020: ``gamma(p) = (p, sin(2^k pi p), cos(2^k pi p))`` for
``k = 0..K-1``. Used for view directions and as a parameter-free positional encoding.

`CoarseToFine` is FreeNeRF's frequency regularisation (Yang et al., CVPR 2023): the
octaves of the encoding open one after another during training, and the same schedule
opens the levels of a grid encoding (coarse levels first).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
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

    @property
    def feature_levels(self) -> np.ndarray:
        """Octave ``k`` of every output feature; ``-1`` for the raw input (never masked)."""
        octaves = np.repeat(np.arange(self.num_freqs), self.dim)
        levels = np.concatenate([octaves, octaves])  # sin block, then cos block
        return np.concatenate([np.full(self.dim, -1), levels]) if self.include_input else levels

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


@dataclasses.dataclass(frozen=True)
class CoarseToFine:
    """FreeNeRF's frequency mask, for octaves and for grid levels alike.

    With ``L`` levels (octaves) and training progress ``p = t / t_total``, level ``k``
    gets the weight ``clip(start + L p / fraction - k, 0, 1)``: at the start ``start``
    levels are visible, the next level fades in linearly, and all are open once
    ``p >= fraction`` (FreeNeRF's ``T = fraction * t_total``). FreeNeRF's mask is
    ``start = 1``.
    """

    fraction: float = 0.9
    """Share of training over which all levels open (FreeNeRF's T / total steps)."""
    start: float = 1.0
    """Levels visible at step 0."""

    def mask(self, feature_levels: np.ndarray, progress) -> Float[Array, " F"]:
        """Weights ``[F]`` for features with level indices ``feature_levels`` (-1 = always)."""
        levels = jnp.asarray(feature_levels, jnp.float32)
        num_levels = float(np.max(feature_levels)) + 1.0
        ptr = self.start + num_levels * jnp.asarray(progress, jnp.float32) / self.fraction
        weights = jnp.clip(ptr - levels, 0.0, 1.0)
        return jnp.where(levels < 0, 1.0, weights)
