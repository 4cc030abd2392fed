"""`triangulate`: SIFT points of a few posed training views, against the demo scene's
analytic surface.

The scene is the demo at 200 px with 8 training cameras drawn on the generator's sphere
band (10-80 degrees up, 40-100 degrees apart); 3-view runs use the first three. Measured
(pycolmap 4.2.1, 2 shared cores): 8 views 171-174 points, median |sdf| 0.19% and 90th
percentile 1.5% of the box diagonal, ~1.5 s; 3 views 23-25 points, median 0.4-0.8%, 90th
percentile 2.8-3.1%, ~0.6 s. The stray points are two-view tracks matched on repeated
texture along an epipolar line; the visual hull drops about a fifth of the raw points.
"""

import dataclasses

import numpy as np
import pycolmap
import pytest

from sparsefield.cameras import project_points
from sparsefield.datasets import load_scene
from sparsefield.datasets.colmap_features import read_keypoints, write_pngs
from sparsefield.datasets.synthetic import SCENES, generate_scene, sdf
from sparsefield.datasets.triangulation import SparsePoints, TriangulationConfig, triangulate

RESOLUTION = 200
UNCACHED = TriangulationConfig(cache=False)
VIEWS = {3: [0, 1, 2], 8: list(range(8))}
BOUNDS = {  # views: (fewest points, median |sdf|, 90th percentile |sdf|), relative to the diagonal
    3: (15, 0.015, 0.05),
    8: (100, 0.005, 0.03),
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("triangulation") / "demo"
    return load_scene(generate_scene(root, "demo", RESOLUTION, n_train=8, n_val=0, n_test=0))


@pytest.fixture(scope="module")
def triangulated(demo):
    """``{views: (SparsePoints, printed lines)}`` for 3 and 8 views."""
    out = {}
    for n, ids in VIEWS.items():
        lines = []
        out[n] = triangulate(demo, np.array(ids), UNCACHED, echo=lines.append), lines
    return out


def _diagonal(scene) -> float:
    return float(np.linalg.norm(scene.bbox[1] - scene.bbox[0]))


def test_keypoints_use_sparsefield_pixel_centres(tmp_path):
    """A bright blob centred on pixel (30, 20), i.e. at (30.5, 20.5) in sparsefield's
    convention, is found by COLMAP's SIFT at (30.5, 20.5): no conversion is needed."""
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    blob = 0.1 + 0.8 * np.exp(-((xx - 30.5) ** 2 + (yy - 20.5) ** 2) / (2 * 3.0**2))
    names = write_pngs(np.repeat(blob[None, :, :, None], 3, -1), tmp_path / "images")
    pycolmap.extract_features(
        tmp_path / "db.db", tmp_path / "images", image_names=names, device=pycolmap.Device.cpu
    )
    with pycolmap.Database.open(tmp_path / "db.db") as db:
        (image,) = db.read_all_images()
        found = np.array([(k.x, k.y) for k in read_keypoints(db, image.image_id)])
    assert len(found) and np.abs(found - [30.5, 20.5]).max() < 0.05, found


@pytest.mark.parametrize("n", sorted(VIEWS))
def test_points_lie_on_the_surface(demo, triangulated, n):
    points, lines = triangulated[n]
    fewest, median, p90 = BOUNDS[n]
    distance = np.abs(sdf(SCENES["demo"], points.points).min(-1)) / _diagonal(demo)
    assert len(lines) == 1 and f"triangulation: {len(points)} points from {n} views" in lines[0]
    assert len(points) >= fewest, lines
    quantiles = np.percentile(distance, [50, 90])
    assert quantiles[0] < median and quantiles[1] < p90, quantiles
    voxel = 3.0 / 128 / _diagonal(demo)  # a 128^3 grid over the 3-unit box
    assert np.mean(distance < 3 * voxel) > (0.75 if n == 8 else 0.5)


@pytest.mark.parametrize("n", sorted(VIEWS))
def test_observations_agree_with_the_points(demo, triangulated, n):
    """Every observation's pixel is within the error bound of its point's projection, and
    its depth is the point's view depth there; tracks count distinct views."""
    points, _ = triangulated[n]
    cameras = demo.cameras[np.array(VIEWS[n])]
    assert points.num_views == n and points.obs_view.max() < n
    assert np.array_equal(points.track, np.bincount(points.obs_point, minlength=len(points)))
    pairs = points.obs_point * n + points.obs_view
    assert len(np.unique(pairs)) == len(pairs) and points.track.min() >= 2
    residuals = np.zeros(len(pairs))
    for view in range(n):
        uv, depth, index = points.keypoints(view)
        u, v, true_depth = project_points(points.points[index], cameras, view)
        residuals[points.obs_view == view] = np.hypot(u - uv[:, 0], v - uv[:, 1])
        np.testing.assert_allclose(depth, true_depth, rtol=1e-5)
        assert np.all(depth > 0)
    assert residuals.max() < UNCACHED.max_error and np.median(residuals) < 0.5
    mean = np.bincount(points.obs_point, residuals) / points.track
    np.testing.assert_allclose(points.error, mean, atol=1e-4)
    assert np.all((points.points >= demo.bbox[0]) & (points.points <= demo.bbox[1]))
    assert np.all((points.colors >= 0) & (points.colors <= 1))


def test_points_are_inside_the_visual_hull(demo, triangulated):
    points, _ = triangulated[8]
    for view, i in enumerate(VIEWS[8]):
        u, v, _ = project_points(points.points, demo.cameras, i)
        col, row = np.floor(u).astype(int), np.floor(v).astype(int)
        near = [demo.masks[i][np.clip(row + dr, 0, RESOLUTION - 1), np.clip(col + dc, 0, RESOLUTION - 1)]
                for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
        assert np.all(np.max(near, axis=0) > 0.5), view


@pytest.mark.parametrize("kind", ["noise", "flat"])
def test_textureless_views_give_no_points(demo, capsys, kind):
    """Two noise images match nothing along their epipolar lines; grey images have no
    features. Either way: an empty result and one line saying why."""
    rng = np.random.default_rng(0)
    size = (RESOLUTION, RESOLUTION, 3)
    images = rng.random((2, *size)) if kind == "noise" else np.full((3, *size), 0.5)
    scene = dataclasses.replace(demo, images=images.astype(np.float32), masks=None)
    points = triangulate(scene, np.arange(len(images)), UNCACHED)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(points) == 0 and points.num_views == len(images) and points.obs_uv.shape == (0, 2)
    assert len(out) == 1 and out[0].startswith("triangulation: no points"), out
    assert ("0 SIFT features" if kind == "flat" else "no pair of views") in out[0]


def test_one_view_and_bad_ids(demo, capsys):
    assert len(triangulate(demo, np.array([3]), UNCACHED)) == 0
    assert capsys.readouterr().out.strip() == "triangulation: no points (it needs 2 views or more)"
    for ids in ([0, 0], [0, 99], [0.5, 1]):
        with pytest.raises(ValueError, match="distinct indices"):
            triangulate(demo, np.array(ids), UNCACHED)


def test_results_are_cached(demo, triangulated, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARSEFIELD_CACHE", str(tmp_path))
    first = triangulate(demo, np.array(VIEWS[3]))
    second = triangulate(demo, np.array(VIEWS[3]))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1] == f"{lines[0]} (cached)"
    assert len(list((tmp_path / "triangulation").glob("*.npz"))) == 1
    for field in dataclasses.fields(SparsePoints):
        np.testing.assert_array_equal(getattr(first, field.name), getattr(second, field.name))
    triangulate(demo, np.array(VIEWS[3]), TriangulationConfig(max_error=1.0))  # other options: a new entry
    assert len(list((tmp_path / "triangulation").glob("*.npz"))) == 2


def test_a_colmap_failure_is_one_line(demo, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise RuntimeError("[triangulation.cc:1] Check failed:\nsomething")

    monkeypatch.setattr(pycolmap, "triangulate_points", fail)
    points = triangulate(demo, np.array(VIEWS[3]), UNCACHED)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(points) == 0 and len(out) == 1, out
    assert out[0].startswith("triangulation: no points (COLMAP triangulation failed ("), out
