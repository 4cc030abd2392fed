"""Sparse 3D points from the training views of a few-shot run, whose poses are known.

Owns `triangulate`, its options `TriangulationConfig` and its result `SparsePoints`
(points, colours, track lengths, reprojection errors and every observation's pixel and
depth: what a depth loss at keypoints, DS-NeRF's idea, reads).

The pipeline: the views as 8-bit PNGs (composited on the scene background as they are) in
a temporary folder; SIFT into a COLMAP database whose cameras are the scene's own pinhole
intrinsics; for every pair of views, matching guided by the known epipolar geometry
(candidates within `TriangulationConfig.epipolar_error` of their epipolar line, then the
ratio test among them, which keeps the repeated textures a free ratio test loses); COLMAP's
point triangulator with poses and intrinsics held fixed (tracks, merging, bundle adjustment
of the points alone); then sparsefield's own checks, measured with
`cameras.project_points`. Keypoints need no conversion: COLMAP, like sparsefield, puts the
centre of pixel ``(i, j)`` at ``(i + 0.5, j + 0.5)`` (see `colmap_features`).

Results are cached under ``cache_root() / "triangulation"``, keyed by a hash of the views'
8-bit pixels, masks, cameras, the box and the options, so a second run costs a file read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pycolmap

from ..cache import cache_root
from ..cameras import Cameras, project_points
from .colmap_features import (
    eight_bit, extraction_options, keypoint_counts, known_model, match_known_poses, pinhole_reader,
    quiet_colmap, read_points, run_colmap, set_known_cameras, write_pngs,
)
from .scene import DatasetError, SceneData

CACHE_VERSION = "1"
"""Bump when the pipeline's output changes, so cached points are recomputed."""


@dataclasses.dataclass(frozen=True)
class TriangulationConfig:
    """Options of `triangulate`."""

    max_error: float = 2.0
    """Largest mean reprojection error a point may have, in pixels (COLMAP drops single
    observations beyond it too): ``mean_i ||pi(K_i, X) - x_i||``."""
    min_track: int = 2
    """Fewest views that must see a point (its track length)."""
    min_angle: float = 1.5
    """Smallest triangulation angle in degrees: the widest angle at the point between the
    rays of two cameras that see it (near-parallel rays fix no depth)."""
    epipolar_error: float = 1.0
    """Guided matching: a feature's candidates lie within this many pixels (Sampson
    distance) of its epipolar line ``F x``, ``F = K_b^-T [t]_x R K_a^-1`` from the poses."""
    max_ratio: float = 0.8
    """Lowe's ratio test among the candidates: best / second-best descriptor distance."""
    min_pair_matches: int = 8
    """Matches a pair of views needs to be used (few: the poses already verify them)."""
    max_image_size: int = 3200
    """Longer side in pixels that views are downscaled to for SIFT."""
    peak_threshold: float | None = None
    """SIFT's difference-of-Gaussians contrast threshold; None: COLMAP's 0.02 / 3."""
    affine_shape: bool = True
    """SIFT with affine shape estimation (more matches across wide baselines)."""
    use_masks: bool = True
    """Drop points outside the visual hull: a point must project inside the alpha mask
    (dilated by one pixel) of every view with a mask whose frame it falls in."""
    inside_box: bool = True
    """Drop points outside the scene box (``outer_bbox`` where the scene has one)."""
    min_points: int = 10
    """Fewer surviving points than this: the result is empty and the caller falls back."""
    threads: int | None = None
    """CPU threads for feature extraction, matching and triangulation (None: all)."""

    @property
    def colmap_threads(self) -> int:
        """``threads`` as COLMAP spells it (-1: all)."""
        return -1 if self.threads is None else self.threads
    seed: int = 0
    """Seed of COLMAP's random choices."""
    cache: bool = True
    """Read and write results under ``cache_root() / "triangulation"``."""

    def __post_init__(self):
        if not (self.max_error > 0 and self.epipolar_error > 0 and 0 < self.max_ratio <= 1):
            raise ValueError("max_error and epipolar_error must be > 0, max_ratio in (0, 1]")
        if self.min_track < 2 or self.min_pair_matches < 1:
            raise ValueError("min_track must be >= 2 and min_pair_matches >= 1")


