"""Tests for sparsefield.renderers.mesh on analytic sphere densities."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from sparsefield.renderers import mesh as mesh_lib

R, SHARP, PEAK = 0.6, 50.0, 100.0
BBOX = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
RES = 48
VOXEL = 2.0 / (RES - 1)
SMALL_CENTER = np.array([0.75, 0.75, 0.75])
Z_TO_Y = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # the GLB's turn: (x, y, z) -> (x, z, -y)


def _sphere_density(x, center=0.0, radius=R):
    """sigma = PEAK * sigmoid(SHARP (radius - |x - center|)), in 1/world-length."""
    r = np.linalg.norm(np.asarray(x) - center, axis=-1)
    return PEAK / (1.0 + np.exp(-SHARP * (radius - r)))


def _iso_radius(radius, threshold):
    """Radius where the sigmoid density equals threshold."""
    p = threshold / PEAK
    return radius - np.log(p / (1 - p)) / SHARP


def _position_color(x, d):
    del d
    return np.clip(0.5 + 0.5 * np.asarray(x), 0.0, 1.0)


@pytest.fixture(scope="module")
def sphere():
    return mesh_lib.extract_mesh(
        _sphere_density, _position_color, BBOX, resolution=RES, threshold=10.0, chunk=4096
    )


def test_vertices_on_iso_sphere(sphere):
    r = np.linalg.norm(sphere.vertices, axis=1)
    assert np.abs(r - _iso_radius(R, 10.0)).max() < VOXEL
    # At threshold 50 the level set is the sphere's own radius.
    m50 = mesh_lib.extract_mesh(_sphere_density, None, BBOX, resolution=RES, threshold=50.0)
    assert np.abs(np.linalg.norm(m50.vertices, axis=1) - R).max() < VOXEL


def test_normals_and_winding_point_outward(sphere):
    unit = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    cos = np.sum(sphere.vertex_normals * unit, axis=1)
    assert cos.min() > 0.9
    fcos = np.sum(sphere.face_normals * sphere.triangles_center, axis=1)
    assert (fcos > 0).all()
    assert sphere.is_watertight
    assert sphere.volume == pytest.approx(4 / 3 * np.pi * _iso_radius(R, 10.0) ** 3, rel=0.02)


def test_colors_reproduce_color_fn(sphere):
    rgb = sphere.visual.vertex_colors[:, :3] / 255.0
    np.testing.assert_allclose(rgb, 0.5 + 0.5 * sphere.vertices, atol=1 / 255 + 1e-6)


def test_color_fn_sees_inward_view_directions():
    seen = []

    def record(x, d):
        seen.append((np.asarray(x), np.asarray(d)))
        return np.full((len(x), 3), 0.25)

    m = mesh_lib.extract_mesh(_sphere_density, record, BBOX, resolution=32, chunk=1000)
    x, d = (np.concatenate(a) for a in zip(*seen))
    assert all(len(xi) == 1000 for xi, _ in seen)  # padded to one shape per call
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    assert (np.sum(d * x, axis=1) / np.linalg.norm(x, axis=1) < -0.9).all()  # d ~ -x/|x|
    np.testing.assert_array_equal(m.visual.vertex_colors[:, :3], 64)


def test_chunked_grid_matches_direct():
    grid = mesh_lib.evaluate_grid(_sphere_density, BBOX, 9, chunk=100)
    g = np.linspace(-1.0, 1.0, 9)
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1)
    np.testing.assert_allclose(grid, _sphere_density(pts), rtol=1e-5)


def test_remove_floaters_drops_small_sphere():
    def two_spheres(x):
        return _sphere_density(x) + _sphere_density(x, SMALL_CENTER, 0.01)

    raw = mesh_lib.extract_mesh(two_spheres, _position_color, BBOX, resolution=RES, clean=False)
    labels = trimesh.graph.connected_component_labels(raw.face_adjacency, len(raw.faces))
    assert labels.max() == 1  # two components before cleaning
    clean = mesh_lib.remove_floaters(raw)
    far = np.linalg.norm(clean.vertices - SMALL_CENTER, axis=1).min()
    assert far > 0.3  # nothing left near the small sphere
    assert np.abs(np.linalg.norm(clean.vertices, axis=1) - _iso_radius(R, 10.0)).max() < VOXEL
    assert len(clean.faces) == np.bincount(labels).max()
    rgb = clean.visual.vertex_colors[:, :3] / 255.0  # colours stay with their vertices
    np.testing.assert_allclose(rgb, 0.5 + 0.5 * clean.vertices, atol=1 / 255 + 1e-6)
    keep_all = mesh_lib.remove_floaters(raw, min_fraction=0.0, min_faces=0)
    assert len(keep_all.faces) == len(raw.faces)
    # extract_mesh cleans by default.
    auto = mesh_lib.extract_mesh(two_spheres, None, BBOX, resolution=RES)
    assert len(auto.faces) == len(clean.faces)


def test_no_surface_raises():
    with pytest.raises(ValueError, match="No surface"):
        mesh_lib.extract_mesh(_sphere_density, None, BBOX, resolution=16, threshold=200.0)


def _load(path):
    """A written mesh read back by trimesh; GLB as a scene (its one geometry), since
    trimesh's `force="mesh"` concatenation drops COLOR_0 beside a material."""
    if path.endswith(".glb"):
        scene = trimesh.load(path, process=False)
        (mesh,) = scene.geometry.values()
        return mesh, mesh.visual.vertex_attributes["color"]
    mesh = trimesh.load(path, process=False, force="mesh")
    return mesh, mesh.visual.vertex_colors


