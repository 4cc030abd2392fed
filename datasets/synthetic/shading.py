"""Surface appearance of the procedural scenes: the `Material` (a procedural texture and
Blinn-Phong weights) and the albedo it gives at object-space points."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np


@dataclasses.dataclass(frozen=True)
class Material:
    """Procedural texture (albedo ``(1 - f(p)) color_a + f(p) color_b`` with ``f`` of the
    object-space point, see `_TEXTURES`) and Blinn-Phong weight k_s / exponent. ``scale``
    is cycles per unit (checker, stripes; brick rows for bricks), sectors per turn, or
    1 / ramp half-length."""

    texture: Literal["solid", "checker", "stripes", "sectors", "gradient", "bricks"] = "solid"
    color_a: tuple[float, float, float] = (0.8, 0.8, 0.8)
    color_b: tuple[float, float, float] = (0.2, 0.2, 0.2)
    scale: float = 4.0
    specular: float = 0.3
    shininess: float = 32.0


_MORTAR = 0.2
"""Mortar joint width of the ``bricks`` texture, as a fraction of the brick height."""


def _bricks(p: np.ndarray, s: float) -> np.ndarray:
    """Running-bond bricks: rows of height ``1 / s`` along z, bricks ``2 / s`` long along
    ``x + y`` (so every vertical face of a box shows them), odd rows shifted by half a brick;
    1 in the mortar joints (``_MORTAR / s`` wide), 0 on the bricks."""
    v = s * p[:, 2]
    row = np.floor(v)
    u = 0.5 * s * (p[:, 0] + p[:, 1]) + 0.5 * (row % 2)
    return ((v - row < _MORTAR) | (u - np.floor(u) < 0.5 * _MORTAR)).astype(np.float64)


_TEXTURES = {
    "solid": lambda p, s: np.zeros(len(p)),
    "checker": lambda p, s: np.floor(s * p + 0.25).sum(-1) % 2,
    "stripes": lambda p, s: np.floor(s * p[:, 2] + 0.25) % 2,
    "sectors": lambda p, s: np.floor(s * (np.arctan2(p[:, 1], p[:, 0]) / (2 * np.pi) + 0.5)) % 2,
    "gradient": lambda p, s: np.clip(0.5 + 0.5 * s * p[:, 2], 0.0, 1.0),
    "bricks": _bricks,
}


def albedo(prim, p_local: np.ndarray) -> np.ndarray:
    """``[N, 3]`` texture colour of primitive ``prim`` at object-space points ``[N, 3]``
    (see `Material`)."""
    m = prim.material
    f = _TEXTURES[m.texture](p_local, m.scale)[:, None]
    return (1 - f) * np.asarray(m.color_a) + f * np.asarray(m.color_b)
