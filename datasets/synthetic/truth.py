"""Analytic ground truth of a `Scene`: its signed distance per primitive, points uniform
on its outer surface, and its mesh (the primitives' tessellations with texture colours)."""

from __future__ import annotations

import numpy as np
import trimesh

from .raycast import _trace
from .scenes import Scene
from .shading import albedo


def sdf(scene: Scene, points: np.ndarray) -> np.ndarray:
    """``[N, P]`` signed distance of world points ``[N, 3]`` to each primitive (< 0 inside).

    Exact for spheres, boxes and cylinders, a close estimate with the exact zero set for
    cones; the scene's signed distance is ``sdf(scene, x).min(-1)``.
    """
    x = np.asarray(points, np.float64)
    return np.stack([p.sdf((x - p.center) @ p.rotation_matrix) for p in scene.primitives], -1)


def sample_surface(scene: Scene, n: int, seed: int = 0) -> np.ndarray:
    """``[n, 3]`` float32 points uniform on the outer surface of the union of primitives.

    Each primitive's analytic surface is sampled in proportion to its area; points strictly
    inside another primitive are rejected, which keeps the density uniform on the rest.
    """
    rng = np.random.default_rng(seed)
    areas = np.array([p.area for p in scene.primitives])
    out, total = [], 0
    while total < n:
        for i, (prim, count) in enumerate(zip(scene.primitives, rng.multinomial(n, areas / areas.sum()))):
            x = prim.sample(rng, count) @ prim.rotation_matrix.T + prim.center
            outside = np.delete(sdf(scene, x), i, axis=-1).min(-1, initial=np.inf) >= 0
            out.append(x[outside])
            total += int(outside.sum())
    points = np.concatenate(out)  # shuffled before truncating: the last pass is ordered by primitive
    return points[rng.permutation(len(points))[:n]].astype(np.float32)


def scene_mesh(scene: Scene) -> trimesh.Trimesh:
    """Ground-truth mesh: the primitives' tessellations, placed like the primitives
    (concatenated, not booleaned) and coloured with the texture albedo at each vertex."""
    parts = []
    for prim in scene.primitives:
        mesh = prim.mesh()
        colour = np.round(255 * albedo(prim, np.asarray(mesh.vertices)))
        mesh.apply_transform(np.vstack([np.c_[prim.rotation_matrix, prim.center], [0, 0, 0, 1]]))
        mesh.visual.vertex_colors = np.c_[colour, np.full(len(colour), 255)].astype(np.uint8)
        parts.append(mesh)
    return trimesh.util.concatenate(parts)


def visible_from(scene: Scene, points: np.ndarray, c2w: np.ndarray, fov_x: float, chunk: int = 1 << 18) -> np.ndarray:
    """``[N]`` bool: which surface points ``[N, 3]`` some camera ``c2w [C, 3|4, 4]`` sees.

    A point is seen when it lies inside a camera's square field of view ``fov_x`` (the
    generator's images are square) and the ray from the camera centre towards it meets
    nothing before it (the exact ray caster behind `cast_rays`, hit distances only, with
    a tolerance of 1e-4 of the distance). The outer surface holds faces no camera of a
    rig can see, such as the underside of a floor plate photographed from above; a mesh
    benchmark that wants only what a capture could reconstruct scores recall against the
    seen points.
    """
    x = np.asarray(points, np.float64)
    seen = np.zeros(len(x), bool)
    tan_half = np.tan(0.5 * fov_x)
    for pose in np.asarray(c2w, np.float64):
        rot, origin = pose[:3, :3], pose[:3, 3]
        todo = np.flatnonzero(~seen)
        local = (x[todo] - origin) @ rot  # camera frame, looking down -Z
        forward = -local[:, 2]
        inside = (forward > 0) & (np.abs(local[:, :2]).max(-1) <= tan_half * np.maximum(forward, 1e-12))
        todo = todo[inside]
        for start in range(0, len(todo), chunk):
            rows = todo[start:start + chunk]
            offset = x[rows] - origin
            dist = np.linalg.norm(offset, axis=-1)
            t, _, _ = _trace(scene, origin[None], offset / dist[:, None])  # hit distance only, no shading
            seen[rows] = t >= dist * (1.0 - 1e-4)
    return seen
