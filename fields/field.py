"""The radiance field: the only place where an encoding and MLPs are composed.

World points are normalised to the unit cube of the scene box here, once; encodings only
ever see ``[0, 1]^3``. Architecture as in Instant-NGP: encoding -> density MLP whose first
output is the raw density and the rest geometry features; geometry features plus the
encoded view direction -> colour MLP -> sigmoid.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import jax
import jax.numpy as jnp
import numpy as np
import tyro
from jaxtyping import Array, Float

from .frequency import CoarseToFine, Frequency
from .encoding import PositionEncoding
from .grid import HashGrid
from .mlp import apply_mlp, init_mlp
from .modulation import CAM
from .pruning import SaliencyMask
from .sh import SphericalHarmonics
from .voxel import VoxelGrid


@jax.custom_jvp
def trunc_exp(x: jax.Array) -> jax.Array:
    """``exp(x)`` whose gradient is ``exp(min(x, 15))`` (Instant-NGP's stable density)."""
    return jnp.exp(x)


@trunc_exp.defjvp
def _trunc_exp_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return jnp.exp(x), t * jnp.exp(jnp.minimum(x, 15.0))


DENSITY_ACTIVATIONS = {
    "trunc_exp": trunc_exp,
    # Shifted softplus as in mip-NeRF: softplus(x - 1).
    "softplus": lambda x: jax.nn.softplus(x - 1.0),
}

DirectionEncoding = (
    Annotated[SphericalHarmonics, tyro.conf.subcommand("sh")]
    | Annotated[Frequency, tyro.conf.subcommand("frequency", default=Frequency(num_freqs=4))]
)


@dataclasses.dataclass(frozen=True)
class FieldConfig:
    """Radiance field architecture."""

    encoding: PositionEncoding = HashGrid(log2_table_size=17)
    """Positional encoding of the normalised point. T = 2^17 and one colour layer: with
    8 views of the demo scene they gave 23.6 dB test PSNR against 23.3 dB for T = 2^19
    and two layers, in less time (a smaller table overfits the few views less)."""
    direction_encoding: DirectionEncoding = SphericalHarmonics()
    """Encoding of the unit view direction fed to the colour MLP."""
    hidden: int = 64
    """Width of the hidden layers of both MLPs."""
    density_layers: int = 1
    """Hidden layers of the density MLP."""
    color_layers: int = 1
    """Hidden layers of the colour MLP."""
    geo_features: int = 15
    """Geometry features passed from the density MLP to the colour MLP."""
    density_activation: Literal["trunc_exp", "softplus"] = "trunc_exp"
    """Activation sigma = act(raw): truncated exp (Instant-NGP) or shifted softplus."""
    coarse_to_fine: CoarseToFine | None = None
    """FreeNeRF's mask on the encoding's octaves or grid levels (coarse first); off if None."""
    cam: CAM | None = None
    """Coordinate-aware modulation of the density MLP's hidden layer; off if None."""
    saliency: SaliencyMask | None = None
    """HollowNeRF's saliency mask m(x) multiplying the features of every level; off if None
    (the run's ``pruner`` sparsifies it)."""


@dataclasses.dataclass(frozen=True)
class RadianceField:
    """``(x, d) -> (sigma, rgb)`` inside the axis-aligned scene box ``bbox``."""

    config: FieldConfig
    bbox: tuple[tuple[float, float, float], tuple[float, float, float]]

    def init(self, key: jax.Array) -> dict:
        c = self.config
        k_enc, k_dir, k_den, k_col, k_cam = jax.random.split(key, 5)
        dens_sizes = [c.encoding.out_dim] + [c.hidden] * c.density_layers + [1 + c.geo_features]
        col_in = c.geo_features + c.direction_encoding.out_dim
        params = {
            "encoding": c.encoding.init(k_enc),
            "direction": c.direction_encoding.init(k_dir),
            "density_mlp": init_mlp(k_den, dens_sizes),
            "color_mlp": init_mlp(k_col, [col_in] + [c.hidden] * c.color_layers + [3]),
        }
        if c.cam is not None:
            if c.density_layers < 1:
                raise ValueError("CAM modulates a hidden layer: needs density_layers >= 1")
            params["cam"] = c.cam.init(k_cam, c.hidden)
        if c.saliency is not None:
            params["saliency"] = c.saliency.init()
        return params

    def normalize(self, x: Float[Array, "... 3"]) -> Float[Array, "... 3"]:
        """World -> unit cube of the scene box, clipped to ``[0, 1]``."""
        lo, hi = np.asarray(self.bbox, np.float32)
        return jnp.clip((x - lo) / (hi - lo), 0.0, 1.0)

    def density(
        self, params: dict, x: Float[Array, "... 3"], progress=None
    ) -> tuple[Float[Array, "..."], Float[Array, "... G"]]:
        """Density ``sigma(x)`` (1 / world length) and geometry features.

        ``progress`` (training step / total steps) drives the coarse-to-fine mask;
        None (rendering a trained field) means every level is open.
        A `VoxelGrid` takes its density from the grid itself (DVGO's post-activation
        interpolation); the density MLP then only makes the geometry features.
        """
        c = self.config
        enc = c.encoding
        unit = self.normalize(x)
        feats = enc.apply(params["encoding"], unit)
        # m(x) scales every level's features, applied after the first layer's product
        # (`apply_mlp`'s scale); a voxel grid's density reads the features, so it gates them
        saliency = None if c.saliency is None else c.saliency.apply(params["saliency"], unit)
        if saliency is not None and isinstance(enc, VoxelGrid):
            feats, saliency = feats * saliency[..., None].astype(feats.dtype), None
        mlp_in = feats
        if c.coarse_to_fine is not None and progress is not None:
            mlp_in = feats * c.coarse_to_fine.mask(enc.feature_levels, progress).astype(feats.dtype)
        modulate = None
        if c.cam is not None:
            modulate = lambda h: c.cam.modulate(params["cam"], unit, h)  # noqa: E731
        out = apply_mlp(params["density_mlp"], mlp_in, modulate, saliency)
        if isinstance(enc, VoxelGrid):
            return enc.density(feats, self.box_size), out[..., 1:]
        sigma = DENSITY_ACTIVATIONS[self.config.density_activation](out[..., 0])
        return sigma, out[..., 1:]

    @property
    def box_size(self) -> float:
        """Side of the scene box in world units (geometric mean of its extents)."""
        lo, hi = np.asarray(self.bbox, np.float64)
        return float(np.prod(hi - lo) ** (1.0 / 3.0))

    def sigma(self, params: dict, x: Float[Array, "... 3"]) -> Float[Array, "..."]:
        """Density only: the ``density_fn`` the renderer and mesh extractor use."""
        return self.density(params, x)[0]

    def color(
        self, params: dict, geo: Float[Array, "... G"], d: Float[Array, "... 3"]
    ) -> Float[Array, "... 3"]:
        """Colour in ``[0, 1]`` from geometry features and unit view directions."""
        # Encodings take [0, 1]^D inputs; unit directions live in [-1, 1]^3.
        d_enc = self.config.direction_encoding.apply(params["direction"], 0.5 * (d + 1.0))
        h = jnp.concatenate([geo, d_enc.astype(geo.dtype)], axis=-1)
        return jax.nn.sigmoid(apply_mlp(params["color_mlp"], h))

    def __call__(
        self, params: dict, x: Float[Array, "... 3"], d: Float[Array, "... 3"], progress=None
    ) -> tuple[Float[Array, "..."], Float[Array, "... 3"]]:
        sigma, geo = self.density(params, x, progress)
        return sigma, self.color(params, geo, d)


def count_params(params) -> int:
    """Number of scalar parameters in a pytree."""
    return int(sum(np.prod(np.shape(p)) for p in jax.tree_util.tree_leaves(params)))
