"""Tests for sparsefield.renderers.mesh on analytic sphere densities."""

import numpy as np
import pytest
import trimesh

from sparsefield.renderers import mesh as mesh_lib

R, SHARP, PEAK = 0.6, 50.0, 100.0
BBOX = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
RES = 48
VOXEL = 2.0 / (RES - 1)
SMALL_CENTER = np.array([0.75, 0.75, 0.75])


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


@pytest.mark.parametrize("ext", [".ply", ".obj", ".glb"])
def test_write_read_round_trip(sphere, tmp_path, ext):
    path = str(tmp_path / f"sub/mesh{ext}")
    assert mesh_lib.write_mesh(sphere, path) == path
    assert [p.name for p in (tmp_path / "sub").iterdir()] == [f"mesh{ext}"]  # no temp left
    back = trimesh.load(path, process=False, force="mesh")
    assert len(back.vertices) == len(sphere.vertices)
    assert len(back.faces) == len(sphere.faces)
    np.testing.assert_allclose(back.vertices, sphere.vertices, atol=1e-5)
    np.testing.assert_array_equal(back.visual.vertex_colors, sphere.visual.vertex_colors)


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
