"""The benchmark suite of generated scenes and its primitives (torus, bowl shell, capsule):
ray hits against closed forms, a sphere-traced SDF march and the SDF gradient; closed
meshes on the surface; uniform surface samples; hollow bowls whose inside only some
cameras see; written scenes that are deterministic, load, and carry alpha masks equal to
the projected hits; and the demo scene unchanged against images written before the suite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from sparsefield import cameras
from sparsefield.datasets import BLENDER_8_VIEWS, load_scene
from sparsefield.datasets import synthetic as syn

GOLDEN = Path(__file__).parent / "golden"
PRIMITIVES = {
    "torus": syn.Torus(major_radius=0.5, minor_radius=0.15, center=(0.1, -0.2, 0.3),
                       rotation=(30.0, 40.0, 50.0)),
    "fat_torus": syn.Torus(major_radius=0.3, minor_radius=0.25, rotation=(-60.0, 0.0, 10.0)),
    "bowl": syn.Bowl(radius=0.5, thickness=0.06, center=(-0.1, 0.0, 0.2), rotation=(20.0, -30.0, 10.0)),
    "capsule": syn.Capsule(radius=0.05, half_length=0.4, center=(0.0, 0.2, 0.0), rotation=(70.0, 0.0, 30.0)),
}


def march(field, o, d, far=8.0, steps=600):
    """Sphere tracing: with an exact SDF it never steps past the first surface, so ``t``
    converges to the first hit (``field < 1e-10``) or runs out to ``far`` (a miss)."""
    t = np.zeros(len(o))
    for _ in range(steps):
        t = np.minimum(t + np.maximum(field(o + t[:, None] * d), 0.0), far)
    return t, field(o + t[:, None] * d)


def random_rays(rng, prim, n, distance=3.0, spread=0.1):
    """Unit rays from a sphere of ``distance`` about ``prim`` towards points within
    ``spread`` of its surface (about half of them hit)."""
    o = rng.normal(size=(n, 3))
    o = np.asarray(prim.center) + distance * o / np.linalg.norm(o, axis=1, keepdims=True)
    target = prim.sample(rng, n) @ prim.rotation_matrix.T + prim.center + rng.uniform(-spread, spread, (n, 3))
    d = target - o
    return o, d / np.linalg.norm(d, axis=1, keepdims=True)


def pixel_rays(c2w, fov_x, size):
    """Float64 centre rays ``[size * size, 3]`` of a pinhole camera (OpenGL axes), with
    ``(x, y, -1) / |(x, y, -1)|`` turned by the pose and not renormalised, as the renderer
    does: the poses are float32, orthonormal to 3e-8, and a sharp highlight shows it."""
    focal = 0.5 * size / math.tan(0.5 * fov_x)
    j, i = np.indices((size, size)) + 0.5
    local = np.stack([(i - 0.5 * size) / focal, (0.5 * size - j) / focal, -np.ones((size, size))], -1)
    local /= np.linalg.norm(local, axis=-1, keepdims=True)
    return np.asarray(c2w)[:3, 3][None], local.reshape(-1, 3) @ np.asarray(c2w)[:3, :3].T


TORUS, BOWL, CAPSULE = syn.Torus(major_radius=0.5, minor_radius=0.15), syn.Bowl(radius=0.5, thickness=0.06), \
    syn.Capsule(radius=0.05, half_length=0.4)
LEFT, DOWN, UP = (-1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 0.0, 1.0)
WALL, SIDE = math.sqrt(0.47**2 - 0.2**2), math.sqrt(0.05**2 - 0.02**2)
CLOSED_FORMS = [  # primitive, origin, direction, hit t, normal (None: not checked)
    (TORUS, (3.0, 0, 0), LEFT, 3.0 - 0.65, (1, 0, 0)),  # outer equator
    (TORUS, (0.5, 0, 3.0), DOWN, 3.0 - 0.15, (0, 0, 1)),  # top of the tube
    (TORUS, (0, 0, 3.0), DOWN, math.inf, None),  # down through the hole
    (TORUS, (0, 0, 0), LEFT, 0.35, (1, 0, 0)),  # from the hole's centre: the inner equator
    (BOWL, (0, 0, 3.0), DOWN, 3.0 + 0.47, (0, 0, 1)),  # into the cavity: the inner floor
    (BOWL, (0, 0, -3.0), UP, 3.0 - 0.53, (0, 0, -1)),  # from below: the outer floor
    (BOWL, (3.0, 0, 0.01), LEFT, 3.0 - 0.5 - math.sqrt(0.03**2 - 0.01**2), None),  # above the rim plane: rim
    (BOWL, (3.0, 0, -0.1), LEFT, 3.0 - math.sqrt(0.53**2 - 0.1**2), None),  # the outer wall
    (BOWL, (0, 0, -0.2), LEFT, WALL, (WALL / 0.47, 0, 0.2 / 0.47)),  # from the cavity: inner wall, inwards
    (CAPSULE, (2.0, 0, 0.3), LEFT, 1.95, (1, 0, 0)),  # the rod
    (CAPSULE, (0, 0, 2.0), DOWN, 2.0 - 0.45, (0, 0, 1)),  # the tip
    (CAPSULE, (2.0, 0, 0.42), LEFT, 2.0 - SIDE, (SIDE / 0.05, 0, 0.4)),  # the round end, above the rod
    (CAPSULE, (2.0, 0, 0.46), LEFT, math.inf, None),  # above it all
]


@pytest.mark.parametrize("prim, origin, direction, t, normal", CLOSED_FORMS)
def test_hits_match_closed_forms(prim, origin, direction, t, normal):
    hit_t, hit_normal = prim.intersect(np.array([origin], float), np.array([direction], float))
    assert hit_t[0] == pytest.approx(t, abs=1e-12)
    if normal is not None:
        np.testing.assert_allclose(hit_normal[0], normal, atol=1e-12)


@pytest.mark.parametrize("name", PRIMITIVES)
def test_hits_agree_with_sdf_march_and_gradient(name):
    """Placed (rotated, moved) in a scene and cast through `cast_rays`: hits lie on the
    zero set, equal the sphere-traced first hit, misses escape, normals are unit, face the
    ray and equal the normalised SDF gradient."""
    prim, rng = PRIMITIVES[name], np.random.default_rng(0)
    scene = syn.Scene((prim,))
    o, d = random_rays(rng, prim, 1500)
    if name == "bowl":  # half the rays start in the cavity (outside the solid, inside the bowl)
        inside = (np.array([0.0, 0.0, -0.25]) + rng.uniform(-0.1, 0.1, (750, 3))) @ prim.rotation_matrix.T
        o[:750] = inside + prim.center
    _, hit, t, normal = syn.cast_rays(scene, o, d)
    field = lambda x: syn.sdf(scene, x)[:, 0]  # noqa: E731
    assert 0.3 < hit.mean() < 0.9
    p = o + np.where(hit, t, 0.0)[:, None] * d
    assert np.abs(field(p[hit])).max() < 1e-9
    t_march, residual = march(field, o, d)
    converged, escaped = residual < 1e-10, t_march >= 8.0
    assert np.mean(converged | escaped) > 0.98  # the rest graze the surface
    assert hit[converged].all() and not hit[escaped].any()
    np.testing.assert_allclose(t[converged], t_march[converged], atol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(normal[hit], axis=1), 1.0, atol=1e-12)
    assert np.all(np.sum(normal[hit] * d[hit], 1) < 0)
    grad = np.stack([field(p[hit] + 1e-6 * e) - field(p[hit] - 1e-6 * e) for e in np.eye(3)], -1)
    np.testing.assert_allclose(grad / np.linalg.norm(grad, axis=1, keepdims=True), normal[hit], atol=1e-6)


def analytic_volume_and_region(prim):
    """Closed-form volume and (predicate on object-space surface points, its area share)."""
    if isinstance(prim, syn.Torus):
        big, small = prim.major_radius, prim.minor_radius
        outer = lambda p: np.linalg.norm(p[:, :2], axis=1) > big  # noqa: E731
        return 2 * math.pi**2 * big * small**2, outer, (math.pi * big + 2 * small) / (2 * math.pi * big)
    if isinstance(prim, syn.Bowl):
        r, w = prim.radius, 0.5 * prim.thickness
        wall = lambda p: np.linalg.norm(p, axis=1) > r + w - 1e-9  # noqa: E731
        volume = 2 / 3 * math.pi * ((r + w) ** 3 - (r - w) ** 3) + math.pi**2 * r * w**2  # walls + half torus
        outer, inner, rim = 2 * math.pi * (r + w) ** 2, 2 * math.pi * (r - w) ** 2, 2 * math.pi**2 * r * w
        return volume, wall, outer / (outer + inner + rim)
    r, h = prim.radius, prim.half_length
    side = lambda p: np.abs(p[:, 2]) <= h  # noqa: E731
    return math.pi * r * r * 2 * h + 4 / 3 * math.pi * r**3, side, h / (h + r)  # rod 4 pi r h, ends 4 pi r^2


@pytest.mark.parametrize("name", PRIMITIVES)
def test_meshes_are_closed_on_the_surface_and_samples_uniform(name):
    prim = PRIMITIVES[name]
    mesh = prim.mesh()
    volume, region, share = analytic_volume_and_region(prim)
    assert mesh.is_watertight and mesh.is_volume
    assert np.abs(prim.sdf(np.asarray(mesh.vertices))).max() < 1e-12
    assert mesh.volume == pytest.approx(volume, rel=0.02) and mesh.area == pytest.approx(prim.area, rel=0.02)
    points = prim.sample(np.random.default_rng(0), 20_000)
    assert np.abs(prim.sdf(points)).max() < 1e-12
    assert np.mean(region(points)) == pytest.approx(share, abs=0.015)


def test_bricks_texture_values():
    """Rows 1 / s high with mortar joints 0.2 / s, bricks 2 / s long, odd rows shifted half a brick."""
    prim = syn.Box(material=syn.Material("bricks", (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), 10.0))
    points = np.array([
        [0.05, 0, 0.05], [0.05, 0, 0.01], [0.1, 0, 0.05], [0.2, 0, 0.05],  # row 0: brick, bed, brick, head joint
        [0.1, 0, 0.15], [0.0, 0, 0.15],  # row 1, shifted: head joint, brick
    ])
    np.testing.assert_array_equal(syn.albedo(prim, points)[:, 2], [0, 1, 0, 1, 1, 0])  # blue: mortar


def test_bowls_are_hollow_and_their_inside_is_seen_from_above():
    scene = syn.SUITE["concave_bowl"]()
    bowls = [(i, p) for i, p in enumerate(scene.primitives) if isinstance(p, syn.Bowl)]
    for i, bowl in bowls:
        inside = bowl.center + bowl.rotation_matrix @ [0.0, 0.0, -0.5 * bowl.radius]
        dist = syn.sdf(scene, inside[None])[0]
        assert dist.min() > 0 and dist[i] == pytest.approx(0.5 * bowl.radius - 0.5 * bowl.thickness, abs=1e-12)
    i, big = bowls[0]
    seen = []
    for elevation in (-20.0, 10.0, 30.0, 60.0, 85.0):  # per elevation: pixels on the inner wall, 4 azimuths
        count = 0
        for pose in cameras.orbit_poses((0, 0, 0), 4.0, elevation, 4):
            o, d = pixel_rays(pose, syn.BLENDER_FOV_X, 32)
            _, hit, t, normal = syn.cast_rays(scene, o, d)
            local = (o + np.where(hit, t, 0.0)[:, None] * d - big.center) @ big.rotation_matrix
            on_big = hit & (np.abs(syn.sdf(scene, local @ big.rotation_matrix.T + big.center)[:, i]) < 1e-9)
            count += np.count_nonzero(on_big & (np.linalg.norm(local, axis=1) < big.radius) & (local[:, 2] < 0))
        seen.append(count)
    assert seen[0] == 0 and seen[-1] > 100 and all(a < b for a, b in zip(seen, seen[1:]))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Each suite scene written twice at 12 px (3 train, 1 val, 2 test views, no supersampling)."""
    root = tmp_path_factory.mktemp("suite")
    kwargs = dict(resolution=12, n_train=3, n_val=1, n_test=2, seed=1, supersample=1)
    return {name: [syn.generate_suite_scene(name, root / f"{name}-{k}", **kwargs) for k in range(2)]
            for name in syn.SUITE}


