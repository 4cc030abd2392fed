"""Procedural scenes with analytic ground truth, written as Blender / NeRF-synthetic data.

Owns scene descriptions (frozen dataclasses of textured primitives, a light and a camera
`Rig`), an exact numpy ray caster, the scene SDF, the dataset writer (JSON, RGBA PNGs,
``mesh.ply``, ``surface_points.npy``), the LLFF-style forward-facing writer
(`generate_forward_scene`) and the cached demo scene. Cameras follow
`sparsefield.cameras` (OpenGL), world +Z is up, depth is ``t`` along the unit ray. Shading
is Blinn-Phong under a white directional light ``l``: ``rgb = albedo (k_a + (1 - k_a)
max(n.l, 0)) + k_s [n.l > 0] max(n.h, 0)^shininess``, ``h = normalize(l - d)``, so colour
depends on the view direction ``d``. New scenes are `SCENES` entries, new layouts `Rig`s.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import trimesh
from PIL import Image

from ..cache import cache_root
from ..cameras import look_at, make_cameras, orbit_poses
from .images import resize
from .writers import save_png, write_llff
from .views import BLENDER_8_VIEWS, fps_views

GENERATOR_VERSION = "2"
"""Bump whenever the written data changes, so cached demo scenes are regenerated."""
BLENDER_FOV_X = 0.6911112070083618
N_SURFACE_POINTS = 50_000
_CHUNK_RAYS = 1 << 16
_EPS = 1e-9
_EDGE_TOL = 0.05  # colour step between neighbouring pixel centres that triggers supersampling


@dataclasses.dataclass(frozen=True)
class Material:
    """Procedural texture (albedo ``(1 - f(p)) color_a + f(p) color_b`` with ``f`` of the
    object-space point, see `_TEXTURES`) and Blinn-Phong weight k_s / exponent. ``scale``
    is cycles per unit (checker, stripes), sectors per turn, or 1 / ramp half-length."""

    texture: Literal["solid", "checker", "stripes", "sectors", "gradient"] = "solid"
    color_a: tuple[float, float, float] = (0.8, 0.8, 0.8)
    color_b: tuple[float, float, float] = (0.2, 0.2, 0.2)
    scale: float = 4.0
    specular: float = 0.3
    shininess: float = 32.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Primitive:
    """A solid at ``center`` with XYZ Euler ``rotation`` (degrees, R = Rz Ry Rx). In object
    coordinates: ``intersect(o, d) -> (t, normal)`` (t = inf: miss), ``sdf(p)``, ``sample(rng,
    n)`` (uniform on the surface), ``area``, ``bound`` (bounding-sphere radius), ``mesh()``."""

    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    material: Material = Material()

    @property
    def rotation_matrix(self) -> np.ndarray:
        """``[3, 3]`` object-to-world rotation: ``world = R local + center``."""
        (cx, cy, cz), (sx, sy, sz) = np.cos(np.radians(self.rotation)), np.sin(np.radians(self.rotation))
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        return np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ ry @ rx


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sphere(_Primitive):
    radius: float = 0.5

    bound = property(lambda self: self.radius)
    area = property(lambda self: 4 * math.pi * self.radius**2)

    def intersect(self, o, d):
        t = _nearest(_roots(1.0, _dot(o, d), _dot(o, o) - self.radius**2), lambda t: True)
        return t, _point(o, d, t) / self.radius

    def sdf(self, p):
        return np.linalg.norm(p, axis=-1) - self.radius

    def sample(self, rng, n):
        g = rng.standard_normal((n, 3))
        return self.radius * g / np.linalg.norm(g, axis=-1, keepdims=True)

    def mesh(self):
        return trimesh.creation.icosphere(subdivisions=4, radius=self.radius)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Box(_Primitive):
    half_extents: tuple[float, float, float] = (0.5, 0.5, 0.5)

    bound = property(lambda self: float(np.linalg.norm(self.half_extents)))
    face_areas = property(lambda self: np.prod(self.half_extents) / np.array(self.half_extents))  # hy hz, ..
    area = property(lambda self: 8 * float(self.face_areas.sum()))

    def intersect(self, o, d):
        h = np.asarray(self.half_extents)
        inv = 1.0 / np.where(np.abs(d) < 1e-12, np.copysign(1e-12, d), d)
        lo, hi = np.minimum((-h - o) * inv, (h - o) * inv), np.maximum((-h - o) * inv, (h - o) * inv)
        t_in = np.maximum(np.maximum(lo[:, 0], lo[:, 1]), lo[:, 2])  # slab test
        t_out = np.minimum(np.minimum(hi[:, 0], hi[:, 1]), hi[:, 2])
        axis = np.where(lo[:, 0] == t_in, 0, np.where(lo[:, 1] == t_in, 1, 2))
        n = np.zeros_like(d)
        n[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
        return np.where((t_in <= t_out) & (t_in > _EPS), t_in, np.inf), n

    def sdf(self, p):
        q = np.abs(p) - np.asarray(self.half_extents)
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)

    def sample(self, rng, n):
        h = np.asarray(self.half_extents)
        p, axis = rng.uniform(-h, h, (n, 3)), rng.choice(3, n, p=self.face_areas / self.face_areas.sum())
        p[np.arange(n), axis] = h[axis] * rng.choice((-1.0, 1.0), n)
        return p

    def mesh(self):
        return trimesh.creation.box(extents=2 * np.asarray(self.half_extents)).subdivide().subdivide()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Frustum(_Primitive):
    """Capped truncated cone along local z: a cylinder when the radii are equal, a cone
    when ``radius_top`` is 0. Radius at height z: ``rho(z) = A + B z``."""

    radius_bottom: float = 0.3
    radius_top: float = 0.3
    half_height: float = 0.5

    bound = property(lambda self: math.hypot(max(self.radius_bottom, self.radius_top), self.half_height))
    slant = property(lambda self: math.hypot(self.radius_bottom - self.radius_top, 2 * self.half_height))
    side_area = property(lambda self: math.pi * (self.radius_bottom + self.radius_top) * self.slant)
    area = property(lambda self: self.side_area + math.pi * (self.radius_bottom**2 + self.radius_top**2))
    coefs = property(lambda self: (0.5 * (self.radius_bottom + self.radius_top),
                                   (self.radius_top - self.radius_bottom) / (2 * self.half_height)))

    def intersect(self, o, d):
        (a_, b_), h = self.coefs, self.half_height
        rho0 = a_ + b_ * o[:, 2]  # side: x^2 + y^2 = (A + B z)^2
        a = _dot(d[:, :2], d[:, :2]) - (b_ * d[:, 2]) ** 2
        b = _dot(o[:, :2], d[:, :2]) - b_ * rho0 * d[:, 2]
        roots = _roots(a, b, _dot(o[:, :2], o[:, :2]) - rho0**2)
        side = _nearest(roots, lambda t: np.abs(o[:, 2] + t * d[:, 2]) <= h)
        top, bottom = _disk_hit(o, d, h, self.radius_top), _disk_hit(o, d, -h, self.radius_bottom)
        t = np.minimum(side, np.minimum(top, bottom))
        p = _point(o, d, t)
        n = np.stack([p[:, 0], p[:, 1], -b_ * (a_ + b_ * p[:, 2])], -1)
        n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
        n[top <= t] = (0.0, 0.0, 1.0)
        n[bottom <= t] = (0.0, 0.0, -1.0)
        return t, n

    def sdf(self, p):
        """Exact for a cylinder; a close estimate with the exact zero set otherwise."""
        (a_, b_), h = self.coefs, self.half_height
        side = (np.linalg.norm(p[:, :2], axis=-1) - a_ - b_ * p[:, 2]) / math.hypot(1.0, b_)
        q = np.stack([side, np.abs(p[:, 2]) - h], -1)
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)

    def sample(self, rng, n):
        r0, r1, h = self.radius_bottom, self.radius_top, self.half_height
        u, theta, pick = rng.uniform(0, 1, n), rng.uniform(0, 2 * math.pi, n), rng.uniform(0, self.area, n)
        # side: height fraction f with density ~ rho(f), i.e. rho^2 uniform, written stably
        f = u * (r0 + r1) / (r0 + np.sqrt(r0 * r0 + u * (r1 * r1 - r0 * r0)))
        on_top = (pick >= self.side_area) & (pick < self.side_area + math.pi * r1 * r1)
        z = np.where(pick < self.side_area, h * (2 * f - 1), np.where(on_top, h, -h))
        rho = np.where(pick < self.side_area, r0 + (r1 - r0) * f, np.where(on_top, r1, r0) * np.sqrt(u))
        return np.stack([rho * np.cos(theta), rho * np.sin(theta), z], -1)

    def mesh(self):
        r0, r1, h = self.radius_bottom, self.radius_top, self.half_height
        side = np.linspace((r0, -h), (r1, h), 17)  # rings along the side carry the texture colours
        return trimesh.creation.revolve(np.vstack([(0, -h), side, (0, h)]), sections=64)


Primitive = Sphere | Box | Frustum


@dataclasses.dataclass(frozen=True)
class Rig:
    """Cameras at ``radius`` looking at the origin (Blender-style 360 capture); train / val
    area-uniform in ``elevation_range`` (degrees), test an even orbit at ``test_elevation``;
    ``fov_x`` in radians (``camera_angle_x``)."""

    radius: float = 4.0
    fov_x: float = BLENDER_FOV_X
    elevation_range: tuple[float, float] = (5.0, 80.0)
    test_elevation: float = 30.0


@dataclasses.dataclass(frozen=True)
class Scene:
    """The union of ``primitives`` (empty background, alpha 0) lit from ``light_dir`` (towards
    the light, normalised on use) with ambient fraction k_a = ``ambient``; ``bbox`` [2, 3]
    holds every primitive; ``rig`` places the cameras."""

    primitives: tuple[Primitive, ...]
    light_dir: tuple[float, float, float] = (0.35, -0.45, 0.82)
    ambient: float = 0.3
    bbox: tuple[tuple[float, ...], tuple[float, ...]] = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))
    rig: Rig = Rig()


def _dot(a, b):
    return np.einsum("...i,...i->...", a, b)


def _roots(a, b, c):
    """Both roots of ``a t^2 + 2 b t + c = 0`` (NaN where none), stable as ``a -> 0``."""
    disc = b * b - a * c
    q = -(b + np.copysign(np.sqrt(np.where(disc >= 0, disc, np.nan)), b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return q / a, c / q


def _nearest(roots, valid):
    """Smallest root ``t > 0`` where ``valid(t)``, else +inf."""
    return np.minimum(*(np.where(valid(t) & (t > _EPS), t, np.inf) for t in roots))


def _point(o, d, t):
    return o + np.where(np.isfinite(t), t, 0.0)[:, None] * d


def _disk_hit(o, d, z, radius):
    """Hit ``t`` of rays with the disk ``x^2 + y^2 <= radius^2`` in the plane ``z``."""
    t = (z - o[:, 2]) / np.where(np.abs(d[:, 2]) < 1e-12, 1e-12, d[:, 2])
    p = o + t[:, None] * d
    return np.where((_dot(p[:, :2], p[:, :2]) <= radius * radius) & (t > _EPS), t, np.inf)


_TEXTURES = {
    "solid": lambda p, s: np.zeros(len(p)),
    "checker": lambda p, s: np.floor(s * p + 0.25).sum(-1) % 2,
    "stripes": lambda p, s: np.floor(s * p[:, 2] + 0.25) % 2,
    "sectors": lambda p, s: np.floor(s * (np.arctan2(p[:, 1], p[:, 0]) / (2 * np.pi) + 0.5)) % 2,
    "gradient": lambda p, s: np.clip(0.5 + 0.5 * s * p[:, 2], 0.0, 1.0),
}


def albedo(prim: Primitive, p_local: np.ndarray) -> np.ndarray:
    """``[N, 3]`` texture colour of ``prim`` at object-space points ``[N, 3]`` (see `Material`)."""
    m = prim.material
    f = _TEXTURES[m.texture](p_local, m.scale)[:, None]
    return (1 - f) * np.asarray(m.color_a) + f * np.asarray(m.color_b)


def cast_rays(scene: Scene, origins: np.ndarray, directions: np.ndarray):
    """Exact nearest hit of rays with the scene's primitives, shaded (module docstring).

    Args:
        origins: ``[N, 3]`` (or ``[1, 3]``, shared) ray origins outside every primitive.
        directions: ``[N, 3]`` unit directions.

    Returns:
        ``rgb`` ``[N, 3]`` (0 where missed), ``hit`` ``[N]`` bool, ``t`` ``[N]`` hit distance
        (+inf where missed) and ``normal`` ``[N, 3]`` outward world normal (0 where missed).
    """
    o, d = np.asarray(origins, np.float64), np.asarray(directions, np.float64)
    t, ids, normal = _trace(scene, o, d)
    return _shade(scene, o, d, t, ids, normal), ids >= 0, t, normal


def _trace(scene, o, d):
    """Nearest hit ``t``, primitive index (-1: miss) and world normal of each ray."""
    t, ids, normal = np.full(len(d), np.inf), np.full(len(d), -1), np.zeros_like(d)
    for i, prim in enumerate(scene.primitives):
        rot, c = prim.rotation_matrix, np.asarray(prim.center)
        rows = _candidates(o - c, d, prim.bound, t)
        t_i, n_i = prim.intersect((_take(o, rows) - c) @ rot, d[rows] @ rot)
        closer = t_i < t[rows]
        rows, t_i, n_i = rows[closer], t_i[closer], n_i[closer]
        t[rows], ids[rows], normal[rows] = t_i, i, n_i @ rot.T
    return t, ids, normal


def _take(o, rows):
    return o[rows] if len(o) > 1 else np.broadcast_to(o, (len(rows), 3))


def _candidates(oc, d, bound, t):
    """Rays entering the bounding sphere (origins ``oc`` relative to its centre) before ``t``."""
    b = d @ oc[0] if len(oc) == 1 else _dot(oc, d)
    disc = b * b - (_dot(oc, oc) - bound * bound)
    root = np.sqrt(np.maximum(disc, 0))
    return np.nonzero((disc >= 0) & (root - b > 0) & (-b - root < t))[0]


def _shade(scene, o, d, t, ids, normal):
    rgb = np.zeros_like(d)
    light = np.asarray(scene.light_dir) / np.linalg.norm(scene.light_dir)
    for i, prim in enumerate(scene.primitives):
        rows = np.nonzero(ids == i)[0]
        p = _take(o, rows) + t[rows, None] * d[rows]
        half = light - d[rows]
        half /= np.linalg.norm(half, axis=-1, keepdims=True)
        n_l = _dot(normal[rows], light)
        spec = (n_l > 0) * np.maximum(_dot(normal[rows], half), 0) ** prim.material.shininess
        shade = scene.ambient + (1 - scene.ambient) * np.maximum(n_l, 0)
        base = albedo(prim, (p - prim.center) @ prim.rotation_matrix)
        rgb[rows] = base * shade[:, None] + prim.material.specular * spec[:, None]
    return np.clip(rgb, 0.0, 1.0)


def render_views(
    scene: Scene, c2w, fov_x: float, width: int, height: int, supersample: int = 2, adaptive: bool = True
):
    """Render cameras, box-filtering ``s x s`` stratified sub-pixel rays per pixel.

    Sub-rays of pixel ``(i, j)`` pass through ``(i + (a + 0.5) / s, j + (b + 0.5) / s)``,
    ``a, b < s``, as `sparsefield.cameras.pixel_rays`. ``adaptive`` casts one centre ray
    per pixel first and sub-rays only where a neighbour (of 8) shows another primitive or
    a colour step above ``_EDGE_TOL``: edges are supersampled, smooth interiors keep the
    centre sample (about 60 dB PSNR against full supersampling on the demo, 2x faster).

    Args:
        c2w: ``[C, 3, 4]`` (or ``[C, 4, 4]``) camera-to-world matrices, OpenGL axes.
        fov_x: horizontal field of view (radians); ``f = W / (2 tan(fov_x / 2))``.
        width, height: image size; principal point ``(W / 2, H / 2)``.
        supersample: s.

    Returns:
        ``rgb`` ``[C, H, W, 3]`` straight (un-premultiplied) colour, 0 where uncovered;
        ``alpha`` ``[C, H, W]`` coverage (fraction of sub-rays that hit); ``depth``
        ``[C, H, W]`` mean hit distance ``t`` of the sub-rays that hit (0 where none).
        All float32.
    """
    c2w = np.asarray(c2w, np.float64).reshape(-1, *np.shape(c2w)[-2:])[:, :3, :4]
    iy, ix = (a.ravel() for a in np.indices((height, width)))
    out = []
    for pose in c2w:
        camera = (pose, 0.5 * width / math.tan(0.5 * fov_x), width, height)
        rgb, alpha, depth, ids = _render_pixels(scene, camera, ix, iy, 1 if adaptive else supersample)
        if adaptive and supersample > 1:
            edges = _edges(ids.reshape(height, width), rgb.reshape(height, width, 3).astype(np.float32))
            sel = np.nonzero(edges.ravel())[0]
            rgb[sel], alpha[sel], depth[sel], _ = _render_pixels(scene, camera, ix[sel], iy[sel], supersample)
        out.append((rgb, alpha, depth))
    shapes = ((len(c2w), height, width, 3), (len(c2w), height, width), (len(c2w), height, width))
    return tuple(np.stack(x).reshape(shape).astype(np.float32) for x, shape in zip(zip(*out), shapes))


def _render_pixels(scene, camera, ix, iy, s):
    """Colour, coverage, depth and first sub-ray's primitive of pixels ``(ix, iy)``."""
    pose, focal, width, height = camera
    rgb, alpha, depth, ids = np.zeros((len(ix), 3)), *np.zeros((2, len(ix))), np.zeros(len(ix), int)
    offsets = (np.arange(s) + 0.5) / s
    sub_x, sub_y = np.tile(offsets, s), np.repeat(offsets, s)
    per_chunk = max(1, _CHUNK_RAYS // (s * s))
    for a in range(0, len(ix), per_chunk):
        sl = slice(a, a + per_chunk)
        x = ((ix[sl, None] + sub_x) - 0.5 * width).ravel() / focal
        y = (0.5 * height - (iy[sl, None] + sub_y)).ravel() / focal
        inv = 1.0 / np.sqrt(x * x + y * y + 1.0)  # the rotation keeps (x, y, -1) * inv unit
        d = (x * inv)[:, None] * pose[:, 0] + (y * inv)[:, None] * pose[:, 1] - inv[:, None] * pose[:, 2]
        t, hit_ids, normal = _trace(scene, pose[None, :, 3], d)
        col = _shade(scene, pose[None, :, 3], d, t, hit_ids, normal)
        hit = (hit_ids >= 0).reshape(-1, s * s)
        count = np.maximum(hit.sum(-1), 1)
        alpha[sl] = hit.mean(-1)
        rgb[sl] = col.reshape(-1, s * s, 3).sum(1) / count[:, None]
        depth[sl] = np.where(hit, t.reshape(hit.shape), 0).sum(-1) / count
        ids[sl] = hit_ids.reshape(hit.shape)[:, 0]
    return rgb, alpha, depth, ids


def _edges(ids, rgb):
    """``[H, W]`` pixels with a neighbour (of 8) of another primitive or colour."""
    height, width = ids.shape
    edge = np.zeros(ids.shape, bool)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):  # each unordered neighbour pair once
        a = slice(0, height - dy), slice(max(-dx, 0), width - max(dx, 0))
        b = slice(dy, height), slice(max(dx, 0), width - max(-dx, 0))
        diff = (ids[a] != ids[b]) | (np.abs(rgb[a] - rgb[b]) > _EDGE_TOL).any(-1)
        edge[a] |= diff
        edge[b] |= diff
    return edge


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


