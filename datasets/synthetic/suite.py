"""The benchmark suite: generated scenes of different character, each with alpha masks
and a ground-truth mesh, so few-shot and mesh-quality decisions are not made on one scene.

`SUITE` maps a scene's name to the function that builds it; the first line of that
function's docstring says its dominant character. Every scene fits the demo's box
(``[-1.5, 1.5]^3``) and camera `Rig` unless its function says otherwise. Objects that
stand on the floor plate sink ``_SINK`` into it, and touching parts overlap a little,
so no two surfaces coincide: the outer surface (what ``surface_points.npy`` samples) is
then well defined. Sizes for texture and thin parts: at the rig's distance of 4, a pixel
spans about 0.0144 units at 200 x 200 and 0.0072 at 400 x 400.
"""

from __future__ import annotations

import math

import numpy as np

from .primitives import Box, Capsule, Frustum, Sphere
from .scenes import Rig, Scene
from .shading import Material
from .torus import Bowl, Torus

_M = Material
_FLOOR = -0.6
"""Height of the floor plate's top face."""
_SINK = 0.004
"""How far objects on the plate reach into it."""
_CHECKER = _M("checker", (0.92, 0.92, 0.88), (0.3, 0.32, 0.36), 2.5, 0.15, 16.0)
"""The plate's coarse checker (the demo's, in other colours)."""


def _plate(material: Material) -> Box:
    """The floor: a 1.6 x 1.6 plate, 0.04 thick, its top face at ``_FLOOR``. (The demo's
    is 1.7 wide, and 4% of its train views cut a corner; this one stays in every view.)"""
    return Box(half_extents=(0.8, 0.8, 0.02), center=(0.0, 0.0, _FLOOR - 0.02), material=material)


def _on_floor(x: float, y: float, below: float) -> tuple[float, float, float]:
    """Centre at ``(x, y)`` of a solid reaching ``below`` under its centre, so that it
    stands on the plate (``_SINK`` into it)."""
    return (x, y, _FLOOR - _SINK + below)


def _rotate_z(xyz, degrees: float) -> tuple[float, float, float]:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    x, y, z = xyz
    return (c * x - s * y, s * x + c * y, z)


def thin_wires() -> Scene:
    """Thin structures: a wire-frame cube of rods 0.036 wide (2.5 px at 200 px), a thinner
    diagonal wire through it and three poles 0.024-0.03 wide, on a checker plate."""
    half, rod, yaw, middle = 0.38, 0.018, 25.0, (-0.12, 0.05)
    centre = _on_floor(*middle, rod + half)
    rods = _M("stripes", (0.95, 0.95, 0.95), (0.75, 0.1, 0.1), 10.0, 0.5, 64.0)
    turns = {0: (0.0, 90.0, yaw), 1: (-90.0, 0.0, yaw), 2: (0.0, 0.0, yaw)}  # local z onto x, y, z
    frame = []
    for axis in range(3):
        for corner in ((-half, -half), (-half, half), (half, -half), (half, half)):  # the 4 edges along axis
            at = np.add(centre, _rotate_z(np.insert(corner, axis, 0.0), yaw))
            frame.append(Capsule(radius=rod, half_length=half, center=tuple(at), rotation=turns[axis],
                                 material=rods))
    diagonal = Capsule(radius=0.012, half_length=half * math.sqrt(3), center=centre,
                       rotation=(0.0, math.degrees(math.acos(1 / math.sqrt(3))), yaw + 45.0),
                       material=_M("solid", (0.1, 0.3, 0.8), specular=0.4, shininess=48.0))
    poles = tuple(
        Frustum(radius_bottom=r, radius_top=r, half_height=h, center=_on_floor(x, y, h),
                material=_M("gradient", (0.95, 0.75, 0.1), (0.1, 0.55, 0.3), 1 / h, 0.4, 48.0))
        for x, y, r, h in ((0.64, -0.56, 0.012, 0.5), (0.58, 0.62, 0.015, 0.7), (-0.62, -0.62, 0.012, 0.4))
    )
    return Scene((_plate(_CHECKER), *frame, diagonal, *poles))


def concave_bowl() -> Scene:
    """Concavity: a large open bowl whose inside only higher cameras see, and a small bowl
    tipped on its side towards -y, on a plate; both are 0.03-0.04 thick shells."""
    # a bowl's outer wall reaches radius + thickness / 2 below its centre, and still holds
    # the lowest point when the bowl is tipped by less than 90 degrees
    return Scene((
        _plate(_CHECKER),
        Bowl(radius=0.55, thickness=0.04, center=_on_floor(-0.12, 0.12, 0.57),
             material=_M("checker", (0.95, 0.55, 0.15), (0.98, 0.92, 0.8), 6.0, 0.25, 32.0)),
        Bowl(radius=0.25, thickness=0.03, rotation=(70.0, 0.0, 0.0), center=_on_floor(0.52, -0.52, 0.265),
             material=_M("stripes", (0.2, 0.4, 0.85), (0.95, 0.95, 0.95), 12.0, 0.3, 32.0)),
    ))


def textureless() -> Scene:
    """Large textureless regions: a big box, a wide cylinder and a sphere in plain matte
    colours on a plain plate; only shading tells the surfaces apart."""
    matte = dict(texture="solid", specular=0.05, shininess=8.0)
    return Scene((
        _plate(_M(color_a=(0.8, 0.8, 0.78), **matte)),
        Box(half_extents=(0.45, 0.3, 0.3), rotation=(0.0, 0.0, 20.0), center=_on_floor(-0.25, 0.22, 0.3),
            material=_M(color_a=(0.92, 0.9, 0.84), **matte)),
        Frustum(radius_bottom=0.25, radius_top=0.25, half_height=0.45, center=_on_floor(0.5, 0.45, 0.45),
                material=_M(color_a=(0.6, 0.7, 0.85), **matte)),
        Sphere(radius=0.3, center=_on_floor(0.35, -0.48, 0.3), material=_M(color_a=(0.85, 0.6, 0.55), **matte)),
    ))


