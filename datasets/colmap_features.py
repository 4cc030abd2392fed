"""pycolmap plumbing shared by structure from motion (`sfm`) and triangulation with known
poses (`triangulation`): COLMAP's log kept to errors, pycolmap calls whose exceptions
become one-line `DatasetError`s, images written as COLMAP reads them, SIFT options,
keypoints read back from a database; and for known cameras, their intrinsics written into
the database, matching guided by their epipolar geometry, a model at their poses, and
the points read back out of it.

Pixel convention: COLMAP puts the centre of the top-left pixel at ``(0.5, 0.5)``, x right
and y down, as sparsefield does (`cameras`), so keypoints need no conversion (a test
finds a blob centred on pixel ``(i, j)`` at ``(i + 0.5, j + 0.5)``). COLMAP's cameras use
OpenCV axes (y down, z forward) and store world-to-camera poses; `opencv_pose` converts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pycolmap
from PIL import Image

from ..cameras import Cameras
from .images import one_line
from .poses import opencv_to_opengl
from .scene import DatasetError


@contextlib.contextmanager
def quiet_colmap() -> Iterator[None]:
    """Keep COLMAP's glog to errors (it logs every image and every bundle adjustment)."""
    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = pycolmap.logging.ERROR.value
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = level


def run_colmap(source, step: str, fn: Callable, *args, **kwargs):
    """Call pycolmap; its exceptions become one-line `DatasetError`s naming ``source`` and
    the step."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # pycolmap raises RuntimeError, ValueError and its own types
        raise DatasetError(source, f"COLMAP {step} failed ({one_line(e)})") from None


def eight_bit(image: np.ndarray) -> np.ndarray:
    """A float RGB image in [0, 1] as COLMAP reads it: ``round(255 clip(rgb, 0, 1))``, uint8."""
    return np.round(255 * np.clip(image, 0.0, 1.0)).astype(np.uint8)


def write_pngs(images: np.ndarray, folder: Path) -> list[str]:
    """Write ``images [C, H, W, 3]`` (float, [0, 1]) as `eight_bit` PNGs ``view_000.png``,
    ... into the new ``folder``; returns their names."""
    folder.mkdir()
    names = [f"view_{k:03d}.png" for k in range(len(images))]
    for name, image in zip(names, images):
        Image.fromarray(eight_bit(image)).save(folder / name)
    return names


def extraction_options(
    max_image_size: int, num_threads: int, affine: bool = True, peak_threshold: float | None = None
) -> pycolmap.FeatureExtractionOptions:
    """SIFT options: photos downscaled to ``max_image_size`` (longer side, pixels);
    ``affine``: affine shape estimation, more matches across the wide baselines of a
    sparse capture (COLMAP's advice for sparse reconstructions); ``peak_threshold``: the
    difference-of-Gaussians contrast a feature needs (None: COLMAP's 0.02 / 3)."""
    options = pycolmap.FeatureExtractionOptions()
    options.max_image_size = max_image_size
    options.num_threads = num_threads
    options.sift.estimate_affine_shape = affine
    if peak_threshold is not None:
        options.sift.peak_threshold = peak_threshold
    return options


def read_keypoints(db: pycolmap.Database, image_id: int) -> pycolmap.FeatureKeypoints:
    """An image's keypoints from the database as the `FeatureKeypoints` the matchers take
    (the database returns ``[N, 6]`` rows ``x, y, a11, a12, a21, a22``)."""
    rows = np.asarray(db.read_keypoints(image_id), np.float64).reshape(-1, 6)
    names = ("x", "y", "a11", "a12", "a21", "a22")
    return pycolmap.FeatureKeypoints(
        [pycolmap.FeatureKeypoint(**dict(zip(names, map(float, row)))) for row in rows]
    )


def keypoint_counts(database: Path) -> list[int]:
    """Keypoints per image in the database, in image-id order."""
    with pycolmap.Database.open(database) as db:
        return [db.num_keypoints_for_image(im.image_id) for im in db.read_all_images()]


def pinhole_reader() -> pycolmap.ImageReaderOptions:
    """Reader options for images whose cameras are set afterwards (`set_known_cameras`)."""
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    return reader


def opencv_pose(cameras: Cameras, i: int) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera ``(R, t)`` of camera ``i`` in COLMAP's (OpenCV) axes:
    ``x_cam = R x_world + t``, ``R = (c2w R_gl diag(1, -1, -1))^T``, ``t = -R c``."""
    c2w = opencv_to_opengl(np.asarray(cameras.c2w[i], np.float64))
    rot = c2w[:, :3].T
    return rot, -rot @ c2w[:, 3]


def set_known_cameras(database: Path, index: dict[str, int], cameras: Cameras) -> dict:
    """Write each image's known pinhole ``(fx, fy, cx, cy)`` over its database camera.

    Args:
        index: image name -> index into ``cameras``.

    Returns:
        ``{image_id: (camera index, camera_id, R, t)}`` with the `opencv_pose`.
    """
    views = {}
    with pycolmap.Database.open(database) as db:
        for image in db.read_all_images():
            i = index[image.name]
            camera = db.read_camera(image.camera_id)
            camera.params = [float(np.asarray(getattr(cameras, k))[i]) for k in ("fx", "fy", "cx", "cy")]
            camera.has_prior_focal_length = True
            db.update_camera(camera)
            views[image.image_id] = (i, image.camera_id, *opencv_pose(cameras, i))
    return views


def known_geometry(
    cam_a: pycolmap.Camera, pose_a, cam_b: pycolmap.Camera, pose_b
) -> pycolmap.TwoViewGeometry:
    """The calibrated two-view geometry of two known cameras.

    For poses ``x_a = R_a x + t_a`` and ``x_b = R_b x + t_b``: ``R = R_b R_a^T``,
    ``t = t_b - R t_a``, ``E = [t]_x R`` and ``F = K_b^-T E K_a^-1`` (``x_b^T F x_a = 0``).
    """
    (rot_a, t_a), (rot_b, t_b) = pose_a, pose_b
    rot = rot_b @ rot_a.T
    t = t_b - rot @ t_a
    skew = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    k_a, k_b = (np.asarray(c.calibration_matrix(), np.float64) for c in (cam_a, cam_b))
    geometry = pycolmap.TwoViewGeometry()
    geometry.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
    geometry.E = skew @ rot
    geometry.F = np.linalg.inv(k_b).T @ skew @ rot @ np.linalg.inv(k_a)
    geometry.cam2_from_cam1 = pycolmap.Rigid3d(np.c_[rot, t])
    return geometry


def match_known_poses(
    database: Path, views: dict, epipolar_error: float, max_ratio: float, min_matches: int,
    num_threads: int,
) -> int:
    """Match every pair of images along their known epipolar lines; write the pairs with
    ``min_matches`` matches or more to the database as verified; return how many.

    COLMAP's guided matcher compares a feature only with those within ``epipolar_error``
    pixels (Sampson distance) of its epipolar line, then applies the ratio test
    (``max_ratio``) and the cross check among them.

    Args:
        views: `set_known_cameras`'s result.
    """
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = num_threads
    matching.sift.max_ratio = max_ratio
    matcher = pycolmap.FeatureMatcher.create(matching, pycolmap.Device.cpu)
    used = 0
    with pycolmap.Database.open(database) as db:
        ids = sorted(views)
        feats = {k: (read_keypoints(db, k), db.read_descriptors(k), db.read_camera(views[k][1])) for k in ids}
        for n, a in enumerate(ids):
            for b in ids[n + 1:]:
                geometry = known_geometry(feats[a][2], views[a][2:], feats[b][2], views[b][2:])
                matcher.match_guided(epipolar_error, *feats[a], *feats[b], geometry)
                if len(geometry.inlier_matches) >= min_matches:
                    db.write_two_view_geometry(a, b, geometry)
                    used += 1
    return used


def known_model(database: Path, views: dict) -> pycolmap.Reconstruction:
    """A reconstruction of the database's cameras, rigs, frames and images, each frame at
    its known pose (one image per frame) and registered, without points.

    Args:
        views: `set_known_cameras`'s result.
    """
    model = pycolmap.Reconstruction()
    with pycolmap.Database.open(database) as db:
        for camera in db.read_all_cameras():
            model.add_camera(camera)  # before the rigs, which refer to them
        for rig in db.read_all_rigs():
            model.add_rig(rig)
        frames = db.read_all_frames()
        for frame in frames:
            (data,) = frame.image_ids
            rot, t = views[data.id][2:]
            frame.rig_from_world = pycolmap.Rigid3d(np.c_[rot, t])
            model.add_frame(frame)
        for image in db.read_all_images():
            model.add_image(image)
    for frame in frames:
        model.register_frame(frame.frame_id)
    return model


def read_points(model: pycolmap.Reconstruction, views: dict):
    """A model's points and observations: ``(xyz [P, 3], obs_point [M], obs_view [M],
    obs_uv [M, 2])``, ``obs_view`` the camera index of `set_known_cameras`, ``obs_uv`` the
    keypoint (already in sparsefield's pixel convention)."""
    xyz, obs_point, obs_view, obs_uv = [], [], [], []
    for p, point in enumerate(model.points3D.values()):
        xyz.append(point.xyz)
        for element in point.track.elements:
            image = model.images[element.image_id]
            obs_point.append(p)
            obs_view.append(views[element.image_id][0])
            obs_uv.append(image.points2D[element.point2D_idx].xy)
    return (np.asarray(xyz, np.float64).reshape(-1, 3), np.asarray(obs_point, np.int64),
            np.asarray(obs_view, np.int64), np.asarray(obs_uv, np.float64).reshape(-1, 2))