def test_suite_scenes_fit_their_box():
    names = {"thin_wires", "concave_bowl", "textureless", "fine_texture", "glossy", "floating_torus", "chair"}
    assert names <= set(syn.SUITE)
    for build in syn.SUITE.values():
        scene = build()
        vertices = syn.scene_mesh(scene).vertices
        assert np.all(vertices >= scene.bbox[0]) and np.all(vertices <= scene.bbox[1])


@pytest.mark.parametrize("name", syn.SUITE)
def test_suite_scene_is_deterministic_loads_and_masks_are_the_hits(name, written):
    a, b = written[name]
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 3 + 6 + 2 and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    scene, data = syn.SUITE[name](), load_scene(a, background=(1.0, 1.0, 1.0))
    assert data.images.shape == (6, 12, 12, 3) and len(data.split("train")) == 3
    for split in ("train", "val", "test"):
        meta = json.loads((a / f"transforms_{split}.json").read_text())
        for k, frame in enumerate(meta["frames"]):
            with Image.open(a / f"{frame['file_path']}.png") as image:
                rgba = np.asarray(image).astype(np.float64) / 255
            o, d = pixel_rays(np.array(frame["transform_matrix"]), meta["camera_angle_x"], 12)
            rgb, hit, _, _ = syn.cast_rays(scene, o, d)
            np.testing.assert_array_equal(rgba[..., 3].ravel(), hit)  # alpha = projected hit
            border = np.ones((12, 12), bool)
            border[1:-1, 1:-1] = False
            assert not hit[border.ravel()].any()  # the whole object in view, background around it
            np.testing.assert_allclose(rgba[..., :3].reshape(-1, 3)[hit], rgb[hit], atol=0.5 / 255 + 1e-9)
            np.testing.assert_array_equal(data.masks[data.split(split)[k]].ravel(), hit)
    mesh = trimesh.load(a / "mesh.ply", process=False)
    assert mesh.is_watertight and np.abs(syn.sdf(scene, mesh.vertices)).min(-1).max() < 1e-5
    points = np.load(a / "surface_points.npy")
    dist = syn.sdf(scene, points)
    assert np.abs(dist.min(-1)).max() < 1e-6 and dist.min() > -1e-6  # outer surface only


