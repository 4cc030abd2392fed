"""The multi-resolution simplex grid: the hash grid's core with a simplex vertex kernel.

Wen et al., "Efficient Encoding of Graphics Primitives with Simplex-based Structures":
a point interpolates the ``D + 1`` vertices of the simplex that holds it instead of the
``2^D`` corners of its cube. As in simplex noise, the skew

    x' = x + F_D * sum_i x_i,   F_D = (sqrt(D + 1) - 1) / D

maps the lattice of regular simplices onto the integer lattice, where each unit cube is
split into ``D!`` simplices (Kuhn / Freudenthal). With ``f = x' - floor(x')`` and the
fractional parts ranked in decreasing order ``f_(1) >= ... >= f_(D)`` (axes ``pi(k)``),
the simplex has vertices

    v_0 = floor(x'),  v_k = v_{k-1} + e_{pi(k)}          (k = 1..D)

and barycentric weights

    w_0 = 1 - f_(1),  w_k = f_(k) - f_(k+1),  w_D = f_(D),

so that ``sum_k w_k v_k = x'``. Barycentric weights are affine invariant, so the same
weights interpolate in the unskewed space: no explicit unskew is needed.

Resolution. One unit cell of the skewed lattice has volume ``1 / sqrt(D + 1)`` in the
unskewed space, so a simplex lattice at the cube grid's ``N_l`` holds ``sqrt(D + 1)``
times more vertices per unit volume. The kernel scales the lattice by
``c_D = (D + 1)^(-1 / (2 D))`` so that a simplex level of resolution ``N_l`` has exactly the
vertex density of a cube level of resolution ``N_l``: same ``N_l``, same number of table
rows touched across the domain, same hash load. The simplices are regular with edges
``sqrt(D / (D + 1)) / (c_D N_l)`` long: 1.07 / N_l in 2D and 1.09 / N_l in 3D, against
1 / N_l for a cube edge.

Indexing. Skewed coordinates of ``[0, 1]^D`` are non-negative and run up to
``M_l = floor(N_l c_D sqrt(D + 1)) + 1`` per axis (`simplex_lattice_res`), more than the
cube's ``N_l`` because the skewed cube is a parallelepiped. A level is stored densely
when its bounding box of ``(M_l + 1)^D`` vertices fits in ``T`` (wasting the rows outside
the parallelepiped, about ``sqrt(D + 1)^(D - 1)`` times the used ones) and hashed with
Instant-NGP's spatial hash otherwise; both from `sparsefield.fields.grid.grid_index`.

Cost. Per level a point gathers ``D + 1`` rows instead of ``2^D``, and the backward
scatter-add (one update per gathered row) shrinks alike. A CPU loads 64-byte lines, not
rows, and a cube's corner pairs along axis 0 mostly share a line (dense rows ``r, r + 1``;
the hash multiplies axis 0 by 1), so the forward saves fewer lines than rows (about 3.1
against 4.5 per level in 3D) while ranking costs arithmetic: `benchmarks/encodings.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .grid import GridSpec, GridTables, level_resolutions


def skew_factor(dim: int) -> float:
    """``F_D = (sqrt(D + 1) - 1) / D``: the skew ``x' = x + F_D sum(x)`` of simplex noise."""
    return (math.sqrt(dim + 1) - 1) / dim


def lattice_scale(dim: int) -> float:
    """``c_D = (D + 1)^(-1/(2D))``: equal vertex density to a cube lattice of the same ``N``."""
    return (dim + 1) ** (-1.0 / (2 * dim))


def simplex_lattice_res(res: int, dim: int) -> int:
    """``M_l``: the largest skewed vertex coordinate per axis for points in ``[0, 1]^D``."""
    return int(math.floor(res * lattice_scale(dim) * math.sqrt(dim + 1) + 1e-6)) + 1


def _sort_descending(values: list) -> list:
    """Sorting network of compare-exchanges (max / min): ``f_(1) >= ... >= f_(D)``."""
    v = list(values)
    for end in range(len(v) - 1, 0, -1):
        for i in range(end):
            v[i], v[i + 1] = jnp.maximum(v[i], v[i + 1]), jnp.minimum(v[i], v[i + 1])
    return v