@dataclasses.dataclass(frozen=True)
class SparsePoints:
    """Triangulated points and their observations (numpy).

    Attributes:
        points: ``[P, 3]`` float32 world positions.
        colors: ``[P, 3]`` float32 RGB in [0, 1], the mean of the observed pixels.
        track: ``[P]`` int64 number of views that see each point.
        error: ``[P]`` float32 mean reprojection error in pixels.
        obs_point: ``[M]`` int64 index into ``points`` of each observation.
        obs_view: ``[M]`` int64 index into the ``ids`` given to `triangulate`.
        obs_uv: ``[M, 2]`` float32 observed pixel ``(u, v)`` (column, row; centres at +0.5).
        obs_depth: ``[M]`` float32 the point's view depth in that camera, the distance
            along its -Z axis: ``z = -(R^T (X - c))_z`` with ``R``, ``c`` the camera-to-world
            rotation and centre.
        num_views: how many views were given.
    """

    points: np.ndarray
    colors: np.ndarray
    track: np.ndarray
    error: np.ndarray
    obs_point: np.ndarray
    obs_view: np.ndarray
    obs_uv: np.ndarray
    obs_depth: np.ndarray
    num_views: int

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def empty(cls, num_views: int) -> "SparsePoints":
        f, i = np.float32, np.int64
        return cls(np.zeros((0, 3), f), np.zeros((0, 3), f), np.zeros(0, i), np.zeros(0, f),
                   np.zeros(0, i), np.zeros(0, i), np.zeros((0, 2), f), np.zeros(0, f), num_views)

    def keypoints(self, view: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The keypoints of one view (an index into ``ids``): pixels ``[K, 2]`` ``(u, v)``,
        depths ``[K]`` (along -Z) and the index ``[K]`` of their point."""
        sel = self.obs_view == view
        return self.obs_uv[sel], self.obs_depth[sel], self.obs_point[sel]


def triangulate(
    scene: SceneData, ids, options: TriangulationConfig = TriangulationConfig(),
    echo: Callable[[str], None] = print,
) -> SparsePoints:
    """Match SIFT features across the training views and triangulate them with the known poses.

    Points pass when their mean reprojection error ``mean_i ||pi(K_i, X) - x_i||`` is below
    ``max_error``, at least ``min_track`` views see them, their triangulation angle
    ``max_ij angle(X - c_i, X - c_j)`` reaches ``min_angle``, they lie in front of every
    camera that sees them (cheirality, depth > 0), inside the box and inside the visual
    hull (see `TriangulationConfig`). Prints one line: how many points, or why none.

    Args:
        scene: the scene; its images, masks and cameras of ``ids`` are used.
        ids: ``[V]`` distinct indices into ``scene.images`` of the training views.
        options: the options.
        echo: receives the one line.

    Returns:
        `SparsePoints`, empty when fewer than ``options.min_points`` survive or COLMAP fails
        (the caller falls back to training without them).
    """
    ids = _check_ids(ids, len(scene.images))
    if len(ids) < 2:
        echo("triangulation: no points (it needs 2 views or more)")
        return SparsePoints.empty(len(ids))
    path = cache_root() / "triangulation" / f"{cache_key(scene, ids, options)}.npz" if options.cache else None
    cached = _load(path) if path is not None and path.is_file() else None
    if cached is not None:
        echo(f"{cached[1]} (cached)")
        return cached[0]
    try:
        points, line = _triangulate(scene, ids, options)
    except DatasetError as e:  # COLMAP failed: one line, and the caller falls back
        echo(f"triangulation: no points ({e.problem})")
        return SparsePoints.empty(len(ids))
    if path is not None:
        _save(path, points, line)
    echo(line)
    return points


def _check_ids(ids, count: int) -> np.ndarray:
    ids = np.asarray(ids).reshape(-1)
    valid = ids.dtype.kind in "iu" and np.all((ids >= 0) & (ids < count))
    if not valid or len(set(ids.tolist())) != len(ids):
        raise ValueError(f"ids must be distinct indices in 0..{count - 1}, got {ids.tolist()}")
    return ids.astype(np.int64)


def _triangulate(scene: SceneData, ids: np.ndarray, options: TriangulationConfig) -> tuple[SparsePoints, str]:
    """COLMAP's points, measured and filtered here; returns them and the line to print."""
    with tempfile.TemporaryDirectory(prefix="sparsefield-triangulation-") as tmp:
        raw, facts = _colmap_points(scene, ids, Path(tmp), options)
    head = f"{len(ids)} views ({scene.cameras.width}x{scene.cameras.height}; {facts})"
    if raw is None:
        return SparsePoints.empty(len(ids)), f"triangulation: no points from {head}"
    cameras, xyz = scene.cameras[ids], raw[0]
    obs = _one_observation_per_view(xyz, *raw[1:], cameras)
    masks = scene.masks[ids] if options.use_masks and scene.masks is not None else None
    box = scene.outer_bbox if scene.outer_bbox is not None else scene.bbox
    keep, dropped = _filter(xyz, *obs, cameras, masks, box if options.inside_box else None, options)
    points = _gather(xyz, *obs, keep, scene.images[ids], cameras)
    reasons = ", ".join(f"{n} {why}" for why, n in dropped.items() if n)
    lost = f"dropped {sum(dropped.values())} of {len(xyz)}" + (f": {reasons}" if reasons else "")
    if len(points) < options.min_points:
        line = f"triangulation: too few points from {head}: {len(points)} < {options.min_points} ({lost})"
        return SparsePoints.empty(len(ids)), line
    line = (f"triangulation: {len(points)} points from {head}; mean track {points.track.mean():.1f} "
            f"views, mean error {points.error.mean():.2f} px ({lost})")
    return points, line


def _colmap_points(scene: SceneData, ids: np.ndarray, tmp: Path, options: TriangulationConfig):
    """COLMAP's part, in ``tmp``: ``((xyz [P, 3], obs_point, obs_view, obs_uv), facts)``
    with ``obs_view`` indexing ``ids``, or ``(None, facts)`` when no pair of views shares
    ``min_pair_matches`` matches; ``facts`` counts the features and matched pairs."""
    names = write_pngs(scene.images[ids], tmp / "images")
    database, root = tmp / "database.db", scene.root
    pycolmap.set_random_seed(options.seed)
    with quiet_colmap():
        run_colmap(
            root, "feature extraction", pycolmap.extract_features,
            database, tmp / "images", image_names=names, camera_mode=pycolmap.CameraMode.PER_IMAGE,
            reader_options=pinhole_reader(), device=pycolmap.Device.cpu,
            extraction_options=extraction_options(
                options.max_image_size, options.colmap_threads, options.affine_shape, options.peak_threshold),
        )
        index = {name: k for k, name in enumerate(names)}
        views = run_colmap(root, "camera set-up", set_known_cameras, database, index, scene.cameras[ids])
        features = sum(run_colmap(root, "database read", keypoint_counts, database))
        pairs = run_colmap(
            root, "guided matching", match_known_poses, database, views,
            options.epipolar_error, options.max_ratio, options.min_pair_matches, options.colmap_threads,
        )
        if pairs == 0:
            return None, (f"{features:,} SIFT features; no pair of views shares "
                          f"{options.min_pair_matches} matches along the epipolar lines")
        known = run_colmap(root, "model set-up", known_model, database, views)
        (tmp / "model").mkdir()
        model = run_colmap(
            root, "triangulation", pycolmap.triangulate_points,
            known, database, tmp / "images", tmp / "model", options=_triangulator_options(options),
        )
        raw = run_colmap(root, "model read", read_points, model, views)
    return raw, f"{features:,} SIFT features, {pairs} of {len(ids) * (len(ids) - 1) // 2} view pairs matched"


def _triangulator_options(options: TriangulationConfig) -> pycolmap.IncrementalPipelineOptions:
    """COLMAP's point triangulator, keeping two-view tracks (few views have little else)."""
    pipeline = pycolmap.IncrementalPipelineOptions()
    pipeline.num_threads = options.colmap_threads
    pipeline.random_seed = options.seed
    pipeline.min_num_matches = options.min_pair_matches
    pipeline.extract_colors = False
    pipeline.triangulation.ignore_two_view_tracks = options.min_track > 2
    pipeline.triangulation.min_angle = options.min_angle
    pipeline.mapper.filter_min_tri_angle = options.min_angle
    pipeline.mapper.filter_max_reproj_error = options.max_error
    return pipeline


def _project(xyz, obs_point, obs_view, cameras: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """Each observation's projected pixel ``[M, 2]`` and view depth ``[M]`` (`project_points`)."""
    uv, depth = np.zeros((len(obs_point), 2)), np.zeros(len(obs_point))
    for k in np.unique(obs_view):
        sel = obs_view == k
        u, v, depth[sel] = project_points(xyz[obs_point[sel]], cameras, int(k))
        uv[sel] = np.stack([u, v], -1)
    return uv, depth


def _one_observation_per_view(xyz, obs_point, obs_view, obs_uv, cameras: Cameras):
    """``(obs_point, obs_view, obs_uv)`` sorted by point then view, keeping per point and
    view the observation nearest the point's projection (a merged COLMAP track may hold
    two features of one image), so a track's length counts views."""
    residual = np.linalg.norm(_project(xyz, obs_point, obs_view, cameras)[0] - obs_uv, axis=-1)
    order = np.lexsort((residual, obs_view, obs_point))
    first = np.ones(len(order), bool)
    first[1:] = (np.diff(obs_point[order]) != 0) | (np.diff(obs_view[order]) != 0)
    keep = order[first]
    return obs_point[keep], obs_view[keep], obs_uv[keep]


def _filter(xyz, obs_point, obs_view, obs_uv, cameras: Cameras, masks, box, options: TriangulationConfig):
    """``(keep [P], {reason: points dropped for it})``; each point counts under its first
    failed check: behind a camera (depth <= 0), error, track, angle, box, hull."""
    count, everywhere = len(xyz), np.ones(len(xyz), bool)
    uv, depth = _project(xyz, obs_point, obs_view, cameras)
    track = np.bincount(obs_point, minlength=count)
    residual = np.linalg.norm(uv - obs_uv, axis=-1)
    error = np.bincount(obs_point, residual, minlength=count) / np.maximum(track, 1)
    checks = {
        "behind a camera": np.bincount(obs_point, depth <= 0, minlength=count) == 0,
        "over the error": error < options.max_error,
        "short track": track >= options.min_track,
        "narrow angle": _triangulation_angle(xyz, obs_point, obs_view, cameras) >= options.min_angle,
        "outside the box": everywhere if box is None else np.all((xyz >= box[0]) & (xyz <= box[1]), -1),
        "outside the visual hull": everywhere if masks is None else _inside_hull(xyz, cameras, masks),
    }
    keep, dropped = np.ones(count, bool), {}
    for reason, passed in checks.items():
        dropped[reason] = int(np.sum(keep & ~passed))
        keep &= passed
    return keep, dropped


def _triangulation_angle(xyz, obs_point, obs_view, cameras: Cameras) -> np.ndarray:
    """``[P]`` degrees: ``max_ij acos(d_i . d_j)`` over the views ``i, j`` that see a point,
    ``d_i = (X - c_i) / |X - c_i|`` (0 for a point seen once)."""
    seen = np.zeros((len(xyz), len(cameras)), bool)
    seen[obs_point, obs_view] = True
    rays = xyz[None] - np.asarray(cameras.centers, np.float64)[:, None]  # [V, P, 3]
    rays /= np.maximum(np.linalg.norm(rays, axis=-1, keepdims=True), 1e-12)
    best = np.zeros(len(xyz))
    for a in range(len(cameras)):
        for b in range(a + 1, len(cameras)):
            cosine = np.clip(np.sum(rays[a] * rays[b], -1), -1.0, 1.0)
            both = seen[:, a] & seen[:, b]
            best[both] = np.maximum(best[both], np.degrees(np.arccos(cosine[both])))
    return best


def _inside_hull(xyz, cameras: Cameras, masks: np.ndarray) -> np.ndarray:
    """``[P]``: the point projects on the mask (alpha > 0.5, dilated by one pixel) of every
    view in whose frame it falls in front of the camera; other views cannot tell."""
    inside = np.ones(len(xyz), bool)
    height, width = masks.shape[1:]
    for k in range(len(cameras)):
        u, v, depth = project_points(xyz, cameras, k)
        col, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        framed = (depth > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        solid = _dilate(masks[k] > 0.5)
        inside[framed] &= solid[row[framed], col[framed]]
    return inside


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Binary dilation by the 3x3 square: true where any of the 9 neighbours is."""
    padded = np.pad(mask, 1)
    height, width = mask.shape
    return np.any([padded[i:i + height, j:j + width] for i in range(3) for j in range(3)], axis=0)


def _gather(xyz, obs_point, obs_view, obs_uv, keep, images: np.ndarray, cameras: Cameras) -> SparsePoints:
    """The kept points and their observations, points renumbered; colours are the mean of
    the observed pixels ``images[view, floor(v), floor(u)]``."""
    renumber = np.cumsum(keep) - 1
    sel = keep[obs_point]
    obs_point, obs_view, obs_uv = renumber[obs_point[sel]], obs_view[sel], obs_uv[sel]
    xyz = xyz[keep]
    uv, depth = _project(xyz, obs_point, obs_view, cameras)
    track = np.bincount(obs_point, minlength=len(xyz))
    residual = np.linalg.norm(uv - obs_uv, axis=-1)
    height, width = images.shape[1:3]
    col = np.clip(np.floor(obs_uv[:, 0]).astype(np.int64), 0, width - 1)
    row = np.clip(np.floor(obs_uv[:, 1]).astype(np.int64), 0, height - 1)
    colors = np.stack([np.bincount(obs_point, images[obs_view, row, col, c], len(xyz)) for c in range(3)], -1)
    return SparsePoints(
        points=xyz.astype(np.float32), colors=(colors / track[:, None]).astype(np.float32), track=track,
        error=(np.bincount(obs_point, residual, len(xyz)) / track).astype(np.float32),
        obs_point=obs_point, obs_view=obs_view, obs_uv=obs_uv.astype(np.float32),
        obs_depth=depth.astype(np.float32), num_views=len(cameras),
    )


def cache_key(scene: SceneData, ids: np.ndarray, options: TriangulationConfig) -> str:
    """Hash of what the result depends on: the views' 8-bit pixels, their masks (when
    used), cameras, the box, the options (threads and caching aside) and the versions."""
    digest = hashlib.sha256()
    fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    fields.pop("cache"), fields.pop("threads")
    digest.update(repr((CACHE_VERSION, pycolmap.__version__, sorted(fields.items()))).encode())
    cameras = scene.cameras[ids]
    box = scene.outer_bbox if scene.outer_bbox is not None else scene.bbox
    for array in (cameras.c2w, cameras.fx, cameras.fy, cameras.cx, cameras.cy, box):
        digest.update(np.ascontiguousarray(array, np.float64).tobytes())
    digest.update(repr((cameras.width, cameras.height)).encode())
    for i in ids:
        digest.update(eight_bit(scene.images[i]).tobytes())
        if options.use_masks and scene.masks is not None:
            digest.update(np.packbits(scene.masks[i] > 0.5).tobytes())
    return digest.hexdigest()[:32]


def _save(path: Path, points: SparsePoints, line: str) -> None:
    """Write the cache file atomically (a temporary sibling renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, line=np.str_(line), **dataclasses.asdict(points))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path) -> tuple[SparsePoints, str] | None:
    """A cache file's points and line, or None when it cannot be read (then recomputed)."""
    try:
        with np.load(path) as data:
            arrays = {f.name: data[f.name] for f in dataclasses.fields(SparsePoints)}
            line = str(data["line"])
    except (OSError, ValueError, KeyError):
        return None
    arrays["num_views"] = int(arrays["num_views"])
    return SparsePoints(**arrays), line