def generate_scene(
    out_dir, name: str = "demo", resolution: int = 400, n_train: int = 100, n_val: int = 4,
    n_test: int = 25, seed: int = 0, supersample: int = 2, unbounded: bool = False,
) -> Path:
    """Render `SCENES[name]` into the folder ``out_dir`` in Blender / NeRF-synthetic format.

    Writes ``transforms_{train,val,test}.json`` (``camera_angle_x``, ``frames`` of
    ``file_path`` ``./<split>/r_<k>`` and 4x4 ``transform_matrix``, plus ``bbox``, ``near``,
    ``far``), RGBA PNGs (straight alpha, transparent background), ``mesh.ply``
    (`scene_mesh`) and ``surface_points.npy`` (`sample_surface`). Everything goes to a
    temporary sibling folder renamed into place at the end (``os.replace``), so an
    interrupted run never leaves a partial dataset; an existing ``out_dir`` is replaced.

    Args:
        name: key of `SCENES`; resolution: image width = height in pixels.
        n_train, n_val, n_test: views per split (see `Rig`).
        seed: seeds the train / val cameras and the surface samples.
        supersample: s of `render_views`.
        unbounded: an unbounded scene (`unbounded_scene`): the object inside a far
            textured dome, cameras and ``bbox`` close around the object.

    Returns:
        ``Path(out_dir)``.
    """
    if name not in SCENES:
        raise ValueError(f"unknown synthetic scene {name!r}; known: {sorted(SCENES)}")
    scene, out_dir = (unbounded_scene if unbounded else lambda s: s)(SCENES[name]), Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        for split, poses in _split_poses(scene.rig, n_train, n_val, n_test, seed).items():
            _write_split(tmp, split, scene, poses, resolution, supersample)
        scene_mesh(scene).export(tmp / "mesh.ply")
        np.save(tmp / "surface_points.npy", sample_surface(scene, N_SURFACE_POINTS, seed))
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def unbounded_scene(scene: Scene, dome: float = 30.0, inner: float = 2.5, radius: float = 2.2) -> Scene:
    """``scene`` inside a textured dome of radius ``dome`` (every pixel sees content, most
    of it far outside the scene box), with the cameras at ``radius`` and ``bbox`` the cube
    of half-size ``inner`` that holds them: mip-NeRF 360's setting, where the box is the
    inner region and the rest of space is contracted."""
    sky = Sphere(radius=dome, material=_M("checker", (0.55, 0.7, 0.9), (0.9, 0.85, 0.6), 0.2, 0.0, 8.0))
    return dataclasses.replace(
        scene, primitives=scene.primitives + (sky,), bbox=((-inner,) * 3, (inner,) * 3),
        rig=dataclasses.replace(scene.rig, radius=radius, elevation_range=(5.0, 60.0), test_elevation=25.0),
    )


