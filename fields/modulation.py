"""Coordinate-Aware Modulation (CAM) of an MLP's hidden features.

Lee et al., "Coordinate-Aware Modulation for Neural Fields", ICLR 2024. Instead of only
feeding grid features into the MLP, a low-resolution grid yields a per-feature scale
``gamma(x)`` and shift ``beta(x)`` that modulate an intermediate layer:

    h' = gamma(x) * norm(h) + beta(x)

``norm`` is the feature normalisation the paper found to help together with CAM (here
layer normalisation over the hidden units, without its own affine parameters, since
``gamma`` and ``beta`` take that role). The grid stores ``gamma - 1`` and ``beta``, so
zero tables with ``normalize=False`` leave the MLP unchanged.

The grid is a dense multilinear voxel grid from the shared grid core (one level, no
hashing), so it works beside any positional encoding.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .grid import GridSpec, flatten_batch, grid_encode


def layer_norm(h: Float[Array, "... H"], eps: float = 1e-5) -> Float[Array, "... H"]:
    """Zero mean, unit variance over the last axis (no affine parameters)."""
    mean = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.var(h, axis=-1, keepdims=True)
    return (h - mean) * jax.lax.rsqrt(var + eps)


@dataclasses.dataclass(frozen=True)
class CAM:
    """Coordinate-aware modulation of the first hidden layer of the density MLP."""

    resolution: int = 16
    """Cells per axis of the modulation grid (its vertices are ``(resolution + 1)^D``)."""
    normalize: bool = True
    """Layer-normalise the hidden features before modulating them."""
    init_scale: float = 1e-4
    """Grid entries start uniform in [-init_scale, init_scale] (near-identity modulation)."""
    dim: int = 3
    """Input dimension D."""

    def spec(self) -> GridSpec:
        rows = (self.resolution + 1) ** self.dim
        return GridSpec((self.resolution,), rows, hashed=False)

    def init(self, key: jax.Array, hidden: int) -> dict:
        """Tables ``[1, (N+1)^D, 2H]``: ``gamma - 1`` in the first ``H`` features, ``beta`` after."""
        shape = (1, self.spec().table_size, 2 * hidden)
        return {"table": jax.random.uniform(key, shape, jnp.float32, -self.init_scale, self.init_scale)}

    def modulate(
        self, params: dict, x: Float[Array, "... D"], h: Float[Array, "... H"]
    ) -> Float[Array, "... H"]:
        """``gamma(x) * norm(h) + beta(x)`` for points ``x`` in ``[0, 1]^D``."""
        spec = self.spec()
        mod = flatten_batch(x, lambda pts: grid_encode(spec, params["table"], pts))
        gamma_minus_one, beta = jnp.split(mod.astype(h.dtype), 2, axis=-1)
        if self.normalize:
            h = layer_norm(h)
        return h * (1.0 + gamma_minus_one) + beta
