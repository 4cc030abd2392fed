"""The dense voxel grid (DVGO): post-activation density, progressive scaling, TV loss.

Sun et al., "Direct Voxel Grid Optimization", CVPR 2022. The grid is the shared grid core
with the cube kernel and the dense index function, never hashed (DESIGN §4): a level of
resolution ``N_l`` stores its ``(N_l + 1)^D`` vertices row-major in a ``[L, T, F]`` table,
``T = (N_max + 1)^D``. One level by default (DVGO); several levels make the multi-level
dense grid ("a hash grid without hashing").

Channel 0 of every level is the raw density ``sigma_ddot`` of DVGO's density grid, the
other ``F - 1`` channels its low-dimensional feature grid (``k0``, 12 channels) that feeds
the shallow colour MLP. Density uses post-activation interpolation: the raw value is
interpolated first, the activation applied after,

    sigma(x) = softplus(interp(sigma_ddot)(x) + b) / s,   b = log((1 - alpha_init)^(-1) - 1),

with ``s`` the final voxel size, so that an empty grid has alpha ``alpha_init`` across one
voxel: ``1 - exp(-softplus(b)) = alpha_init``. This is the paper's
``b = log((1 - alpha_init)^(-1/s) - 1)`` with density measured per voxel (``s = 1``), as
in DVGO's code; ``/ s`` converts it to 1 / world length.

Progressive scaling. DVGO starts at ``1 / 2^S`` of the final number of voxels and doubles
it at each of the ``S`` steps in ``progressive_steps``; stage ``k`` has resolutions
``round(N_l 2^(-(S - k) / D))``. A `VoxelGrid` instance encodes one stage (``stage``, None
for the final one). The training loop starts from ``enc.at_stage(0)`` and, outside jit,
at each stage change::

    new = enc.stage_at(step)                       # Python int
    params["encoding"] = enc.upsample(params["encoding"], old, new)
    # rebuild the field with enc.at_stage(new), its jitted step and the optimiser state

(the table shape changes with the stage; DVGO restarts the optimiser there too).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Annotated

import jax
import jax.numpy as jnp
import numpy as np
import tyro
from jaxtyping import Array, Float

from .grid import GridSpec, GridTables, grid_encode, level_resolutions


def total_variation(table: Float[Array, "T F"], res: int, dim: int) -> Float[Array, ""]:
    """Mean squared neighbour difference of one dense level (DVGO's TV prior).

    Args:
        table: the level's rows; the first ``(res + 1)^dim`` are its vertices, row-major
            with axis 0 fastest (`sparsefield.fields.grid.grid_index`).
        res: the level's resolution ``N_l``.
        dim: ``D``.

    Returns:
        ``(1/D) sum_i mean_v (V[v + e_i] - V[v])^2`` over every vertex pair along axis ``i``
        and every channel.
    """
    side = res + 1
    grid = table[: side**dim].reshape((side,) * dim + (table.shape[-1],))
    diffs = [jnp.mean(jnp.square(jnp.diff(grid, axis=a))) for a in range(dim)]
    return sum(diffs) / dim


@dataclasses.dataclass(frozen=True)
class VoxelGrid(GridTables):
    """Dense voxel grid (DVGO): tables ``[L, T, F]``, channel 0 raw density, dense index."""

    levels: int = 1
    """Number of levels L (DVGO: 1; more gives a multi-level dense grid)."""
    features: int = 13
    """Channels per level F: raw density sigma_ddot plus F - 1 features (DVGO's k0: 12)."""
    base_res: int = 96
    """Coarsest final resolution N_min (voxels per axis of the unit cube; used when L > 1)."""
    max_res: int = 96
    """Finest final resolution N_max (DVGO: 160 voxels per axis on a GPU)."""
    progressive_steps: tuple[int, ...] = (100, 200, 300)
    """Steps at which the number of voxels doubles (DVGO's pg_scale); empty: no scaling."""
    alpha_init: float = 1e-2
    """Alpha of one voxel of an empty grid, sets the density shift b (DVGO: 1e-6 coarse,
    1e-2 fine)."""
    init_scale: float = 1e-4
    """Table entries start uniform in [-init_scale, init_scale] (DVGO: zeros)."""
    lr_multiplier: float = 10.0
    """Learning rate of the grid relative to the MLPs (DVGO: 1e-1 for grids, 1e-3 for the
    MLP; an explicit grid needs large steps to build density from the shift b)."""
    dim: int = 3
    """Input dimension D (2 for images, 3 for fields)."""
    stage: Annotated[int | None, tyro.conf.Suppress] = None
    """Progressive stage k this instance encodes; None is the final grid (set by at_stage)."""

    @property
    def num_stages(self) -> int:
        return len(self.progressive_steps) + 1

    @property
    def final_resolutions(self) -> np.ndarray:
        """``N_l`` of the final stage; a single level has ``N_max``."""
        base = self.base_res if self.levels > 1 else self.max_res
        return level_resolutions(self.levels, base, self.max_res)

    @property
    def resolutions(self) -> np.ndarray:
        """``N_l^(k) = max(1, round(N_l 2^(-(S - k)/D)))``: 2^(k-S) of the final voxels."""
        stage = self.num_stages - 1 if self.stage is None else self.stage
        factor = 2.0 ** (-(self.num_stages - 1 - stage) / self.dim)
        return np.maximum(1, np.round(self.final_resolutions * factor)).astype(np.int64)

    @property
    def table_size(self) -> int:
        return int(self.resolutions.max() + 1) ** self.dim

    @property
    def spec(self) -> GridSpec:
        return GridSpec(tuple(int(r) for r in self.resolutions), self.table_size, hashed=False)

    @property
    def density_channels(self) -> tuple[int, ...]:
        """Output channels holding the raw density ``sigma_ddot`` (channel 0 of each level)."""
        return tuple(level * self.features for level in range(self.levels))

    @property
    def density_shift(self) -> float:
        """DVGO's ``b = log((1 - alpha_init)^(-1) - 1)``."""
        return math.log(1.0 / (1.0 - self.alpha_init) - 1.0)


    def density(self, feats: Float[Array, "... C"], box_size: float) -> Float[Array, "..."]:
        """Post-activation density ``sigma = softplus(sum_l sigma_ddot_l + b) / s``.

        Args:
            feats: this encoding's output ``apply(params, x)``.
            box_size: side of the scene box in world units; the voxel size is
                ``s = box_size / N_max`` at every stage, so density units never change.

        Returns:
            ``sigma`` in 1 / world length.
        """
        raw = sum(feats[..., c] for c in self.density_channels)
        voxel = box_size / float(self.final_resolutions.max())
        return jax.nn.softplus(raw + self.density_shift) / voxel

    def stage_at(self, step: int) -> int:
        """Progressive stage at a training step (a Python int, outside jit): how many
        ``progressive_steps`` are <= step."""
        return sum(int(step >= s) for s in self.progressive_steps)

    def at_stage(self, stage: int) -> VoxelGrid:
        """This grid's config at a progressive stage (the final stage is ``stage=None``)."""
        if not 0 <= stage < self.num_stages:
            raise ValueError(f"stage {stage} outside 0..{self.num_stages - 1}")
        return dataclasses.replace(self, stage=None if stage == self.num_stages - 1 else stage)

    def upsample(self, params: dict, from_stage: int, to_stage: int, chunk: int = 2**18) -> dict:
        """Resample stage ``from_stage`` parameters into the layout of ``to_stage``.

        Every vertex ``c`` of the new level ``l`` takes the old grid's multilinear
        interpolation at ``c / N_l^(to)``, so the represented function is kept wherever the
        old one was multilinear on the new cells (exactly for functions linear in ``x``).
        Runs outside jit; rows past the new level's vertices are zero.

        Args:
            params: ``{"table": [L, T_from, F]}`` of `at_stage(from_stage)`.
            from_stage, to_stage: stage indices ``k``.
            chunk: points evaluated per call (bounds memory).

        Returns:
            ``{"table": [L, T_to, F]}`` for `at_stage(to_stage)`.
        """
        src, dst = self.at_stage(from_stage), self.at_stage(to_stage)
        table = params["table"]
        out = np.zeros((self.levels, dst.table_size, self.features), np.float32)
        for level, (n_from, n_to) in enumerate(zip(src.resolutions, dst.resolutions)):
            spec = GridSpec((int(n_from),), src.table_size, hashed=False)
            encode = jax.jit(functools.partial(grid_encode, spec))
            axes = np.meshgrid(*[np.arange(n_to + 1)] * self.dim, indexing="ij")
            verts = np.stack([a.ravel() for a in reversed(axes)], -1) / float(n_to)
            size = min(chunk, len(verts))
            for lo in range(0, len(verts), size):
                n = min(size, len(verts) - lo)
                pts = np.zeros((size, self.dim), np.float32)
                pts[:n] = verts[lo : lo + n]
                out[level, lo : lo + n] = np.asarray(encode(table[level : level + 1], pts))[:n]
        return {"table": jnp.asarray(out)}

    def total_variation(self, params: dict, channels: tuple[int, ...] | None = None) -> Float[Array, ""]:
        """TV prior over all levels: mean of `total_variation` per level.

        Args:
            params: ``{"table": [L, T, F]}`` of this stage.
            channels: per-level channels to regularise (``(0,)``: density only, as DVGO
                weights density and feature TV separately); None for all.
        """
        table = params["table"]
        if channels is not None:
            table = table[..., np.asarray(channels)]
        terms = [total_variation(table[l], int(r), self.dim) for l, r in enumerate(self.resolutions)]
        return sum(terms) / self.levels