def _split_poses(rig: Rig, n_train: int, n_val: int, n_test: int, seed: int) -> dict:
    train_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    test = orbit_poses((0, 0, 0), rig.radius, rig.test_elevation, n_test) if n_test else np.zeros((0, 3, 4))
    train = _spread_standard_views(_band_poses(rig, n_train, train_rng))
    return {"train": train, "val": _band_poses(rig, n_val, val_rng), "test": test}


def _spread_standard_views(poses: np.ndarray) -> np.ndarray:
    """Reorder 100 train cameras so the standard 8-view ids get well-spread cameras.

    The few-shot Blender protocol trains on frames 26 86 2 55 75 93 16 73, a list picked
    by hand for the Blender scenes' camera layout; on our random layout those frames
    would be an arbitrary, often clustered, draw. We put the farthest-point-sampled
    cameras at those ids instead, so the protocol means here what it means there.
    """

    if len(poses) != 100:
        return poses
    spread = list(fps_views(poses[:, :3, 3], len(BLENDER_8_VIEWS)))
    rest = [i for i in range(len(poses)) if i not in spread]
    order = [None] * len(poses)
    for slot, src in zip(BLENDER_8_VIEWS, spread):
        order[slot] = src
    free = iter(rest)
    order = [o if o is not None else next(free) for o in order]
    return poses[order]


