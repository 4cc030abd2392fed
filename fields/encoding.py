"""The one Encoding interface shared by every positional encoding.

An encoding maps points ``x`` in ``[0, 1]^D`` (any batch shape) to features:

    init(key) -> params            # a pytree (empty dict for parameter-free encodings)
    apply(params, x[..., D]) -> [..., out_dim]
    out_dim                        # feature width

Encodings are frozen dataclasses: the dataclass is both the user-facing config (tyro
turns its fields into flags) and the implementation. A field picks one through the
`Encoding` union, so swapping encodings is one flag: ``--field.encoding hash``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax

from .frequency import Frequency
from .grid import HashGrid
from .simplex import SimplexGrid
from .voxel import VoxelGrid


@runtime_checkable
class EncodingLike(Protocol):
    """Structural type every encoding satisfies."""

    @property
    def out_dim(self) -> int: ...

    def init(self, key: jax.Array): ...

    def apply(self, params, x: jax.Array) -> jax.Array: ...


Encoding = HashGrid | SimplexGrid | VoxelGrid | Frequency
"""Union of the positional encodings a field can use (tyro subcommands)."""

ALL_ENCODINGS: tuple[type, ...] = (HashGrid, SimplexGrid, VoxelGrid, Frequency)
