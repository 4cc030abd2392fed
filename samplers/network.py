"""A learned occupancy field for empty-space skipping (LeC2O-NeRF), a
`sparsefield.samplers.base.Sampler`.

Instead of a ``G^3`` grid of density maxima, a compact network ``o(x)`` (a small hash
grid and a one-layer MLP, about 1 MB) classifies points of the scene box as occupied or
empty; the renderer evaluates the radiance field only where ``sigmoid(o(x)) > 1/2``.
It trains with the radiance field, self-supervised, on random points of the box each
step:

- imbalanced occupancy loss: binary cross-entropy against the radiance field's own
  verdict ``y = [alpha(x) > tau]`` (``alpha = 1 - exp(-sigma step)``, no gradient into
  the field), with the empty class weighted ``w_0`` and the occupied class ``w_1``, plus a
  hinge ``max(0, mean p - rho)^2`` on the share of points called occupied: most of a
  scene is empty, and ``rho`` caps how much of it the network may call occupied;
- explicit density loss: ``mean (1 - p(x)) alpha(x)`` with ``p`` held fixed, pushing the
  radiance field's density down where the network says empty, so the field and the
  network agree and the skipped space really is empty.

Until ``warmup_steps`` every point counts as occupied (the untrained network knows
nothing yet), as the grid does.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ..fields.grid import HashGrid
from ..fields.mlp import apply_mlp, init_mlp


@dataclasses.dataclass(frozen=True)
class OccupancyNetConfig:
    """The occupancy network and its two losses."""

    encoding: HashGrid = HashGrid(levels=8, features=2, log2_table_size=14, base_res=8, max_res=256)
    """Its own small hash grid (T = 2^14: 8 levels x 16k rows x 2 features = 1 MB)."""
    hidden: int = 32
    """Width of its one hidden layer."""
    points: int = 2**14
    """Random points of the box per step for the two losses."""
    tau: float = 0.01
    """Alpha threshold tau of the pseudo-label y = [alpha(x) > tau] (the grid's threshold)."""
    rho: float = 0.2
    """Largest share of the box's points the network may call occupied."""
    empty_weight: float = 1.0
    """w_0: weight of the empty points in the cross-entropy."""
    occupied_weight: float = 4.0
    """w_1: weight of the occupied points (rare, so weighted up: a missed occupied cell
    loses surface, a missed empty one only costs time)."""
    occupancy_weight: float = 0.1
    """Weight of the imbalanced occupancy loss in the total loss."""
    density_weight: float = 1e-3
    """Weight of the explicit density loss."""
    warmup_steps: int = 64
    """Steps during which every point counts as occupied."""

    def init(self, key: jax.Array) -> tuple[dict, None]:
        """The network's parameters (trained by the field's optimiser); no other state."""
        k_enc, k_mlp = jax.random.split(key)
        params = {"encoding": self.encoding.init(k_enc), "mlp": init_mlp(k_mlp, [self.encoding.out_dim, self.hidden, 1])}
        return params, None

    def occupancy(self, params: dict, state, step) -> "OccupancyNetState":
        return OccupancyNetState(params, step < self.warmup_steps, self)

    def update(self, state, density_fn, box, step_size, key, step) -> None:
        return state

    def losses(self, params, density_fn, box, step_size, key, step) -> tuple[dict, dict]:
        """`occupancy_losses` as ``occupancy`` and ``occupancy_density``, and the share of
        the box called occupied as the metric ``occupied``."""
        out = occupancy_losses(self, params, density_fn, box, step_size, key)
        return {"occupancy": out["occupancy"], "occupancy_density": out["density"]}, {"occupied": out["occupied_share"]}

    def carve(self, state, cameras, masks, bbox) -> tuple[None, None]:
        return state, None

    def logits(self, params: dict, unit: Float[Array, "... 3"]) -> Float[Array, "..."]:
        """Occupancy logit ``o(x)`` at points of the unit cube."""
        return apply_mlp(params["mlp"], self.encoding.apply(params["encoding"], unit))[..., 0]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class OccupancyNetState:
    """What the renderer needs to skip empty space with the network: its parameters,
    config and whether the warm-up is over (the same ``query`` as the grid's state)."""

    params: dict
    warm: Array
    config: OccupancyNetConfig = dataclasses.field(metadata=dict(static=True))

    def query(self, unit: Float[Array, "... 3"]) -> Bool[Array, "..."]:
        """Occupied points among ``unit`` in ``[0, 1]^3`` (False outside the cube)."""
        inside = jnp.all((unit >= 0.0) & (unit <= 1.0), axis=-1)
        params = jax.lax.stop_gradient(self.params)
        occupied = self.config.logits(params, jnp.clip(unit, 0.0, 1.0)) > 0.0
        return inside & (occupied | self.warm)


def occupancy_losses(
    config: OccupancyNetConfig, params: dict, density_fn, bbox, step_size: float, key: jax.Array
) -> dict[str, Array]:
    """The imbalanced occupancy loss and the explicit density loss on random points.

    Args:
        params: the occupancy network's parameters.
        density_fn: points of the box (the field's coordinates) -> densities.
        bbox: ``[2, 3]`` box the network covers.
        step_size: sample spacing turning densities into ``alpha = 1 - exp(-sigma step)``.

    Returns:
        ``{"occupancy": weighted imbalanced loss, "density": weighted density loss,
        "occupied_share": mean p (a diagnostic, not minimised)}``.
    """
    unit = jax.random.uniform(key, (config.points, 3))
    x = bbox[0] + unit * (bbox[1] - bbox[0])
    alpha = 1.0 - jnp.exp(-density_fn(x) * step_size)
    label = jax.lax.stop_gradient(alpha) > config.tau
    logits = config.logits(params, unit)
    p = jax.nn.sigmoid(logits)
    bce = jnp.where(label, config.occupied_weight * jax.nn.softplus(-logits),
                    config.empty_weight * jax.nn.softplus(logits))
    imbalance = jnp.maximum(jnp.mean(p) - config.rho, 0.0) ** 2
    density = jnp.mean((1.0 - jax.lax.stop_gradient(p)) * alpha)
    return {
        "occupancy": config.occupancy_weight * (jnp.mean(bce) + imbalance),
        "density": config.density_weight * density,
        "occupied_share": jax.lax.stop_gradient(jnp.mean(p)),
    }
