"""The one interface every sampler answers (in the spirit of nerfacc's estimators).

A sampler is a frozen dataclass: its fields are the user's settings (``--occupancy.*``),
its methods the implementation. The radiance-field method calls, and only calls:

    init(key) -> (params, state)       # params join the field's optimiser; state does not
    occupancy(params, state, step)     # -> an object with query(unit [..., 3]) -> bool, or None
    update(state, density_fn, box, step_size, key, step) -> state      # inside jit, every step
    losses(params, density_fn, box, step_size, key, step) -> (losses, metrics)  # inside jit
    carve(state, cameras, masks, bbox) -> (state, note)                # host side, before training

``density_fn`` maps points of ``box`` (the grid's space: world, or a scene space's
parameter space) to densities per unit length of that space; ``step_size`` turns them
into alpha-like values ``sigma * step_size``. A sampler decides itself how often it
refreshes (``update`` runs every step; the grid refreshes every ``update_every``).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import jax


class Sampler(Protocol):
    """Structural type of every sampler (see the module docstring)."""

    def init(self, key: jax.Array) -> tuple[object, object]: ...

    def occupancy(self, params, state, step): ...

    def update(self, state, density_fn, box, step_size: float, key: jax.Array, step): ...

    def losses(self, params, density_fn, box, step_size: float, key: jax.Array, step) -> tuple[dict, dict]: ...

    def carve(self, state, cameras, masks, bbox) -> tuple[object, str | None]: ...


@dataclasses.dataclass(frozen=True)
class EverySample:
    """No empty-space skipping: every sample inside the box is evaluated
    (``occupancy:none``)."""

    def init(self, key: jax.Array) -> tuple[None, None]:
        return None, None

    def occupancy(self, params, state, step) -> None:
        return None

    def update(self, state, density_fn, box, step_size, key, step) -> None:
        return state

    def losses(self, params, density_fn, box, step_size, key, step) -> tuple[dict, dict]:
        return {}, {}

    def carve(self, state, cameras, masks, bbox) -> tuple[None, None]:
        return state, None
