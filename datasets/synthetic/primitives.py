"""Analytic solids with exact ray intersection: the `_Primitive` interface and the sphere,
box, frustum (cylinder, cone) and capsule (thin poles and wires).

Every primitive works in its object coordinates (``world = R local + center``) and gives
``intersect(o, d) -> (t, normal)`` (t = inf: miss; rays start outside the solid),
``sdf(p)``, ``sample(rng, n)`` (uniform on the surface), ``area``, ``bound`` (radius of a
bounding sphere about the origin) and ``mesh()`` (a closed tessellation whose vertices
lie on the surface). The ray helpers at the end are shared with `torus`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import trimesh

from .shading import Material

_EPS = 1e-9


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Capsule(_Primitive):
    """The points within ``radius`` of the segment from ``(0, 0, -half_length)`` to
    ``(0, 0, half_length)``: a rod with round ends, so rods that share an end point join
    without gaps (wire frames). Its SDF is exact: ``|p - (0, 0, clip(z, -l, l))| - radius``."""

    radius: float = 0.02
    half_length: float = 0.5

    bound = property(lambda self: self.half_length + self.radius)
    side_area = property(lambda self: 4 * math.pi * self.radius * self.half_length)
    area = property(lambda self: self.side_area + 4 * math.pi * self.radius**2)

    def intersect(self, o, d):
        r, h = self.radius, self.half_length
        side = _roots(_dot(d[:, :2], d[:, :2]), _dot(o[:, :2], d[:, :2]), _dot(o[:, :2], o[:, :2]) - r * r)
        t = _nearest(side, lambda t: np.abs(o[:, 2] + t * d[:, 2]) <= h)
        for z in (-h, h):  # the end balls; the parts inside the rod are never hit first
            oc = o - (0.0, 0.0, z)
            t = np.minimum(t, _nearest(_roots(_dot(d, d), _dot(oc, d), _dot(oc, oc) - r * r), lambda t: True))
        p = _point(o, d, t)
        return t, (p - self._axis_point(p)) / r

    def _axis_point(self, p):
        zero = np.zeros(len(p))
        return np.stack([zero, zero, np.clip(p[:, 2], -self.half_length, self.half_length)], -1)

    def sdf(self, p):
        return np.linalg.norm(p - self._axis_point(p), axis=-1) - self.radius

    def sample(self, rng, n):
        r, h = self.radius, self.half_length
        g = rng.standard_normal((n, 3))
        ball = r * g / np.linalg.norm(g, axis=-1, keepdims=True)  # split into the two end caps
        ball[:, 2] += np.copysign(h, ball[:, 2])
        theta, z = rng.uniform(0, 2 * math.pi, n), rng.uniform(-h, h, n)
        side = np.stack([r * np.cos(theta), r * np.sin(theta), z], -1)
        return np.where((rng.uniform(0, self.area, n) < self.side_area)[:, None], side, ball)

    def mesh(self):
        r, h = self.radius, self.half_length
        a = np.linspace(-0.5 * math.pi, 0.0, 9)
        cap = np.stack([r * np.cos(a), r * np.sin(a)], -1)  # quarter circle, bottom end
        rod = np.linspace((r, -h), (r, h), 9)[1:-1]
        profile = np.vstack([cap - (0, h), rod, cap[::-1] * (1, -1) + (0, h)])
        return trimesh.creation.revolve(profile, sections=24)


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