def _band_poses(rig: Rig, n: int, rng) -> np.ndarray:
    """``[n, 3, 4]`` cameras at ``rig.radius`` looking at the origin, uniform in azimuth
    and ``sin(elevation)`` (area-uniform on the band)."""
    lo, hi = np.sin(np.radians(rig.elevation_range))
    az, el = rng.uniform(0, 2 * np.pi, n), np.arcsin(rng.uniform(lo, hi, n))
    eyes = rig.radius * np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1)
    return np.array([look_at(eye, (0.0, 0.0, 0.0)) for eye in eyes]).reshape(n, 3, 4)


def _near_far(scene: Scene) -> tuple[float, float]:
    """Ray range holding the whole box seen from ``rig.radius``, rounded outwards to 0.01."""
    half_diagonal = float(np.linalg.norm(np.abs(np.asarray(scene.bbox)).max(0)))
    near = math.floor(100 * max(scene.rig.radius - half_diagonal, 0.01)) / 100
    return near, math.ceil(100 * (scene.rig.radius + half_diagonal)) / 100


def _write_split(root: Path, split: str, scene: Scene, poses, resolution: int, supersample: int):
    (root / split).mkdir()
    frames = []
    for k, pose in enumerate(poses):  # one view at a time keeps memory bounded
        rgb, alpha, _ = render_views(scene, pose[None], scene.rig.fov_x, resolution, resolution, supersample)
        rgba = np.round(255 * np.concatenate([rgb[0], alpha[0, ..., None]], -1)).astype(np.uint8)
        Image.fromarray(rgba).save(root / split / f"r_{k}.png", compress_level=3)
        matrix = np.vstack([np.asarray(pose, np.float64), [0, 0, 0, 1]]) + 0.0  # + 0.0: no "-0.0"
        frames.append({"file_path": f"./{split}/r_{k}", "transform_matrix": matrix.tolist()})
    near, far = _near_far(scene)
    meta = {"camera_angle_x": scene.rig.fov_x, "bbox": [list(b) for b in scene.bbox], "near": near, "far": far,
            "frames": frames}
    (root / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))