def _in_top(frac: list, k: int) -> list:
    """Per axis: is its fractional part among the ``k`` largest (``v_k``'s +1 axes)?

    Axis ``i`` beats ``j`` when ``f_i > f_j``, ties going to the lower axis, so exactly
    ``k`` axes are in: those that beat at least ``D - k`` others.
    """
    dim = len(frac)
    need = dim - k
    inside = []
    for i in range(dim):
        wins = [frac[i] >= frac[j] if i < j else frac[i] > frac[j] for j in range(dim) if j != i]
        if need == len(wins):
            inside.append(functools.reduce(jnp.logical_and, wins))
        elif need == 1:
            inside.append(functools.reduce(jnp.logical_or, wins))
        else:
            inside.append(sum(w.astype(jnp.int32) for w in wins) >= need)
    return inside


def simplex_vertices(pos: Float[Array, "N D"], res: int):
    """Simplex vertex kernel: the ``D + 1`` vertices of the simplex holding ``pos``.

    Args:
        pos: points in lattice units, ``x * N_l`` for ``x`` in ``[0, 1]^D``.
        res: the level's resolution ``N_l``.

    Returns:
        A list of ``D + 1`` pairs ``(vertex [N, D] uint32, weight [N])``: skewed lattice
        vertices ``v_k = floor(x') + sum_{j<=k} e_{pi(j)}`` with ``x' = c_D (x + F_D sum x)``
        and barycentric weights ``w_k = f_(k) - f_(k+1)`` (``f_(0) = 1``, ``f_(D+1) = 0``);
        the weights are non-negative, sum to 1 and ``sum_k w_k v_k = x'``.
    """
    dim = pos.shape[-1]
    # Per-axis columns, no reductions over D: a reduction would cut XLA's fusion (on CPU
    # into a library call per level) and cost several times the whole kernel.
    cols = [pos[:, i] for i in range(dim)]
    shift = skew_factor(dim) * functools.reduce(jnp.add, cols)
    skewed = [(c + shift) * lattice_scale(dim) for c in cols]
    top = simplex_lattice_res(res, dim) - 1
    base = [jnp.clip(jnp.floor(s), 0, top) for s in skewed]
    frac = [s - b for s, b in zip(skewed, base)]
    base = [b.astype(jnp.uint32) for b in base]
    bounds = [1.0, *_sort_descending(frac), 0.0]
    out = []
    for k in range(dim + 1):
        if k in (0, dim):
            corner = [b + np.uint32(k // dim) for b in base]
        else:
            corner = [b + o.astype(jnp.uint32) for b, o in zip(base, _in_top(frac, k))]
        out.append((jnp.stack(corner, axis=-1), bounds[k] - bounds[k + 1]))
    return out


@dataclasses.dataclass(frozen=True)
class SimplexGrid(GridTables):
    """Multi-resolution hashed simplex grid, tables ``[L, T, F]`` (Wen et al.).

    Same fields and same per-level resolutions ``N_l`` as `HashGrid`; a simplex level of
    resolution ``N_l`` has the vertex density of a cube level of ``N_l`` (see the module
    docstring), so equal configs mean equal parameters and equal table load.
    """

    levels: int = 16
    """Number of levels L."""
    features: int = 2
    """Features per level F."""
    log2_table_size: int = 19
    """log2 of the table size T per level."""
    base_res: int = 16
    """Coarsest resolution N_min (cube-equivalent vertex density per axis)."""
    max_res: int = 512
    """Finest resolution N_max (cube-equivalent vertex density per axis)."""
    init_scale: float = 1e-4
    """Table entries start uniform in [-init_scale, init_scale]."""
    dim: int = 3
    """Input dimension D (2 for images, 3 for fields)."""

    @property
    def table_size(self) -> int:
        return 2**self.log2_table_size

    @property
    def resolutions(self) -> np.ndarray:
        return level_resolutions(self.levels, self.base_res, self.max_res)

    @property
    def spec(self) -> GridSpec:
        """The grid core's description: simplex kernel, skewed lattice extent, hashing."""
        res = tuple(int(r) for r in self.resolutions)
        return GridSpec(res, self.table_size, simplex_vertices, True, simplex_lattice_res)

