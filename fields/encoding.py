"""The one Encoding interface shared by every positional encoding.

An encoding maps points ``x`` in ``[0, 1]^D`` (any batch shape) to features:

    init(key) -> params            # a pytree (empty dict for parameter-free encodings)
    apply(params, x[..., D]) -> [..., out_dim]
    out_dim                        # feature width

Encodings are frozen dataclasses: the dataclass is both the user-facing config (tyro
turns its fields into flags) and the implementation. A field picks one through the
`PositionEncoding` union, the one list of encodings, so swapping encodings is one flag:
``--field.encoding simplex``. Adding an encoding: its class in a file of its own under
``fields/`` and a member here.
"""

from __future__ import annotations

import typing
from typing import Annotated, Protocol, runtime_checkable

import jax
import tyro

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


PositionEncoding = (
    Annotated[HashGrid, tyro.conf.subcommand("hash")]
    | Annotated[SimplexGrid, tyro.conf.subcommand("simplex")]
    | Annotated[VoxelGrid, tyro.conf.subcommand("voxel")]
    | Annotated[Frequency, tyro.conf.subcommand("frequency")]
)
"""The positional encodings a field can use, with their flag names (the one list)."""

ALL_ENCODINGS: tuple[type, ...] = tuple(typing.get_args(m)[0] for m in typing.get_args(PositionEncoding))
"""The classes of `PositionEncoding`, for conformance tests."""
