"""Primitives bounded by a torus: the `Torus` (genus one) and the `Bowl`, a hemispherical
shell whose rounded rim is half a torus, so its inside is a real concave surface.

The ray-torus intersection is a quartic in ``t``; `_torus_hit` solves it in closed form
(eigenvalues of the companion matrix, vectorised over rays) after moving the ray origin
to the bounding sphere and scaling it to unit size (so the coefficients are O(1)), then
polishes the roots with Newton steps: hits are exact to about 1e-12 of the torus size.
Both primitives follow the `primitives._Primitive` interface, and their SDFs are exact:
a torus and a thickened hemisphere are the points within a fixed distance of a circle and
of a spherical cap, so ``sdf = |p - closest(p)| - radius`` and ``normal = (p - closest(p))
/ radius`` on the surface.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import trimesh

from .primitives import _EPS, _Primitive, _dot, _nearest, _point, _roots

_IMAG_TOL = 1e-6
"""Roots of the unit-size quartic with a smaller imaginary part count as real: the solver
turns a double root (a grazing ray) into a complex pair with imaginary parts near 1e-8."""
_NEWTON_STEPS = 3


def _torus_hit(o, d, major, minor):
    """Nearest ``t > 0`` where unit rays ``o + t d`` meet the torus ``(|p_xy| - major)^2 +
    p_z^2 = minor^2`` (+inf: miss), the smallest positive real root of

        f(t) = (|p|^2 + R^2 - r^2)^2 - 4 R^2 |p_xy|^2,   p = o + t d.

    Only rays that meet the ring holding the torus (`_meets_ring`) are solved.
    """
    t = np.full(len(d), np.inf)
    rows = np.nonzero(_meets_ring(o, d, major, minor))[0]
    t[rows] = _quartic_hit(o[rows], d[rows], major, minor)
    return t


def _meets_ring(o, d, major, minor):
    """Whether rays meet the ring ``|p_z| <= r, R - r <= |p_xy| <= R + r`` (for ``t >= 0``):
    on the stretch where they are in the slab, the convex quadratic ``|p_xy(t)|^2`` must
    reach down to ``(R + r)^2`` and up to ``(R - r)^2``. Exact for the ring, so it never
    drops a ray that meets the torus inside it."""
    dz = np.where(np.abs(d[:, 2]) < 1e-12, 1e-12, d[:, 2])  # parallel rays: the slab or nothing
    enter, leave = (-minor - o[:, 2]) / dz, (minor - o[:, 2]) / dz
    t0, t1 = np.maximum(np.minimum(enter, leave), 0.0), np.maximum(enter, leave)
    a, b, c = _dot(d[:, :2], d[:, :2]), _dot(o[:, :2], d[:, :2]), _dot(o[:, :2], o[:, :2])
    rho2 = lambda t: (a * t + 2 * b) * t + c  # noqa: E731
    with np.errstate(divide="ignore", invalid="ignore"):
        nearest = np.clip(np.where(a > 0, -b / a, t0), t0, t1)  # the parabola's vertex, kept in the slab
    lowest, highest = rho2(nearest), np.maximum(rho2(t0), rho2(t1))
    return (t0 <= t1) & (lowest <= (major + minor) ** 2) & (highest >= max(major - minor, 0.0) ** 2)


def _quartic_hit(o, d, major, minor):
    """`_torus_hit` on every ray: the quartic's roots, starting on the bounding sphere."""
    scale = major + minor  # bounding-sphere radius: start there, in units of it
    b = _dot(o, d)
    start = np.maximum(-b - np.sqrt(np.maximum(b * b - _dot(o, o) + scale * scale, 0.0)), 0.0)
    o = (o + start[:, None] * d) / scale
    big, small = major / scale, minor / scale
    k = (_dot(d, d), 2 * _dot(o, d), _dot(o, o) + big * big - small * small)  # |p|^2 + R^2 - r^2
    e = (_dot(d[:, :2], d[:, :2]), 2 * _dot(o[:, :2], d[:, :2]), _dot(o[:, :2], o[:, :2]))  # |p_xy|^2
    four = 4 * big * big
    coefs = np.stack([k[0] * k[0], 2 * k[0] * k[1], k[1] * k[1] + 2 * k[0] * k[2] - four * e[0],
                      2 * k[1] * k[2] - four * e[1], k[2] * k[2] - four * e[2]], -1)
    companion = np.zeros((len(o), 4, 4))
    companion[:, 0] = -coefs[:, 1:] / coefs[:, :1]
    companion[:, [1, 2, 3], [0, 1, 2]] = 1.0
    roots = np.linalg.eigvals(companion)
    s = np.where(np.abs(roots.imag) <= _IMAG_TOL, roots.real, np.nan)
    for _ in range(_NEWTON_STEPS):
        value, slope = _horner(coefs, s)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = value / slope
        s = s - np.where(np.abs(step) < 1e-3, step, 0.0)  # a grazing pair keeps its guess
    t = start[:, None] + scale * s
    return np.where(t > _EPS, t, np.inf).min(-1, initial=np.inf)


def _horner(coefs, s):
    """Value and derivative of the quartics ``coefs [N, 5]`` (highest power first) at ``s [N, 4]``."""
    value, slope = np.zeros_like(s), np.zeros_like(s)
    for c in coefs.T:
        slope = slope * s + value
        value = value * s + c[:, None]
    return value, slope


