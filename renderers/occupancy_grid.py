"""Occupancy grid for empty-space skipping (Instant-NGP; nerfacc's OccGridEstimator).

A ``G^3`` grid over the scene box keeps an exponential moving maximum of the density
seen in each cell; a cell is occupied when its alpha-like value ``sigma * step`` exceeds
``min(threshold, mean)``. Every ``update_every`` steps one jittered point per cell is
evaluated; before ``warmup_steps`` have passed, every cell stays occupied so early, poorly
fit densities cannot carve away the scene, and the moving maximum starts afresh after it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


@dataclasses.dataclass(frozen=True)
class OccupancyGridConfig:
    """Occupancy grid settings."""

    resolution: int = 64
    """Cells per axis G."""
    update_every: int = 16
    """Refresh the grid every this many training steps."""
    warmup_steps: int = 256
    """Steps during which every cell counts as occupied."""
    decay: float = 0.95
    """EMA decay of the per-cell density: d <- max(decay * d, sigma(x))."""
    threshold: float = 0.01
    """Alpha threshold: occupied if sigma * step > min(threshold, mean(sigma * step))."""
    chunk: int = 2**16
    """Cells evaluated per batch during an update (bounds memory)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class OccupancyGridState:
    """Per-cell density EMA ``[G, G, G]`` and the occupancy bitfield."""

    density: Float[Array, "G G G"]
    occupied: Bool[Array, "G G G"]


def init_occupancy(config: OccupancyGridConfig) -> OccupancyGridState:
    """A grid with every cell occupied."""
    shape = (config.resolution,) * 3
    return OccupancyGridState(jnp.zeros(shape, jnp.float32), jnp.ones(shape, bool))


def query_occupancy(state: OccupancyGridState, x_unit: Float[Array, "... 3"]) -> Bool[Array, "..."]:
    """Occupancy of the cells holding points ``x_unit`` in ``[0, 1]^3`` (False outside)."""
    res = state.occupied.shape[0]
    inside = jnp.all((x_unit >= 0.0) & (x_unit <= 1.0), axis=-1)
    idx = jnp.clip((x_unit * res).astype(jnp.int32), 0, res - 1)
    return inside & state.occupied[idx[..., 0], idx[..., 1], idx[..., 2]]


def update_occupancy(
    config: OccupancyGridConfig,
    state: OccupancyGridState,
    density_fn,
    bbox: Float[Array, "2 3"],
    step_size: float,
    key: jax.Array,
    step: Array,
) -> OccupancyGridState:
    """Re-evaluate one jittered point per cell and refresh the bitfield.

    Args:
        density_fn: world points ``[N, 3]`` -> densities ``[N]``.
        bbox: the scene box the grid covers.
        step_size: the renderer's typical sample spacing (world units), turning
            densities into alpha-like values ``sigma * step_size``.
        step: the training step (the warm-up keeps everything occupied).
    """
    res = config.resolution
    cells = jnp.stack(jnp.meshgrid(*(jnp.arange(res),) * 3, indexing="ij"), -1).reshape(-1, 3)
    unit = (cells + jax.random.uniform(key, cells.shape)) / res
    world = bbox[0] + unit * (bbox[1] - bbox[0])
    chunks = world.reshape(-1, min(config.chunk, world.shape[0]), 3)
    sigma = jax.lax.map(density_fn, chunks).reshape(res, res, res)
    sigma = jax.lax.stop_gradient(sigma)
    warm = step < config.warmup_steps
    # During warm-up the grid only tracks the current density (the untrained field's
    # density is meaningless and the decaying max would remember it for hundreds of steps).
    density = jnp.where(warm, sigma, jnp.maximum(state.density * config.decay, sigma))
    alpha = density * step_size
    occupied = (alpha > jnp.minimum(config.threshold, jnp.mean(alpha))) | warm
    return OccupancyGridState(density, occupied)
