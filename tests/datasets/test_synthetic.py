"""The procedural scene generator: exact ray caster against closed forms, the written
Blender-format dataset, ground-truth mesh and surface samples, determinism, atomicity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import trimesh
from PIL import Image

from sparsefield import cameras
from sparsefield.datasets import load_scene
from sparsefield.datasets import synthetic as syn

FOV = syn.BLENDER_FOV_X


def one_sphere(radius=0.5, center=(0.0, 0.0, 0.0), **material):
    return syn.Scene((syn.Sphere(radius=radius, center=center, material=syn.Material(**material)),))


def analytic_sphere(origin, dirs, center, radius):
    """Hit mask and distance of unit rays from one origin against a sphere (closed form)."""
    oc = np.asarray(origin, np.float64) - center
    b = dirs @ oc
    disc = b * b - (oc @ oc - radius**2)
    return disc > 0, -b - np.sqrt(np.maximum(disc, 0))


def test_sphere_on_axis_depth_normal_and_hits():
    scene, eye = one_sphere(0.5), (3.0, 0.0, 0.0)
    c2w = cameras.look_at(eye, (0, 0, 0))[None]
    rgb, alpha, depth = syn.render_views(scene, c2w, FOV, 33, 33, supersample=1, adaptive=False)
    assert depth[0, 16, 16] == pytest.approx(3.0 - 0.5, abs=1e-6)  # distance - radius
    assert alpha[0, 16, 16] == 1.0 and alpha[0, 0, 0] == 0.0 and depth[0, 0, 0] == 0.0
    assert rgb[0, 0, 0].tolist() == [0.0, 0.0, 0.0] and rgb[0, 16, 16].min() > 0.05
    _, hit, t, normal = syn.cast_rays(scene, np.array([eye]), np.array([[-1.0, 0.0, 0.0]]))
    assert hit[0] and t[0] == pytest.approx(2.5, abs=1e-12)
    np.testing.assert_allclose(normal[0], [1.0, 0.0, 0.0], atol=1e-12)


def test_pixels_follow_camera_conventions():
    """Hit mask and depth of an off-axis sphere equal the closed form on the rays of
    `cameras.image_rays` (OpenGL: +X right, +Y up, pixel centres at i + 0.5)."""
    center, radius, eye = np.array([0.5, 0.0, 0.3]), 0.2, np.array([0.0, -3.0, 0.0])
    c2w = cameras.look_at(eye, (0, 0, 0))  # world +X is image right, +Z image up
    scene = syn.Scene((syn.Sphere(radius=radius, center=tuple(center)),))
    _, alpha, depth = syn.render_views(scene, c2w[None], FOV, 40, 30, supersample=1, adaptive=False)
    origins, dirs = cameras.image_rays(cameras.make_cameras(c2w[None], FOV, 40, 30)[0])
    hit, t = analytic_sphere(eye, np.asarray(dirs, np.float64).reshape(-1, 3), center, radius)
    np.testing.assert_array_equal(alpha[0].ravel() == 1.0, hit)
    np.testing.assert_allclose(depth[0].ravel()[hit], t[hit], atol=2e-5)
    rows, cols = np.nonzero(alpha[0])
    assert rows.max() < 15 and cols.min() > 20  # upper-right quadrant


@pytest.mark.parametrize("adaptive", [False, True])
def test_alpha_coverage_matches_projected_disk(adaptive):
    distance, radius, size = 3.0, 0.5, 64
    c2w = cameras.look_at((0.0, 0.0, distance), (0, 0, 0))[None]
    _, alpha, _ = syn.render_views(one_sphere(radius), c2w, FOV, size, size, 4, adaptive)
    focal = 0.5 * size / math.tan(0.5 * FOV)
    disk = math.pi * (focal * math.tan(math.asin(radius / distance))) ** 2  # pixels
    assert alpha.sum() == pytest.approx(disk, rel=1e-2)  # lattice-count error of 4x4 sub-rays: 0.25%
    assert 0 < np.count_nonzero((alpha > 0) & (alpha < 1)) < 0.2 * disk  # AA ring only


def test_caster_is_exact_on_all_primitive_kinds():
    """Demo scene (rotated boxes, cylinders, cone, sphere): hits lie on the outer surface,
    nothing is hit earlier, misses cross no solid, normals are the SDF gradient."""
    scene, rng = syn.SCENES["demo"], np.random.default_rng(0)
    o = rng.normal(size=(300, 3))
    o = 4.0 * o / np.linalg.norm(o, axis=1, keepdims=True)
    d = rng.uniform(-1.0, 1.0, (300, 3)) - o
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    _, hit, t, normal = syn.cast_rays(scene, o, d)
    assert 0.3 < hit.mean() < 0.9
    p = o + np.where(hit, t, 0.0)[:, None] * d
    np.testing.assert_allclose(syn.sdf(scene, p[hit]).min(-1), 0.0, atol=1e-9)
    span = np.where(hit, t, 8.0)[:, None] * np.linspace(0.0, 1.0 - 1e-6, 600)  # [0, t) or [0, 8]
    before = syn.sdf(scene, (o[:, None] + span[..., None] * d[:, None]).reshape(-1, 3)).min(-1)
    assert before.min() > 0.0
    np.testing.assert_allclose(np.linalg.norm(normal[hit], axis=1), 1.0, atol=1e-9)
    field = lambda x: syn.sdf(scene, x).min(-1)  # noqa: E731
    grad = np.stack([field(p[hit] + 1e-6 * e) - field(p[hit] - 1e-6 * e) for e in np.eye(3)], -1)
    cos = np.sum(grad / np.linalg.norm(grad, axis=1, keepdims=True) * normal[hit], axis=1)
    assert np.mean(cos > 0.999) > 0.97 and np.all(np.sum(normal[hit] * d[hit], 1) < 0)


def test_shading_is_view_dependent_only_through_the_highlight():
    light = np.array([0.0, 0.0, 1.0])
    point, normal = np.array([0.0, 0.6, 0.8]), np.array([0.0, 0.6, 0.8])  # on the unit sphere
    mirror = 2 * (normal @ light) * normal - light  # view direction of the highlight peak
    other = np.array([0.0, 0.0, 1.0])
    views = np.stack([mirror, other])
    half = (light + other) / np.linalg.norm(light + other)
    diffuse = 0.8 * (0.3 + 0.7 * normal @ light)  # albedo (k_a + (1 - k_a) n.l), solid grey
    for specular in (0.0, 0.8):
        material = syn.Material(specular=specular, shininess=16.0)
        scene = syn.Scene((syn.Sphere(radius=1.0, material=material),), light_dir=tuple(light))
        rgb, hit, t, _ = syn.cast_rays(scene, point + 2.0 * views, -views)
        assert hit.all() and np.allclose(t, 2.0)
        np.testing.assert_allclose(rgb[0], min(diffuse + specular, 1.0), atol=1e-12)  # n.h = 1
        np.testing.assert_allclose(rgb[1], diffuse + specular * (normal @ half) ** 16, atol=1e-12)
        assert (np.abs(rgb[0] - rgb[1]).max() > 0.2) == (specular > 0)


def test_surface_samples_uniform_on_outer_surface():
    """Unit sphere with a half-radius sphere on its surface: the outer areas are
    3.75 pi (big) and 0.625 pi (small), so 1/7 of the samples lie on the small one."""
    scene = syn.Scene((syn.Sphere(radius=1.0), syn.Sphere(radius=0.5, center=(1.0, 0.0, 0.0))))
    points = syn.sample_surface(scene, 40_000, seed=1)
    assert points.shape == (40_000, 3) and points.dtype == np.float32
    dist = syn.sdf(scene, points)
    np.testing.assert_allclose(dist.min(-1), 0.0, atol=1e-6)
    assert np.mean(np.abs(dist[:, 1]) < 1e-6) == pytest.approx(1 / 7, abs=0.01)


def test_visible_surface_excludes_what_no_camera_sees():
    """A plate with a box standing on it, photographed from above: the plate's underside
    and the patch under the box are unseen, its top around the box and the box's top
    are seen; cameras below see the underside too."""
    from sparsefield.datasets.synthetic.truth import visible_from

    plate = syn.Box(half_extents=(1.0, 1.0, 0.05), center=(0.0, 0.0, -0.05))
    block = syn.Box(half_extents=(0.2, 0.2, 0.2), center=(0.0, 0.0, 0.2))
    scene = syn.Scene((plate, block))
    points = np.array([
        [0.6, 0.3, 0.0],  # plate top, in the open
        [0.0, 0.0, 0.4],  # block top
        [0.05, 0.05, 0.0],  # plate top, under the block (a contact patch)
        [0.3, -0.4, -0.1],  # plate underside
    ])
    above = cameras.orbit_poses((0.0, 0.0, 0.0), 4.0, 40.0, 8)
    np.testing.assert_array_equal(visible_from(scene, points, above, FOV), [True, True, False, False])
    below = cameras.orbit_poses((0.0, 0.0, 0.0), 4.0, -40.0, 8)
    np.testing.assert_array_equal(visible_from(scene, points, np.concatenate([above, below]), FOV),
                                  [True, True, False, True])
    assert not visible_from(scene, points[:1], above, 0.05)[0]  # outside a narrow field of view


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return syn.generate_scene(tmp_path_factory.mktemp("syn") / "tiny", "tiny", 32, n_train=3, n_val=1, n_test=2)


def test_written_json_and_cameras(tiny):
    for split, count in (("train", 3), ("val", 1), ("test", 2)):
        meta = json.loads((tiny / f"transforms_{split}.json").read_text())
        assert meta["camera_angle_x"] == FOV and meta["bbox"] == [[-1.5] * 3, [1.5] * 3]
        assert (meta["near"], meta["far"]) == (1.4, 6.6)  # 4 -/+ half-diagonal of the box
        assert [f["file_path"] for f in meta["frames"]] == [f"./{split}/r_{k}" for k in range(count)]
        for frame in meta["frames"]:
            m = np.array(frame["transform_matrix"])
            np.testing.assert_allclose(m[3], [0, 0, 0, 1])
            np.testing.assert_allclose(m[:3, :3].T @ m[:3, :3], np.eye(3), atol=1e-6)
            eye = m[:3, 3]
            np.testing.assert_allclose(np.linalg.norm(eye), 4.0, atol=1e-5)
            np.testing.assert_allclose(m[:3, :3] @ [0, 0, -1], -eye / 4.0, atol=1e-5)  # looks at 0
            elevation = math.degrees(math.asin(eye[2] / 4.0))
            assert 5.0 <= elevation <= 80.0 and (split != "test" or abs(elevation - 30.0) < 1e-3)


def test_written_images_match_renderer_and_loader(tiny):
    meta = json.loads((tiny / "transforms_train.json").read_text())
    data = load_scene(tiny, background=(1.0, 1.0, 1.0))
    assert data.images.shape == (6, 32, 32, 3) and data.near == 1.4 and data.far == 6.6
    for k, frame in enumerate(meta["frames"]):
        with Image.open(tiny / (frame["file_path"] + ".png")) as image:
            assert image.mode == "RGBA" and image.size == (32, 32)
            rgba = np.asarray(image).astype(np.float32) / 255
        assert rgba[0, 0, 3] == 0 and rgba[..., 3].max() == 1
        assert np.any((rgba[..., 3] > 0) & (rgba[..., 3] < 1))  # antialiased edges
        c2w = np.array(frame["transform_matrix"])[None]
        rgb, alpha, _ = syn.render_views(syn.SCENES["tiny"], c2w, FOV, 32, 32, 2)
        np.testing.assert_allclose(rgba[..., 3], alpha[0], atol=0.5 / 255 + 1e-6)
        covered = alpha[0] > 0
        np.testing.assert_allclose(rgba[..., :3][covered], rgb[0][covered], atol=0.5 / 255 + 1e-6)
        composite = rgb[0] * alpha[0, ..., None] + 1.0 - alpha[0, ..., None]
        np.testing.assert_allclose(data.images[data.split("train")[k]], composite, atol=1.5 / 255)


def test_ground_truth_mesh_and_surface_points(tiny):
    scene = syn.SCENES["tiny"]
    mesh = trimesh.load(tiny / "mesh.ply", process=False)
    assert len(mesh.faces) > 1000 and mesh.visual.kind == "vertex"
    assert np.abs(syn.sdf(scene, mesh.vertices)).min(-1).max() < 1e-5  # vertices on the solids
    points = np.load(tiny / "surface_points.npy")
    assert points.shape == (syn.N_SURFACE_POINTS, 3) and points.dtype == np.float32
    np.testing.assert_allclose(syn.sdf(scene, points).min(-1), 0.0, atol=1e-6)  # outer surface
    probe = points[:: len(points) // 40][:40]
    triangles = np.repeat(mesh.triangles[None], len(probe), 0).reshape(-1, 3, 3)
    repeated = np.repeat(probe, len(mesh.faces), 0)  # brute force: trimesh's proximity needs rtree
    closest = trimesh.triangles.closest_point(triangles, repeated)
    dist = np.linalg.norm(closest - repeated, axis=1).reshape(len(probe), -1).min(1)
    assert dist.max() < 2e-3  # tessellation error only


def test_generation_is_deterministic_and_atomic(tmp_path, monkeypatch):
    kwargs = dict(resolution=16, n_train=2, n_val=1, n_test=1, seed=3)
    a = syn.generate_scene(tmp_path / "a", "tiny", **kwargs)
    b = syn.generate_scene(tmp_path / "b", "tiny", **kwargs)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 3 + 4 + 2  # json, png, mesh.ply + surface_points.npy
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    other = syn.generate_scene(tmp_path / "c", "tiny", **{**kwargs, "seed": 4})
    assert (other / "transforms_train.json").read_bytes() != (a / "transforms_train.json").read_bytes()

    (a / "stale.txt").write_text("old")
    syn.generate_scene(a, "tiny", **kwargs)  # replaces the whole folder
    assert not (a / "stale.txt").exists() and (a / "transforms_test.json").is_file()

    def fail(scene):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(syn, "scene_mesh", fail)
    with pytest.raises(RuntimeError):
        syn.generate_scene(tmp_path / "d", "tiny", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no partial output
    with pytest.raises(ValueError, match="unknown synthetic scene"):
        syn.generate_scene(tmp_path / "e", "nope")


def test_demo_scene_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEFIELD_CACHE", str(tmp_path))
    path = syn.demo_scene_path(resolution=8)
    assert path.parent == tmp_path and syn.GENERATOR_VERSION in path.name and "8px" in path.name
    frames = json.loads((path / "transforms_train.json").read_text())["frames"]
    with Image.open(path / "test/r_24.png") as image:
        assert len(frames) == 100 and image.size == (8, 8)
    stamp = (path / "transforms_train.json").stat().st_mtime_ns
    assert syn.demo_scene_path(resolution=8) == path
    assert (path / "transforms_train.json").stat().st_mtime_ns == stamp
