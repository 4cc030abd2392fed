"""The photo hull of the training views (space carving, Kutulakos and Seitz 2000): the
largest shape inside the visual hull whose visible surface has the same colour in every
training view that sees it.

Few views at known poses leave depth free wherever only the silhouettes constrain it; a
Gaussian scene seeded in the whole visual hull explains each view with its own Gaussians
(a floor seen by three views turns into three smeared layers). Carving removes, from the
outside in, the voxels whose colours the views that see them disagree on; what stays is
where the photos agree on a surface. No network and no feature matching: it works at
the wide baselines of 3 views where SIFT triangulates nothing.

A voxel seen by one view only is never carved (one view says nothing about depth), and
carving only removes voxels, so a true surface voxel of a Lambertian scene stays
(the visibility the current shape gives is a subset of the true one). Glossy highlights
and colour edges inside one voxel's footprint are what the tolerance is for.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.ndimage import binary_dilation, map_coordinates
from scipy.spatial import cKDTree

from ..cameras import project_points
from .gaussians import hull_test


@dataclasses.dataclass(frozen=True)
class PhotoHull:
    """A carved voxel grid over ``bbox`` (cell centres at ``bbox[0] + (i + 0.5) * cell``)."""

    occupied: np.ndarray
    """``[R, R, R]`` bool: voxels that stay."""
    surface: np.ndarray
    """``[R, R, R]`` bool: occupied voxels that at least one training view sees."""
    colors: np.ndarray
    """``[R, R, R, 3]``: the mean colour of the views that see each surface voxel."""
    bbox: np.ndarray
    carved: int
    """How many voxels of the visual hull were carved."""

    @property
    def cell(self) -> np.ndarray:
        return (self.bbox[1] - self.bbox[0]) / self.occupied.shape[0]

    def contains(self, points: np.ndarray, dilate: int = 1) -> np.ndarray:
        """``[M]``: points in an occupied voxel, or within ``dilate`` voxels of one;
        points outside the box count as outside."""
        occ = binary_dilation(self.occupied, iterations=dilate) if dilate > 0 else self.occupied
        res = occ.shape[0]
        ijk = np.floor((np.asarray(points, np.float64) - self.bbox[0]) / self.cell).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < res), axis=-1)
        ijk = np.clip(ijk, 0, res - 1)
        return inside & occ[ijk[:, 0], ijk[:, 1], ijk[:, 2]]

    def sample(self, key: int, n: int, surface: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``n`` points jittered inside surface voxels (all occupied voxels unless
        ``surface``), each voxel drawn about equally often, and their colours: a surface
        voxel's own, an inner voxel's that of the nearest surface voxel."""
        index = np.argwhere(self.surface if surface else self.occupied)
        if len(index) == 0 or not self.surface.any():
            raise ValueError("the photo hull has no surface voxel")
        rng = np.random.default_rng(key)
        pick = rng.choice(len(index), size=n, replace=n > len(index))
        ijk = index[pick]
        points = self.bbox[0] + (ijk + rng.uniform(0.0, 1.0, ijk.shape)) * self.cell
        shell = np.argwhere(self.surface)
        nearest = shell[cKDTree(shell * self.cell).query(ijk * self.cell)[1]]  # world units: cells need not be cubes
        return points.astype(np.float32), self.colors[nearest[:, 0], nearest[:, 1], nearest[:, 2]].astype(np.float32)


