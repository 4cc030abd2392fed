"""The LLFF-style forward-facing writer: a built-in scene before a textured backdrop
wall, seen by cameras spread on a plane, written as ``poses_bounds.npy`` + images."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np

from ...cameras import look_at, make_cameras
from ..images import resize
from ..writers import save_png, write_llff
from .primitives import Box
from .raycast import render_views
from .scenes import BLENDER_FOV_X, SCENES
from .shading import Material
from .writer import staged_folder


@dataclasses.dataclass(frozen=True)
class ForwardRig:
    """LLFF-style forward-facing capture: cameras uniform on a ``spread`` (x, z) rectangle of
    the plane ``y = -distance``, each looking at the origin, in front of a textured backdrop
    wall whose front face is the plane ``y = backdrop`` (so every pixel sees content and the
    far bound is finite); ``fov_x`` in radians."""

    distance: float = 4.0
    spread: tuple[float, float] = (1.2, 0.8)
    fov_x: float = BLENDER_FOV_X
    backdrop: float = 2.0


def generate_forward_scene(
    out_dir, name: str = "demo", n_views: int = 20, width: int = 64, height: int = 48,
    seed: int = 0, supersample: int = 2, rig: ForwardRig = ForwardRig(), factors: tuple[int, ...] = (),
) -> Path:
    """Render `SCENES[name]` before a backdrop into ``out_dir`` as an LLFF dataset.

    Writes ``poses_bounds.npy`` (see `sparsefield.datasets.writers.write_llff`) with each
    view's near / far bounds the min / max camera-space depth ``z = t / sqrt(x^2 + y^2 + 1)``
    of its rendered pixels, ``images/image_<k>.png`` (RGB) and, for each ``k`` in
    ``factors``, ``images_<k>/`` area-downscaled by ``k``, as LLFF ships them. Written to a
    temporary sibling folder and renamed into place, like `generate_scene`.

    Returns:
        ``Path(out_dir)``.
    """
    if name not in SCENES:
        raise ValueError(f"unknown synthetic scene {name!r}; known: {sorted(SCENES)}")
    wall = Box(half_extents=(8.0, 0.05, 8.0), center=(0.0, rig.backdrop + 0.05, 0.0),
               material=Material("checker", (0.75, 0.7, 0.6), (0.35, 0.4, 0.5), 1.5, 0.0, 8.0))
    scene = dataclasses.replace(SCENES[name], primitives=SCENES[name].primitives + (wall,))
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(-0.5, 0.5, (n_views, 2)) * np.asarray(rig.spread)
    poses = np.stack([look_at((x, -rig.distance, z), (0.0, 0.0, 0.0)) for x, z in offsets])
    rgb, alpha, depth = render_views(scene, poses, rig.fov_x, width, height, supersample)
    focal = 0.5 * width / math.tan(0.5 * rig.fov_x)
    iy, ix = np.indices((height, width)) + 0.5
    z = depth / np.sqrt(((ix - width / 2) / focal) ** 2 + ((iy - height / 2) / focal) ** 2 + 1.0)
    hit = alpha > 0.5
    bounds = np.stack([[zk[hk].min(), zk[hk].max()] for zk, hk in zip(z, hit)])
    out_dir = Path(out_dir)
    with staged_folder(out_dir) as tmp:
        pixels = rgb * alpha[..., None]
        write_llff(tmp, make_cameras(poses, rig.fov_x, width, height), pixels, bounds)
        for k, (i, image) in itertools.product(factors, enumerate(pixels)):
            small = resize(image, round(width / k), round(height / k))
            save_png(tmp / f"images_{k}" / f"image_{i:03d}.png", small)
    return out_dir