def _move_into_place(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; an existing ``dest`` is first set aside, then removed."""
    try:
        os.replace(tmp, dest)  # atomic; succeeds when dest is missing (or an empty folder)
    except OSError:
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.replace(dest, old / "previous")
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)


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
               material=_M("checker", (0.75, 0.7, 0.6), (0.35, 0.4, 0.5), 1.5, 0.0, 8.0))
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
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        pixels = rgb * alpha[..., None]
        write_llff(tmp, make_cameras(poses, rig.fov_x, width, height), pixels, bounds)
        for k, (i, image) in itertools.product(factors, enumerate(pixels)):
            small = resize(image, round(width / k), round(height / k))
            save_png(tmp / f"images_{k}" / f"image_{i:03d}.png", small)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def demo_scene_path(resolution: int = 400) -> Path:
    """Folder of the built-in demo scene (100 train, 4 val, 25 test views), generated on
    first use under ``$SPARSEFIELD_CACHE`` (default ``~/.cache/sparsefield``) as
    ``synthetic-demo-v<GENERATOR_VERSION>-<resolution>px``, so a new generator version or
    resolution regenerates it."""
    path = cache_root() / f"synthetic-demo-v{GENERATOR_VERSION}-{resolution}px"
    if not (path / "transforms_train.json").is_file():
        generate_scene(path, "demo", resolution)
    return path


_M = Material
SCENES: dict[str, Scene] = {
    "demo": Scene((  # 7 primitives on a thin floor plate; the sphere and small cube float
        Box(half_extents=(0.85, 0.85, 0.02), center=(0.0, 0.0, -0.62),  # thin plate, 0.04 thick
            material=_M("checker", (0.92, 0.92, 0.88), (0.25, 0.27, 0.32), 2.5, 0.15, 16.0)),
        Frustum(radius_bottom=0.03, radius_top=0.03, half_height=0.6, center=(0.12, 0.05, 0.0),  # thin pole
                material=_M("stripes", (0.95, 0.95, 0.95), (0.8, 0.1, 0.1), 6.0, 0.5, 64.0)),
        Sphere(radius=0.38, center=(-0.45, -0.42, 0.32),
               material=_M("checker", (0.85, 0.15, 0.12), (0.98, 0.92, 0.8), 5.0, 0.7, 80.0)),
        Box(half_extents=(0.26, 0.26, 0.26), rotation=(0.0, 0.0, 30.0), center=(0.5, 0.45, -0.34),
            material=_M("stripes", (0.15, 0.3, 0.85), (0.98, 0.85, 0.2), 6.0, 0.3, 32.0)),
        Frustum(radius_bottom=0.22, radius_top=0.22, half_height=0.3, center=(0.52, -0.45, -0.3),
                material=_M("gradient", (0.1, 0.55, 0.25), (0.7, 0.95, 0.9), 1 / 0.3, 0.4, 48.0)),
        Frustum(radius_bottom=0.3, radius_top=0.0, half_height=0.35, center=(-0.45, 0.48, -0.25),
                material=_M("sectors", (0.95, 0.5, 0.1), (0.45, 0.15, 0.6), 8.0, 0.3, 24.0)),
        Box(half_extents=(0.14, 0.14, 0.14), rotation=(35.0, 20.0, 10.0), center=(-0.05, 0.4, 0.72),
            material=_M("checker", (0.2, 0.75, 0.85), (0.1, 0.1, 0.12), 8.0, 0.6, 64.0)),
    )),
    "tiny": Scene((  # 3 large primitives for fast tests at 32-48 px
        Sphere(radius=0.55, center=(-0.35, -0.2, 0.1),
               material=_M("checker", (0.85, 0.2, 0.15), (0.95, 0.95, 0.9), 3.0, 0.6, 48.0)),
        Box(half_extents=(0.4, 0.3, 0.35), rotation=(0.0, 0.0, 25.0), center=(0.55, 0.35, -0.1),
            material=_M("stripes", (0.2, 0.35, 0.85), (0.95, 0.85, 0.2), 4.0, 0.3, 32.0)),
        Frustum(radius_bottom=0.25, radius_top=0.1, half_height=0.5, center=(-0.2, 0.7, -0.2),
                material=_M("gradient", (0.1, 0.5, 0.2), (0.8, 0.95, 0.85), 2.0, 0.3, 32.0)),
    )),
}