def _sample_image(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``image [H, W, C]`` bilinearly at pixel coordinates ``(u, v)`` (centres at +0.5),
    clamped at the border."""
    coords = np.stack([v - 0.5, u - 0.5])
    return np.stack([map_coordinates(image[..., c], coords, order=1, mode="nearest") for c in range(image.shape[-1])],
                    -1)


def photo_hull(cameras, images: np.ndarray, masks: np.ndarray | None, bbox, resolution: int = 96,
               tolerance: float = 0.12, min_views: int = 1, max_rounds: int = 100) -> PhotoHull:
    """Carve the visual hull of ``masks [C, H, W]`` (inside the frames of at least
    ``min_views`` views, capped at ``C``, as `gaussians.hull_test` has it) down to the
    voxels the views agree on.

    Each round renders each view's depth buffer of the occupied voxels (each voxel
    covers its projected footprint), finds for every surface voxel the views that see
    it (its depth within one voxel of the buffer's), and carves the voxels that two or
    more views see with colours farther than ``tolerance`` (RMS over the channels, 0..1)
    from their mean. Rounds repeat until none is carved (or ``max_rounds``).

    Args:
        cameras: the training cameras (``C`` of them).
        images: ``[C, H, W, 3]`` in 0..1.
        masks: ``[C, H, W]`` in 0..1, or None.
        bbox: ``[2, 3]`` the box the voxels fill.
        resolution: voxels per side.
        tolerance: the colour disagreement that carves a voxel.
        min_views: how many views' frames a voxel must lie in.
        max_rounds: a bound on the rounds.
    """
    bbox = np.asarray(bbox, np.float64)
    images = np.asarray(images, np.float32)[..., :3]
    num, h, w = images.shape[:3]
    cell = (bbox[1] - bbox[0]) / resolution
    grid = np.stack(np.meshgrid(*(np.arange(resolution),) * 3, indexing="ij"), -1).reshape(-1, 3)
    centres = bbox[0] + (grid + 0.5) * cell
    size = float(np.linalg.norm(cell))

    occupied = hull_test(centres, cameras, masks, min_views=min_views)[0]
    views = []
    for k in range(num):
        u, v, depth = project_points(centres, cameras, k)
        ui, vi = np.clip(u.astype(np.int64), 0, w - 1), np.clip(v.astype(np.int64), 0, h - 1)
        radius = np.rint(0.5 * float(cameras.fx[k]) * float(cell.max()) / np.maximum(depth, 1e-6)).astype(np.int64)
        views.append({"pixel": vi * w + ui, "u": u, "v": v, "depth": depth, "radius": np.minimum(radius, 4)})
    hull = int(occupied.sum())

    for _ in range(max_rounds):
        index = np.flatnonzero(occupied)
        seen, colors, mean = _observations(views, images, index, size)
        count = seen.sum(0)
        spread = np.sqrt((((colors - mean) ** 2).mean(-1) * seen).sum(0) / np.maximum(count, 1))
        carve = (count >= 2) & (spread > tolerance)
        if not carve.any():
            break
        occupied[index[carve]] = False

    index = np.flatnonzero(occupied)
    seen, _, mean = _observations(views, images, index, size)
    surface = np.zeros(len(centres), bool)
    surface[index] = seen.any(0)
    rgb = np.zeros((len(centres), 3), np.float32)
    rgb[index] = mean
    shape = (resolution,) * 3
    return PhotoHull(occupied=occupied.reshape(shape), surface=surface.reshape(shape), colors=rgb.reshape(*shape, 3),
                     bbox=bbox, carved=hull - int(occupied.sum()))


def _observations(views: list[dict], images: np.ndarray, index: np.ndarray, size: float):
    """For the voxels ``index``: which views see them ``[C, M]``, their colour in each
    view ``[C, M, 3]`` and the mean over the views that see them ``[M, 3]``."""
    h, w = images.shape[1:3]
    seen = np.stack([_visible(view, index, h, w, size) for view in views]).reshape(len(views), len(index))
    colors = np.stack([_sample_image(images[k], view["u"][index], view["v"][index]) for k, view in enumerate(views)])
    mean = (colors * seen[..., None]).sum(0) / np.maximum(seen.sum(0), 1)[:, None]
    return seen, colors.reshape(len(views), len(index), 3), mean


def _visible(view: dict, index: np.ndarray, h: int, w: int, size: float) -> np.ndarray:
    """Which voxels ``index`` a view sees: its depth buffer holds, per pixel, the nearest
    occupied voxel whose footprint (a square of ``radius`` pixels) covers the pixel."""
    depth, pixel, radius = view["depth"][index], view["pixel"][index], view["radius"][index]
    row, col = pixel // w, pixel % w
    buffer = np.full(h * w, np.inf)
    for r in np.unique(radius):
        sel = radius == r
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                y, x = row[sel] + dy, col[sel] + dx
                ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
                np.minimum.at(buffer, (y * w + x)[ok], depth[sel][ok])
    return depth <= buffer[pixel] + size
