"""Scene descriptions: the `Scene` (primitives, light, box and camera `Rig`) and the
built-in scenes `SCENES` (the demo and a tiny test scene) with their unbounded variant.
World +Z is up. New scenes are `SCENES` entries, new layouts `Rig`s; the benchmark suite
lives in `suite`."""

from __future__ import annotations

import dataclasses

from .primitives import Box, Capsule, Frustum, Sphere
from .shading import Material
from .torus import Bowl, Torus

BLENDER_FOV_X = 0.6911112070083618
_M = Material

Primitive = Sphere | Box | Frustum | Capsule | Torus | Bowl


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