def _read_glb(path):
    """(JSON tree, accessor name -> numpy array) of a GLB, parsed by hand per the glTF 2.0
    spec (12-byte header, JSON chunk, BIN chunk), so the checks do not trust trimesh."""
    data = open(path, "rb").read()
    magic, version, length = np.frombuffer(data[:12], "<u4")
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_len = int(np.frombuffer(data[12:16], "<u4")[0])
    tree = json.loads(data[20 : 20 + json_len])
    binary = data[28 + json_len :]
    dtypes = {5121: np.uint8, 5125: np.uint32, 5126: np.float32}
    widths = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}

    def accessor(i):
        acc = tree["accessors"][i]
        view = tree["bufferViews"][acc["bufferView"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        flat = np.frombuffer(binary, dtypes[acc["componentType"]], acc["count"] * widths[acc["type"]], start)
        return flat.reshape(acc["count"], -1)

    primitive = tree["meshes"][0]["primitives"][0]
    arrays = {name: accessor(i) for name, i in primitive["attributes"].items()}
    arrays["indices"] = accessor(primitive["indices"]).reshape(-1, 3)
    return tree, arrays


@pytest.mark.parametrize("ext", [".ply", ".obj", ".glb"])
def test_write_read_round_trip(sphere, tmp_path, ext):
    path = str(tmp_path / f"sub/mesh{ext}")
    assert mesh_lib.write_mesh(sphere, path) == path
    assert [p.name for p in (tmp_path / "sub").iterdir()] == [f"mesh{ext}"]  # no temp left
    back, colors = _load(path)
    assert len(back.vertices) == len(sphere.vertices)
    assert len(back.faces) == len(sphere.faces)
    expected = sphere.vertices @ Z_TO_Y.T if ext == ".glb" else sphere.vertices
    np.testing.assert_allclose(back.vertices, expected, atol=1e-5)
    np.testing.assert_array_equal(colors, sphere.visual.vertex_colors)
    # Outward: winding (face normals) and the written vertex normals (the sphere is at 0).
    assert (np.sum(back.face_normals * back.triangles_center, axis=1) > 0).all()
    assert back.nondegenerate_faces().all() and back.unique_faces().all()


def test_written_normals_and_layout(sphere, tmp_path):
    """The normals in the files themselves: PLY read with plyfile, OBJ's vn lines."""
    plyfile = pytest.importorskip("plyfile")
    ply = plyfile.PlyData.read(mesh_lib.write_mesh(sphere, str(tmp_path / "m.ply")))
    assert not ply.text and ply.byte_order == "<"
    vertex = ply["vertex"]
    assert {"x", "y", "z", "nx", "ny", "nz", "red", "green", "blue", "alpha"} <= set(vertex.data.dtype.names)
    normals = np.stack([vertex["nx"], vertex["ny"], vertex["nz"]], -1)
    positions = np.stack([vertex["x"], vertex["y"], vertex["z"]], -1)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    assert (np.sum(normals * positions, axis=1) > 0).all()
    np.testing.assert_array_equal(vertex["red"], sphere.visual.vertex_colors[:, 0])
    text = open(mesh_lib.write_mesh(sphere, str(tmp_path / "m.obj"))).read().splitlines()
    vn = np.array([line.split()[1:] for line in text if line.startswith("vn ")], float)
    assert len(vn) == len(sphere.vertices)
    assert (np.sum(vn * positions, axis=1) > 0).all()


def _broken_spheres():
    """Two spheres with faults: a closed one with a third of its faces flipped, a duplicate
    face and two degenerate ones; a second closed one wound inside out; an open cap
    (a hemisphere) with a fifth of its faces flipped."""
    rng = np.random.default_rng(0)
    a = trimesh.creation.icosphere(3, radius=0.5)
    a.apply_translation([-0.8, 0.0, 0.0])
    faces = a.faces.copy()
    flip = rng.random(len(faces)) < 0.33
    faces[flip] = faces[flip][:, ::-1]
    faces = np.concatenate([faces, faces[:1], [[0, 0, 1], [0, 1, 0]]])
    b = trimesh.creation.icosphere(3, radius=0.4)
    b.apply_translation([0.8, 0.0, 0.0])
    cap = trimesh.creation.icosphere(3, radius=0.3)
    cap.update_faces(cap.triangles_center[:, 2] > 0.05)
    cap.remove_unreferenced_vertices()
    cap.apply_translation([0.0, 0.0, 1.0])
    cap_faces = cap.faces.copy()
    flip = rng.random(len(cap_faces)) < 0.2
    cap_faces[flip] = cap_faces[flip][:, ::-1]
    parts = [(a.vertices, faces), (b.vertices, b.faces[:, ::-1]), (cap.vertices, cap_faces)]
    offsets = np.cumsum([0] + [len(v) for v, _ in parts])
    mesh = trimesh.Trimesh(np.concatenate([v for v, _ in parts]),
                           np.concatenate([f + o for (_, f), o in zip(parts, offsets)]), process=False)
    mesh.visual.vertex_colors = _rgba(mesh.vertices)
    centers = np.array([[-0.8, 0.0, 0.0], [0.8, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return mesh, centers


def _rgba(x):
    rgb = np.round(np.clip(0.5 + 0.5 * np.asarray(x), 0, 1) * 255).astype(np.uint8)
    return np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)


def _outward(mesh, centers):
    """Per vertex and per face: dot(normal, position - nearest centre)."""
    def nearest(x):
        return centers[np.argmin(np.linalg.norm(x[:, None] - centers, axis=-1), axis=1)]
    v = np.sum(mesh.vertex_normals * (mesh.vertices - nearest(mesh.vertices)), axis=1)
    f = np.sum(mesh.face_normals * (mesh.triangles_center - nearest(mesh.triangles_center)), axis=1)
    return v, f


def test_repair_mesh_winds_every_part_outward():
    broken, centers = _broken_spheres()
    assert not broken.is_winding_consistent
    faces = broken.faces.copy()
    fixed = mesh_lib.repair_mesh(broken)
    assert len(fixed.faces) == len(broken.faces) - 3  # the duplicate and degenerate faces
    assert fixed.nondegenerate_faces().all() and fixed.unique_faces().all()
    assert fixed.is_winding_consistent
    v, f = _outward(fixed, centers)
    assert (f > 0).all() and (v > 0).all()
    np.testing.assert_array_equal(fixed.visual.vertex_colors, _rgba(fixed.vertices))
    np.testing.assert_array_equal(broken.faces, faces)  # input untouched


@pytest.mark.parametrize("ext", [".ply", ".obj", ".glb"])
def test_written_broken_mesh_reads_back_outward(tmp_path, ext):
    broken, centers = _broken_spheres()
    back, colors = _load(mesh_lib.write_mesh(broken, str(tmp_path / f"m{ext}")))
    if ext == ".glb":
        centers = centers @ Z_TO_Y.T
    v, f = _outward(back, centers)
    assert (f > 0).all() and (v > 0).all()
    assert back.nondegenerate_faces().all() and back.unique_faces().all()
    positions = back.vertices @ Z_TO_Y if ext == ".glb" else back.vertices  # back to Z-up
    dist, source = cKDTree(broken.vertices).query(positions)
    assert dist.max() < 1e-6 and len(back.vertices) == len(broken.vertices)
    np.testing.assert_array_equal(colors, broken.visual.vertex_colors[source])


def test_glb_is_y_up_with_vertex_color_material(tmp_path):
    """A tall box standing on the ground (z = 0) of the Z-up world stands on y = 0 in
    the GLB, its long axis along +Y; normals and a matte white PBR material are there."""
    box = trimesh.creation.box(extents=(0.2, 0.4, 1.0))
    box.apply_translation([0.3, -0.2, 0.5])
    box.visual.vertex_colors = _rgba(box.vertices)
    path = mesh_lib.write_mesh(box, str(tmp_path / "box.glb"))
    back, colors = _load(path)
    assert np.argmax(back.extents) == 1
    np.testing.assert_allclose(back.bounds, [[0.3 - 0.1, 0.0, 0.0], [0.3 + 0.1, 1.0, 0.4]], atol=1e-6)
    tree, arrays = _read_glb(path)
    primitive = tree["meshes"][0]["primitives"][0]
    assert {"POSITION", "NORMAL", "COLOR_0"} <= set(primitive["attributes"])
    material = tree["materials"][primitive["material"]]["pbrMetallicRoughness"]
    assert material["baseColorFactor"] == [1.0, 1.0, 1.0, 1.0] and material["metallicFactor"] == 0.0
    center = np.array([0.3, 0.5, 0.2])
    np.testing.assert_allclose(np.linalg.norm(arrays["NORMAL"], axis=1), 1.0, atol=1e-5)
    assert (np.sum(arrays["NORMAL"] * (arrays["POSITION"] - center), axis=1) > 0).all()
    np.testing.assert_array_equal(arrays["COLOR_0"], colors)
    dist, source = cKDTree(box.vertices).query(back.vertices @ Z_TO_Y)
    assert dist.max() < 1e-6
    np.testing.assert_array_equal(colors, box.visual.vertex_colors[source])


def test_y_up_rotation():
    np.testing.assert_allclose(mesh_lib.y_up_rotation()[:3, :3], Z_TO_Y, atol=1e-12)
    np.testing.assert_allclose(mesh_lib.y_up_rotation((0, 1, 0)), np.eye(4))
    for up in [(0, -1, 0), (1, 2, 3), (0, 0, -2)]:
        rot = mesh_lib.y_up_rotation(up)[:3, :3]
        np.testing.assert_allclose(rot @ (np.array(up) / np.linalg.norm(up)), [0, 1, 0], atol=1e-12)
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rot) == pytest.approx(1.0)


@pytest.mark.parametrize("ext", [".ply", ".obj", ".glb"])
def test_open3d_reads_written_mesh(sphere, tmp_path, capfd, ext):
    o3d = pytest.importorskip("open3d", exc_type=ImportError)  # also skips without libusb
    path = mesh_lib.write_mesh(sphere, str(tmp_path / f"m{ext}"))
    capfd.readouterr()
    loaded = o3d.io.read_triangle_mesh(path)
    out, err = capfd.readouterr()
    assert "warning" not in (out + err).lower() and "error" not in (out + err).lower()
    assert len(loaded.vertices) == len(sphere.vertices) and len(loaded.triangles) == len(sphere.faces)
    assert loaded.has_vertex_normals() and loaded.has_vertex_colors()
    positions, normals = np.asarray(loaded.vertices), np.asarray(loaded.vertex_normals)
    assert (np.sum(normals * positions, axis=1) > 0).all()
    zup = positions @ Z_TO_Y if ext == ".glb" else positions
    np.testing.assert_allclose(zup, sphere.vertices, atol=1e-5)
    rgb = sphere.visual.vertex_colors[:, :3] / 255
    np.testing.assert_allclose(np.asarray(loaded.vertex_colors), rgb, atol=1e-6)


def _gltf_validator():
    """NODE_PATH under which node finds the npm package gltf-validator, or None."""
    if shutil.which("node") is None:
        return None
    paths = [p for p in os.environ.get("NODE_PATH", "").split(os.pathsep) if p]
    if shutil.which("npm"):
        root = subprocess.run(["npm", "root", "-g"], capture_output=True, text=True, timeout=60)
        paths.append(root.stdout.strip())
    env = {**os.environ, "NODE_PATH": os.pathsep.join(paths)}
    found = subprocess.run(["node", "-e", "require('gltf-validator')"], env=env, capture_output=True,
                           timeout=60)
    return env if found.returncode == 0 else None


def test_khronos_gltf_validator(sphere, tmp_path):
    env = _gltf_validator()
    if env is None:
        pytest.skip("needs node and the npm package gltf-validator (npm install -g gltf-validator)")
    path = mesh_lib.write_mesh(sphere, str(tmp_path / "m.glb"))
    script = ("const v = require('gltf-validator'); const fs = require('fs');"
              "v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[1])))"
              ".then(r => console.log(JSON.stringify(r.issues)));")
    run = subprocess.run(["node", "-e", script, path], env=env, capture_output=True, text=True, timeout=60)
    issues = json.loads(run.stdout)
    counts = [issues[k] for k in ("numErrors", "numWarnings", "numInfos", "numHints")]
    assert counts == [0, 0, 0, 0], issues


def test_write_unsupported_extension(sphere, tmp_path):
    with pytest.raises(ValueError, match=r"mesh\.stl.*\.ply"):
        mesh_lib.write_mesh(sphere, str(tmp_path / "mesh.stl"))


def test_chamfer_concentric_spheres():
    a = mesh_lib.sample_points(trimesh.creation.icosphere(4, radius=0.5), 20000, seed=0)
    b = mesh_lib.sample_points(trimesh.creation.icosphere(4, radius=0.6), 20000, seed=1)
    assert mesh_lib.chamfer_distance(a, b) == pytest.approx(0.1, abs=3e-3)
    assert mesh_lib.chamfer_distance(a, a) == 0.0
    np.testing.assert_array_equal(a, mesh_lib.sample_points(
        trimesh.creation.icosphere(4, radius=0.5), 20000, seed=0))


def test_chamfer_hand_case():
    a = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    b = np.array([[0.0, 0, 0.5]])
    # a->b: (0.5 + sqrt(1.25)) / 2; b->a: 0.5.
    expected = 0.5 * ((0.5 + np.sqrt(1.25)) / 2 + 0.5)
    assert mesh_lib.chamfer_distance(a, b) == pytest.approx(expected)


def test_surface_scores_count_made_up_and_missing_surface():
    """Truth: 1000 points on a unit circle in z = 0. A prediction with 20% of its points
    2 units away (made up) and covering half the circle (missing half) scores precision
    0.8 and recall 0.5 at a threshold below the points' spacing, F = 2 * 0.8 * 0.5 / 1.3."""
    from sparsefield.renderers.mesh import surface_scores

    angle = np.linspace(0, 2 * np.pi, 1000, endpoint=False)
    truth = np.stack([np.cos(angle), np.sin(angle), np.zeros_like(angle)], -1)
    half = truth[:500]
    made_up = half[:125] + [0.0, 0.0, 2.0]
    scores = surface_scores(np.vstack([half, made_up]), truth, (0.001,))  # below the spacing 0.0063
    np.testing.assert_allclose([scores["precision@0.001"], scores["recall@0.001"]], [0.8, 0.5], atol=1e-9)
    np.testing.assert_allclose(scores["f@0.001"], 2 * 0.8 * 0.5 / 1.3, rtol=1e-9)
    assert surface_scores(truth, truth, (0.001,))["chamfer"] == 0.0
    # Completeness over the seen half only: the missing half no longer counts against
    # recall, while the made-up points still count against precision.
    seen = np.arange(1000) < 500
    scores = surface_scores(np.vstack([half, made_up]), truth, (0.001,), seen=seen)
    np.testing.assert_allclose([scores["precision@0.001"], scores["recall@0.001"]], [0.8, 1.0], atol=1e-9)
