"""Procedural scenes with analytic ground truth, written as Blender / NeRF-synthetic data.

The front door of the generator: named scenes to dataset folders. `generate_scene`
writes a built-in scene (`SCENES`: the demo and a tiny test scene), `generate_suite_scene`
a benchmark scene (`SUITE`), both in the Blender layout (``transforms_{train,val,test}.json``,
RGBA PNGs with alpha masks, the ground-truth ``mesh.ply`` and ``surface_points.npy``);
`demo_scene_path` and `suite_scene_path` cache them under `cache_root()`.
`generate_forward_scene` writes the LLFF-style forward-facing layout.

The modules, by concern: `primitives` and `torus` (analytic solids with exact ray
intersection, SDF, surface samples and mesh), `shading` (materials and textures),
`scenes` (`Scene`, `Rig`, the built-in scenes), `suite` (the benchmark scenes),
`raycast` (the exact ray caster and `render_views`), `truth` (`sdf`, `sample_surface`,
`scene_mesh`), `writer` (camera splits, PNG + JSON, atomic folders) and `forward`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...cache import cache_root
from .forward import ForwardRig, generate_forward_scene
from .primitives import Box, Capsule, Frustum, Sphere
from .raycast import cast_rays, render_views
from .scenes import BLENDER_FOV_X, SCENES, Primitive, Rig, Scene, unbounded_scene
from .shading import Material, albedo
from .suite import SUITE
from .torus import Bowl, Torus
from .truth import sample_surface, scene_mesh, sdf
from .writer import split_poses, staged_folder, write_split

GENERATOR_VERSION = "2"
"""Bump whenever the written demo data changes, so cached demo scenes are regenerated."""
SUITE_VERSION = "1"
"""Bump whenever a suite scene or its written data changes, so cached suite scenes are
regenerated (the demo's `GENERATOR_VERSION` stays)."""
N_SURFACE_POINTS = 50_000

__all__ = [
    "BLENDER_FOV_X", "GENERATOR_VERSION", "N_SURFACE_POINTS", "SCENES", "SUITE", "SUITE_VERSION",
    "Bowl", "Box", "Capsule", "ForwardRig", "Frustum", "Material", "Primitive", "Rig", "Scene", "Sphere",
    "Torus", "albedo", "cast_rays", "demo_scene_path", "generate_forward_scene", "generate_scene",
    "generate_suite_scene", "render_views", "sample_surface", "scene_mesh", "sdf", "suite_scene_path",
    "unbounded_scene",
]


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
    scene = unbounded_scene(SCENES[name]) if unbounded else SCENES[name]
    return _write_blender(scene, Path(out_dir), resolution, (n_train, n_val, n_test), seed, supersample)


def generate_suite_scene(
    name: str, root, resolution: int = 400, n_train: int = 100, n_val: int = 4, n_test: int = 25,
    seed: int = 0, supersample: int = 2,
) -> Path:
    """Render the benchmark scene `SUITE[name]` into the folder ``root``, as `generate_scene`.

    Same layout, cameras and atomic write as `generate_scene`: train / val cameras on the
    scene's sphere band (100 train views put well-spread cameras at the standard 8-view
    ids), test cameras an even orbit, alpha masks in the PNGs, and the ground truth for
    mesh benchmarks: ``mesh.ply`` (the primitives' closed meshes, coloured, overlapping
    where the primitives do) and ``surface_points.npy`` (``N_SURFACE_POINTS`` points
    uniform on the outer surface only, what Chamfer distance and F-score compare with).

    Args:
        name: key of `SUITE`.
        root: the dataset folder (created, or replaced when it exists).
        resolution: image width = height in pixels.
        n_train, n_val, n_test: views per split.
        seed: seeds the train / val cameras and the surface samples.
        supersample: s of `render_views` (1: no anti-aliasing, alpha is the centre ray's hit).

    Returns:
        ``Path(root)``.
    """
    if name not in SUITE:
        raise ValueError(f"unknown suite scene {name!r}; known: {sorted(SUITE)}")
    return _write_blender(SUITE[name](), Path(root), resolution, (n_train, n_val, n_test), seed, supersample)


def _write_blender(scene: Scene, out_dir: Path, resolution: int, counts, seed: int, supersample: int) -> Path:
    """The Blender-layout dataset of ``scene`` with ``counts`` = (train, val, test) views."""
    with staged_folder(out_dir) as tmp:
        for split, poses in split_poses(scene.rig, *counts, seed).items():
            write_split(tmp, split, scene, poses, resolution, supersample)
        scene_mesh(scene).export(tmp / "mesh.ply")
        np.save(tmp / "surface_points.npy", sample_surface(scene, N_SURFACE_POINTS, seed))
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


def suite_scene_path(name: str, resolution: int = 400) -> Path:
    """Folder of the benchmark scene `SUITE[name]` (100 train, 4 val, 25 test views, seed
    0), generated on first use under ``$SPARSEFIELD_CACHE`` as
    ``synthetic-suite-<name>-v<SUITE_VERSION>-<resolution>px``, atomically like the demo."""
    if name not in SUITE:
        raise ValueError(f"unknown suite scene {name!r}; known: {sorted(SUITE)}")
    path = cache_root() / f"synthetic-suite-{name}-v{SUITE_VERSION}-{resolution}px"
    if not (path / "transforms_train.json").is_file():
        generate_suite_scene(name, path, resolution)
    return path