def _circle_point(p, radius):
    """Nearest point of the circle of ``radius`` about the z axis (any one on the axis)."""
    rho = np.linalg.norm(p[:, :2], axis=-1, keepdims=True)
    xy = np.where(rho > 1e-12, p[:, :2] / np.maximum(rho, 1e-12), (1.0, 0.0))
    return np.concatenate([radius * xy, np.zeros((len(p), 1))], -1)


def _ring_points(rng, n, major, minor, span):
    """``[n, 3]`` points uniform on the part ``0 <= phi < span`` of a torus (``phi`` the
    angle about the tube, 0 outermost): area density ``minor (major + minor cos phi)``,
    drawn by rejection."""
    phi = np.empty(0)
    while len(phi) < n:
        cand = rng.uniform(0, span, 2 * n)
        keep = rng.uniform(0, major + minor, 2 * n) < major + minor * np.cos(cand)
        phi = np.concatenate([phi, cand[keep]])
    theta, rho = rng.uniform(0, 2 * math.pi, n), major + minor * np.cos(phi[:n])
    return np.stack([rho * np.cos(theta), rho * np.sin(theta), minor * np.sin(phi[:n])], -1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Torus(_Primitive):
    """Ring about local z: the points within ``minor_radius`` of the circle of radius
    ``major_radius`` in the plane z = 0 (a hole through the middle when R > r)."""

    major_radius: float = 0.5
    minor_radius: float = 0.15

    bound = property(lambda self: self.major_radius + self.minor_radius)
    area = property(lambda self: 4 * math.pi**2 * self.major_radius * self.minor_radius)

    def intersect(self, o, d):
        t = _torus_hit(o, d, self.major_radius, self.minor_radius)
        p = _point(o, d, t)
        return t, (p - _circle_point(p, self.major_radius)) / self.minor_radius

    def sdf(self, p):
        return np.linalg.norm(p - _circle_point(p, self.major_radius), axis=-1) - self.minor_radius

    def sample(self, rng, n):
        return _ring_points(rng, n, self.major_radius, self.minor_radius, 2 * math.pi)

    def mesh(self):
        return trimesh.creation.torus(self.major_radius, self.minor_radius, major_sections=96,
                                      minor_sections=32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Bowl(_Primitive):
    """Hemispherical shell opening towards local +z: the points within ``thickness / 2``
    of the lower half (z <= 0) of the sphere of ``radius`` about the origin. Its walls are
    spheres of radius ``radius -/+ thickness / 2``, its rim the upper half of the torus of
    tube radius ``thickness / 2`` about the circle ``|p_xy| = radius, z = 0``; the cavity
    (``|p| < radius - thickness / 2``, z <= 0, and everything above the rim) is empty."""

    radius: float = 0.5
    thickness: float = 0.04

    bound = property(lambda self: self.radius + 0.5 * self.thickness)
    wall_areas = property(lambda self: (2 * math.pi * (self.radius + 0.5 * self.thickness) ** 2,
                                        2 * math.pi * (self.radius - 0.5 * self.thickness) ** 2))
    area = property(lambda self: sum(self.wall_areas) + math.pi**2 * self.radius * self.thickness)

    def intersect(self, o, d):
        r, w = self.radius, 0.5 * self.thickness
        t = _torus_hit(o, d, r, w)  # the solid torus lies inside the shell: its first hit counts
        for wall in (r + w, r - w):  # the walls below the rim plane, entered from out- or inside
            roots = _roots(_dot(d, d), _dot(o, d), _dot(o, o) - wall * wall)
            t = np.minimum(t, _nearest(roots, lambda t: o[:, 2] + t * d[:, 2] <= 0.0))
        p = _point(o, d, t)
        return t, (p - self._closest(p)) / w

    def _closest(self, p):
        """Nearest point of the hemisphere (the shell's mid-surface)."""
        norm = np.linalg.norm(p, axis=-1, keepdims=True)
        radial = np.where(norm > 1e-12, self.radius * p / np.maximum(norm, 1e-12), (0.0, 0.0, -self.radius))
        return np.where(p[:, 2:] <= 0.0, radial, _circle_point(p, self.radius))

    def sdf(self, p):
        return np.linalg.norm(p - self._closest(p), axis=-1) - 0.5 * self.thickness

    def sample(self, rng, n):
        r, w = self.radius, 0.5 * self.thickness
        outer, inner = self.wall_areas
        pick = rng.uniform(0, self.area, n)
        g = rng.standard_normal((n, 3))
        g[:, 2] = -np.abs(g[:, 2])
        wall = np.where(pick < outer, r + w, r - w)[:, None] * g / np.linalg.norm(g, axis=-1, keepdims=True)
        return np.where((pick >= outer + inner)[:, None], _ring_points(rng, n, r, w, math.pi), wall)

    def mesh(self):
        r, w = self.radius, 0.5 * self.thickness
        down, up = np.linspace(-0.5 * math.pi, 0.0, 25), np.linspace(0.0, math.pi, 13)
        outer = (r + w) * np.stack([np.cos(down), np.sin(down)], -1)  # axis -> rim, outside
        rim = np.stack([r + w * np.cos(up), w * np.sin(up)], -1)[1:-1]
        inner = (r - w) * np.stack([np.cos(down), np.sin(down)], -1)[::-1]  # rim -> axis, inside
        return trimesh.creation.revolve(np.vstack([outer, rim, inner]), sections=64)
