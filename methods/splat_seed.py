"""Where a Gaussian scene starts, and the visual-hull rule that keeps it there: seed
points from a trained run's density (``--init-from RUN``), the visual hull of the
training masks (GaussianObject), their photo hull, or uniform in the box, kept only
where enough training views see them; isolated points removed."""

from __future__ import annotations

import contextlib

import numpy as np

from ..datasets.scene import DatasetError
from ..fields import gaussians as gs
from ..fields.photo_hull import photo_hull
from ..renderers.mesh import evaluate_grid
from .base import TrainViews


def density_points(key: int, density_fn, color_fn, bbox: np.ndarray, n: int, resolution: int = 96,
                   threshold: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points where a field's density exceeds ``threshold``: cells of a
    ``resolution^3`` lattice drawn in proportion to ``1 - exp(-sigma * cell)``, jittered
    inside the cell; colour from ``color_fn`` looking down -z."""
    sigma = evaluate_grid(density_fn, bbox, resolution).reshape(-1)
    cell = (bbox[1] - bbox[0]) / (resolution - 1)
    prob = np.where(sigma > threshold, 1.0 - np.exp(-sigma * float(np.linalg.norm(cell))), 0.0)
    if prob.sum() <= 0:
        raise ValueError(f"the field's density never exceeds {threshold}")
    rng = np.random.default_rng(key)
    idx = rng.choice(len(prob), size=n, p=prob / prob.sum())
    ijk = np.stack(np.unravel_index(idx, (resolution,) * 3), -1)
    points = (bbox[0] + (ijk + rng.uniform(-0.5, 0.5, ijk.shape)) * cell).astype(np.float32)
    dirs = np.tile(np.array([0.0, 0.0, -1.0], np.float32), (n, 1))
    return points, np.asarray(color_fn(points, dirs))



def seed_points(config, views: TrainViews) -> tuple[np.ndarray, np.ndarray]:
    """Initial points and colours: a trained run's surface (``views.seed``), the visual
    hull of the training masks, inside the photo hull or on its surface (``carve*``), or
    uniform in the box, with the triangulated points first when ``init`` is ``points``;
    isolated points removed."""
    g, bbox = config.splat.gaussians, np.asarray(views.scene.bbox, np.float64)
    cams, min_views = views.cameras, config.splat.min_views
    if views.seed is not None:
        seed = views.seed
        points, colors = density_points(config.seed, seed.density, seed.color, np.asarray(seed.bbox, np.float64),
                                        g.init_points, threshold=seed.threshold)
        print(f"init: {len(points):,} points from the density of {config.init_from}")
    elif g.init in ("carve", "carve-surface"):
        images = views.scene.images[views.ids]
        hull = photo_hull(cams, images, views.masks, bbox, g.carve_resolution, g.carve_tolerance, min_views)
        surface = g.init == "carve-surface"
        with empty_hull_named(views, min_views):
            points, colors = hull.sample(config.seed, g.init_points, surface=surface)
        print(f"init: {len(points):,} points {'on' if surface else 'inside'} the photo hull of {len(views.ids)} "
              f"views ({hull.carved:,} of the visual hull's voxels carved)")
    elif g.init in ("hull", "points") and views.masks is not None:
        with empty_hull_named(views, min_views):
            points, colors = gs.visual_hull_points(config.seed, cams, views.masks, views.scene.images[views.ids],
                                                   bbox, g.init_points, min_views=min_views)
        print(f"init: {len(points):,} points inside the visual hull of {len(views.ids)} masks")
    else:
        rng = np.random.default_rng(config.seed)
        points = rng.uniform(bbox[0], bbox[1], (g.init_points, 3))
        seen, _ = gs.hull_test(points, cams, min_views=min_views)
        points = points[seen] if seen.any() else points
        colors = np.full((len(points), 3), 0.5)
        print(f"init: {len(points):,} points uniform in the box, seen by {min_views} views")
    points, colors = gs.remove_outliers(points, colors, g.outlier_neighbours, g.outlier_std)
    if g.init == "points" and views.seed is None and len(views.points):
        sparse = views.points
        print(f"init: {len(sparse):,} triangulated points first")
        points = np.concatenate([sparse.points, points])[: max(g.init_points, len(sparse))]
        colors = np.concatenate([sparse.colors, colors])[: len(points)]
    return points.astype(np.float32), colors


@contextlib.contextmanager
def empty_hull_named(views: TrainViews, min_views: int):
    """An empty hull as the dataset's error: no point of the scene box lies inside the
    masks of the training views (and the frames of ``min_views`` of them)."""
    try:
        yield
    except ValueError as err:
        framed = min(min_views, len(views.ids))
        raise DatasetError(views.scene.root, f"cannot seed Gaussians: {err} (no point of the scene box lies inside "
                           f"the masks of training views {', '.join(map(str, views.ids))} and the frames of "
                           f"{framed} of them; check the masks' alpha, the poses and --bbox)") from None


def outside_hull(means: np.ndarray, views: TrainViews, min_views: int) -> np.ndarray:
    """``[N]``: Gaussian means outside the training views' visual hull (masks where the
    scene has them) or seen by fewer than ``min_views`` of them (`gs.hull_test`)."""
    return ~gs.hull_test(np.asarray(means), views.cameras, views.masks, min_views=min_views)[0]