def fine_texture() -> Scene:
    """Fine texture: brick walls with rows 0.04 high (mortar 0.008), a checker sphere with
    0.033 cells (2-5 px at 200-400 px) and a checker plate with 0.0625 cells."""
    bricks = _M("bricks", (0.7, 0.3, 0.2), (0.88, 0.85, 0.78), 25.0, 0.15, 24.0)
    return Scene((
        _plate(_M("checker", (0.9, 0.9, 0.86), (0.35, 0.36, 0.4), 16.0, 0.1, 16.0)),
        Box(half_extents=(0.45, 0.12, 0.35), rotation=(0.0, 0.0, 15.0), center=_on_floor(-0.2, 0.35, 0.35),
            material=bricks),
        Frustum(radius_bottom=0.22, radius_top=0.22, half_height=0.4, center=_on_floor(0.5, -0.2, 0.4),
                material=bricks),
        Sphere(radius=0.3, center=_on_floor(-0.35, -0.42, 0.3),
               material=_M("checker", (0.95, 0.95, 0.9), (0.15, 0.35, 0.6), 30.0, 0.2, 32.0)),
    ))


def glossy() -> Scene:
    """Glossy materials: strong, sharp highlights (k_s 0.8-1, exponents 80-300) on dark
    spheres, a standing torus and a box, on a matte plate."""
    return Scene((
        _plate(_M("checker", (0.85, 0.85, 0.82), (0.45, 0.46, 0.5), 2.5, 0.0, 8.0)),
        Sphere(radius=0.35, center=_on_floor(-0.35, -0.3, 0.35),
               material=_M("checker", (0.45, 0.06, 0.05), (0.25, 0.03, 0.03), 5.0, 0.9, 300.0)),
        Sphere(radius=0.2, center=_on_floor(0.45, -0.45, 0.2),
               material=_M("solid", (0.05, 0.1, 0.35), specular=0.8, shininess=150.0)),
        Torus(major_radius=0.3, minor_radius=0.09, rotation=(90.0, 0.0, 30.0),  # standing on its rim
              center=_on_floor(0.35, 0.35, 0.39),
              material=_M("solid", (0.55, 0.4, 0.08), specular=1.0, shininess=250.0)),
        Box(half_extents=(0.18, 0.18, 0.18), rotation=(0.0, 0.0, 35.0), center=_on_floor(-0.42, 0.45, 0.18),
            material=_M("stripes", (0.15, 0.15, 0.18), (0.35, 0.35, 0.4), 8.0, 0.9, 80.0)),
    ))


def floating_torus() -> Scene:
    """No ground plane: a tilted torus with a sphere floating in its hole, empty background
    all around; cameras also look from below (elevation -40 to 80 degrees)."""
    return Scene((
        Torus(major_radius=0.6, minor_radius=0.18, rotation=(55.0, 0.0, 20.0),
              material=_M("checker", (0.9, 0.6, 0.15), (0.2, 0.25, 0.5), 5.0, 0.4, 48.0)),
        Sphere(radius=0.25, material=_M("stripes", (0.92, 0.92, 0.92), (0.1, 0.6, 0.5), 8.0, 0.4, 48.0)),
    ), rig=Rig(elevation_range=(-40.0, 80.0)))


def chair() -> Scene:
    """Mesh benchmark: a chair frame (four legs, a thin seat, two back posts, three slats)
    turned 30 degrees, on a plate."""
    yaw, seat_z, seat_half, leg, post_top = 30.0, -0.1, 0.025, 0.025, 0.55
    wood = _M("stripes", (0.62, 0.42, 0.22), (0.5, 0.32, 0.15), 12.0, 0.2, 24.0)
    seat_bottom, seat_top = seat_z - seat_half, seat_z + seat_half

    def part(half_extents, centre, material=wood):  # chair coordinates -> turned world box
        return Box(half_extents=half_extents, rotation=(0.0, 0.0, yaw), center=_rotate_z(centre, yaw),
                   material=material)

    legs_z = (_FLOOR - _SINK, seat_bottom + 0.01)  # into the plate and into the seat
    legs = [part((leg, leg, 0.5 * (legs_z[1] - legs_z[0])), (x, y, 0.5 * sum(legs_z)))
            for x in (-0.26, 0.26) for y in (-0.26, 0.26)]
    posts_z = (seat_top - 0.01, post_top)
    posts = [part((leg, leg, 0.5 * (posts_z[1] - posts_z[0])), (x, 0.26, 0.5 * sum(posts_z)))
             for x in (-0.26, 0.26)]
    slats = [part((0.26 - leg + 0.01, 0.015, 0.03), (0.0, 0.26, z)) for z in (0.15, 0.3, 0.45)]
    seat_wood = _M("checker", (0.7, 0.5, 0.3), (0.55, 0.36, 0.2), 8.0, 0.2, 24.0)
    seat = part((0.3, 0.3, seat_half), (0.0, 0.0, seat_z), seat_wood)
    return Scene((_plate(_CHECKER), seat, *legs, *posts, *slats))


SUITE = {build.__name__: build for build in (
    thin_wires, concave_bowl, textureless, fine_texture, glossy, floating_torus, chair)}
"""Benchmark scene name -> function building its `Scene` (docstring: its character)."""