def test_suite_scene_path_caches_the_standard_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEFIELD_CACHE", str(tmp_path))
    path = syn.suite_scene_path("chair", resolution=8)
    assert path.parent == tmp_path and path.name == f"synthetic-suite-chair-v{syn.SUITE_VERSION}-8px"
    frames = json.loads((path / "transforms_train.json").read_text())["frames"]
    eyes = np.array([frames[i]["transform_matrix"] for i in BLENDER_8_VIEWS])[:, :3, 3]
    gaps = np.linalg.norm(eyes[:, None] - eyes[None], axis=-1) + 1e9 * np.eye(8)
    assert len(frames) == 100 and gaps.min() > 1.5  # the 8-view ids hold well-spread cameras
    stamp = (path / "transforms_train.json").stat().st_mtime_ns
    assert syn.suite_scene_path("chair", resolution=8) == path
    assert (path / "transforms_train.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown suite scene"):
        syn.suite_scene_path("nope")


def test_demo_scene_is_unchanged(tmp_path):
    """The demo's figures depend on it: its images equal those written before the suite
    existed (to a rounding step, so another CPU's last-bit differences pass)."""
    assert syn.GENERATOR_VERSION == "2"
    out = syn.generate_scene(tmp_path / "demo", "demo", 48)
    for split, k in (("train", 26), ("test", 0)):
        golden = GOLDEN / f"demo_48px_{split}_r_{k}.png"
        with Image.open(out / split / f"r_{k}.png") as new, Image.open(golden) as old:
            diff = np.abs(np.asarray(new, int) - np.asarray(old, int))
        assert diff.max() <= 1 and np.mean(diff > 0) < 0.005
