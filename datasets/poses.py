"""Camera-pose conventions, checks and scene bounds shared by the loaders.

sparsefield cameras are OpenGL: camera-to-world columns are [right, up, back] and the
camera looks down its -Z axis. OpenCV poses (COLMAP, DTU / IDR: x right, y down, z
forward) and LLFF poses ([down, right, back]) are converted here, together with COLMAP
quaternions, the decomposition ``P = K [R | t]`` of a projection matrix (no OpenCV
needed), rigidity checks, and the near / far / box bounds derived from cameras and
sparse points for formats that carry none. Captures in an arbitrary world frame (COLMAP,
nerfstudio) are levelled, centred and scaled here (`scene_frame`) before an axis-aligned
box is fitted, and `with_box` replaces a loader's box with one the user gives.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..cameras import Cameras
from .scene import DatasetError, SceneData, real_array

ROTATION_TOL = 1e-3
"""Largest ``|R^T R - I|`` entry and ``|det R - 1|`` a rotation may show."""


def check_rotation(rot: np.ndarray, path, what: str) -> None:
    """Raise `DatasetError` unless ``rot`` ``[3, 3]`` is a proper rotation (within tolerance)."""
    rot = np.asarray(rot, np.float64)
    orth_err = float(np.max(np.abs(rot.T @ rot - np.eye(3))))
    det = float(np.linalg.det(rot))
    if not (orth_err <= ROTATION_TOL and abs(det - 1.0) <= ROTATION_TOL):
        raise DatasetError(
            path,
            f"{what}: rotation is not rigid (max |R^T R - I| = {orth_err:.3g}, det R = {det:.4g})",
        )


def opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """Flip a camera-to-world matrix ``[..., 3, 4]`` between OpenCV and OpenGL axes.

    OpenCV's camera y (down) and z (forward) are OpenGL's -y and -z, so the second and third
    columns change sign; the map is its own inverse.
    """
    out = np.array(c2w, np.float64)
    out[..., :3, 1:3] *= -1.0
    return out


def llff_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """LLFF ``[..., 3, 4]`` columns [down, right, back, t] -> OpenGL [right, up, back, t].

    As NeRF's ``load_llff_data``: ``[R1, -R0, R2, t]``.
    """
    c2w = np.asarray(c2w, np.float64)
    return np.stack([c2w[..., 1], -c2w[..., 0], c2w[..., 2], c2w[..., 3]], axis=-1)


def opengl_to_llff(c2w: np.ndarray) -> np.ndarray:
    """Inverse of `llff_to_opengl`: OpenGL [right, up, back, t] -> LLFF [down, right, back, t]."""
    c2w = np.asarray(c2w, np.float64)
    return np.stack([-c2w[..., 1], c2w[..., 0], c2w[..., 2], c2w[..., 3]], axis=-1)


def quaternion_to_rotation(q) -> np.ndarray:
    """``[3, 3]`` rotation of the unit quaternion ``q = (w, x, y, z)`` (COLMAP's order)."""
    w, x, y, z = np.asarray(q, np.float64)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotation_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` with ``w >= 0`` of a rotation ``[3, 3]``.

    Solves from the largest of ``4 w^2 = 1 + tr R`` and ``4 x^2 = 1 + 2 R_xx - tr R`` (etc.),
    which keeps the division well conditioned for every angle.
    """
    r = np.asarray(rot, np.float64)
    trace = np.trace(r)
    squares = np.array(
        [1 + trace, 1 + 2 * r[0, 0] - trace, 1 + 2 * r[1, 1] - trace, 1 + 2 * r[2, 2] - trace]
    )
    k = int(np.argmax(squares))
    s = 2.0 * np.sqrt(squares[k])  # = 4 |q_k|
    skew = (r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1])  # 4 w (x, y, z)
    sym = {(1, 2): r[0, 1] + r[1, 0], (1, 3): r[0, 2] + r[2, 0], (2, 3): r[1, 2] + r[2, 1]}
    q = np.empty(4)
    q[k] = s / 4.0
    for j in range(4):
        if j != k:
            a, b = min(j, k), max(j, k)
            q[j] = (skew[b - 1] if a == 0 else sym[(a, b)]) / s
    return q if q[0] >= 0 else -q


def world_to_camera_to_c2w(rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``[3, 4]`` camera-to-world ``[R^T | -R^T t]`` of the world-to-camera ``x_c = R x + t``."""
    rot = np.asarray(rot, np.float64)
    return np.concatenate([rot.T, (-rot.T @ np.asarray(t, np.float64))[:, None]], axis=1)


def decompose_projection(proj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a projection ``P = s K [R | t]`` (``[3, 4]``, any scale ``s != 0``).

    ``P[:, :3] = K R`` by an RQ decomposition (QR of the row-reversed transpose), signs
    fixed so that ``K`` has a positive diagonal and ``R`` is proper (``P`` is negated first
    when ``det P[:, :3] < 0``); ``K`` is normalised to ``K[2, 2] = 1``. The camera centre
    is ``C = -P[:, :3]^{-1} P[:, 3]``. Same result as OpenCV's
    ``decomposeProjectionMatrix`` as used by IDR's ``load_K_Rt_from_P``.

    Returns:
        ``K`` ``[3, 3]`` and the OpenCV camera-to-world ``[R^T | C]`` ``[3, 4]``.
    """
    proj = np.asarray(proj, np.float64)
    if np.linalg.det(proj[:, :3]) < 0:
        proj = -proj
    m = proj[:, :3]
    flip = np.eye(3)[::-1]
    q, r = np.linalg.qr((flip @ m).T)
    k, rot = flip @ r.T @ flip, flip @ q.T
    signs = np.diag(np.sign(np.diag(k)))
    k, rot = k @ signs, signs @ rot
    center = -np.linalg.solve(m, proj[:, 3])
    return k / k[2, 2], np.concatenate([rot.T, center[:, None]], axis=1)


def pinhole_cameras(c2w, fx, fy, cx, cy, width: int, height: int) -> Cameras:
    """float32 numpy `Cameras` from per-camera ``[C, 3, 4]`` OpenGL poses and intrinsics.

    Values beyond float32's range become inf without a warning: the loaders report them
    as bad input (`check_scene`).
    """
    with np.errstate(over="ignore"):
        c2w = np.asarray(c2w, np.float32)[..., :3, :4]
        ones = np.ones(len(c2w), np.float32)
        return Cameras(
            c2w=c2w,
            fx=(np.asarray(fx, np.float32) * ones),
            fy=(np.asarray(fy, np.float32) * ones),
            cx=(np.asarray(cx, np.float32) * ones),
            cy=(np.asarray(cy, np.float32) * ones),
            width=int(width),
            height=int(height),
        )


def camera_box(centers: np.ndarray) -> np.ndarray:
    """``[2, 3]`` cube around the camera centres: their mean +- the largest coordinate offset.

    nerfstudio's default scene box in the original units (it centres the poses, scales
    the largest absolute coordinate to 1 and uses ``[-1, 1]^3``): the cameras sit on its
    boundary, the captured content inside.
    """
    centers = np.asarray(centers, np.float64)
    mid = centers.mean(0)
    half = float(np.max(np.abs(centers - mid))) or 1.0
    return np.stack([mid - half, mid + half]).astype(np.float32)


def box_bounds(centers: np.ndarray, bbox: np.ndarray) -> tuple[float, float]:
    """``near``, ``far`` that cover ``bbox`` from every camera centre.

    ``far`` is the largest camera-to-corner distance; ``near`` the smallest
    camera-to-box distance, at least 1% of the box diagonal (cameras inside the box).
    """
    centers = np.asarray(centers, np.float64)
    lo, hi = np.asarray(bbox, np.float64)
    corners = np.stack(np.meshgrid(*zip(lo, hi), indexing="ij"), -1).reshape(-1, 3)
    far = float(np.linalg.norm(centers[:, None] - corners[None], axis=-1).max())
    gap = np.linalg.norm(np.maximum(np.maximum(lo - centers, centers - hi), 0.0), axis=-1)
    near = max(float(gap.min()), 0.01 * float(np.linalg.norm(hi - lo)))
    return near, max(far, 2.0 * near)


def frustum_box(cameras: Cameras, near: float, far: float) -> np.ndarray:
    """``[2, 3]`` axis-aligned box of every camera's view frustum between depths near and far.

    The image corners are cast to camera-space depths ``z = -near`` and ``z = -far``.
    """
    w, h = cameras.width, cameras.height
    u = np.array([0.0, w, 0.0, w])
    v = np.array([0.0, 0.0, h, h])
    points = []
    for k in range(len(cameras)):
        c2w = np.asarray(cameras.c2w[k], np.float64)
        x = (u - float(cameras.cx[k])) / float(cameras.fx[k])
        y = -(v - float(cameras.cy[k])) / float(cameras.fy[k])
        rays = np.stack([x, y, -np.ones(4)], -1)
        for depth in (near, far):
            points.append(depth * rays @ c2w[:, :3].T + c2w[:, 3])
    points = np.concatenate(points)
    return np.stack([points.min(0), points.max(0)]).astype(np.float32)


def points_box(points: np.ndarray) -> np.ndarray | None:
    """``[2, 3]`` box of sparse points (SfM's ``points3D``, nerfstudio's ``ply_file_path``):
    the 0.5-99.5 percentile box of the `inlier_points`, padded by 5% per side (at least 1%
    of its longest side, so a planar capture keeps some depth); None without points or
    when they all coincide.

    The stray points every SfM model has are dropped twice: far ones by `inlier_points`
    (a percentile alone keeps them when they are more than 1% of the points: 24 photos of
    the demo scene gave 19 of 943, and a box 1.5 to 2.4 times too large), the rest by the
    percentiles; the pad gives back the surface that the dropped extreme points sat on.
    """
    if points is None or len(points) == 0:
        return None
    lo, hi = np.percentile(inlier_points(points), [0.5, 99.5], axis=0)
    if not np.max(hi - lo) > 0:
        return None
    pad = np.maximum(0.05 * (hi - lo), 0.01 * np.max(hi - lo))
    return np.stack([lo - pad, hi + pad]).astype(np.float32)


def inlier_points(points: np.ndarray, spread: float = 2.0) -> np.ndarray:
    """The points ``[P, 3]`` within ``spread`` times the 90th-percentile distance of
    their median point: the scene, without the matches that landed far from it."""
    points = np.asarray(points, np.float64)
    distance = np.linalg.norm(points - np.median(points, axis=0), axis=-1)
    keep = distance <= spread * np.percentile(distance, 90)
    return points[keep] if keep.any() else points


def fit_bounds(c2w: np.ndarray, points: np.ndarray | None) -> tuple[np.ndarray, float, float]:
    """``bbox``, ``near``, ``far`` of a capture from its cameras and sparse points.

    With points: `points_box`, and ``near`` / ``far`` 0.9x / 1.1x the 0.1 / 99.9
    percentile distance of the points in front of each camera. Without (or with none in
    front of any camera): `camera_box` and `box_bounds`.

    Args:
        c2w: ``[C, 3, 4]`` OpenGL camera-to-world; points: ``[P, 3]`` or None.
    """
    centers = np.asarray(c2w, np.float64)[:, :3, 3]
    bbox = points_box(points)
    if bbox is None:
        bbox = camera_box(centers)
        return (bbox, *box_bounds(centers, bbox))
    sample = np.asarray(points, np.float64)[:: max(1, len(points) // 100_000)]
    nears, fars = [], []
    for pose in np.asarray(c2w, np.float64):
        rel = sample - pose[:, 3]
        front = rel @ pose[:, 2] < 0  # OpenGL cameras look down -z
        if front.any():
            dist = np.linalg.norm(rel[front], axis=-1)
            nears.append(np.percentile(dist, 0.1))
            fars.append(np.percentile(dist, 99.9))
    if not nears:
        return (bbox, *box_bounds(centers, bbox))
    return bbox, 0.9 * float(min(nears)), 1.1 * float(max(fars))


def similarity_between(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``[4, 4]`` similarity ``s R x + t`` minimising ``sum |dst_i - (s R src_i + t)|^2``
    over ``[N, 3]`` corresponding points (Umeyama 1991; a rotation, never a reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    a, b = src - mu_src, dst - mu_dst
    u, sigma, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    scale = np.trace(np.diag(sigma) @ d) / max(np.mean(np.sum(a**2, axis=1)), 1e-300)
    out = np.eye(4)
    out[:3, :3] = scale * u @ d @ vt
    out[:3, 3] = mu_dst - out[:3, :3] @ mu_src
    return out


def with_box(scene: SceneData, bbox, source="--bbox") -> SceneData:
    """``scene`` with the box ``bbox`` (6 numbers ``xmin ymin zmin xmax ymax zmax`` or
    ``[2, 3]``, in the scene's coordinates) instead of its loader's, and ``near`` /
    ``far`` that cover it from every camera (`box_bounds`).

    Raises:
        DatasetError: ``bbox`` is not 6 finite numbers with each min below its max.
    """
    box = real_array(bbox, source, "the box (xmin ymin zmin xmax ymax zmax)")
    if box.size != 6:
        raise DatasetError(source, f"the box needs 6 numbers (xmin ymin zmin xmax ymax zmax), "
                           f"got {box.size}")
    box = box.reshape(2, 3)
    if not np.all(box[0] < box[1]):
        raise DatasetError(source, f"every min must be below its max, got {box.tolist()}")
    near, far = box_bounds(np.asarray(scene.cameras.c2w, np.float64)[:, :3, 3], box)
    return dataclasses.replace(scene, bbox=box.astype(np.float32), near=near, far=far)


LEVEL_GAIN = 0.8
"""`scene_frame` levels a capture when that shrinks its box to less than this share of
the volume it has in the file's own axes."""
NERF_DISTANCE = 4.0
"""Mean camera distance from the content's centre that `scene_frame` scales a capture to:
colmap2nerf's "NeRF sized" scale and the generator's rig radius, where the defaults are
tuned (the same 200 px photos at 10x the size train to 9.2 dB instead of 16.2 dB: densities
are per world unit)."""
SIZE_RANGE = (0.5, 2.0)
"""Mean camera distance over `NERF_DISTANCE` that `scene_frame` leaves unscaled."""


def rotation_between(a, b) -> np.ndarray:
    """``[3, 3]`` rotation by the smallest angle that turns direction ``a`` into ``b``
    (Rodrigues; half a turn about an axis perpendicular to ``a`` when they are opposite)."""
    a = np.asarray(a, np.float64) / np.linalg.norm(a)
    b = np.asarray(b, np.float64) / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1.0 + 1e-9:
        axis = np.cross(a, np.eye(3)[int(np.argmin(np.abs(a)))])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    k = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def level_transform(c2w: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
    """``[4, 4]`` rigid map from a capture's world to its levelled frame.

    As nerfstudio's dataparser (``auto_orient_and_center_poses``, method ``up``): +z is
    the cameras' mean up vector. Then the heading is the one whose axis-aligned box of the
    content (the points projected on the ground plane; the camera centres without points)
    has the least area, its longer side along x (`heading`), and the origin is the centre
    of the content's box. Every step is a function of the data alone, so the same capture
    in any frame levels to the same coordinates.

    Args:
        c2w: ``[C, 3, 4]`` OpenGL camera-to-world (column 1 is the camera's up).
        points: ``[P, 3]`` sparse points, or None.
    """
    c2w = np.asarray(c2w, np.float64)
    up = c2w[:, :3, 1].mean(0)
    rot = rotation_between(up, (0.0, 0.0, 1.0)) if np.linalg.norm(up) > 1e-6 else np.eye(3)
    usable = points is not None and len(points) >= 3
    cloud = (np.asarray(points, np.float64) if usable else c2w[:, :3, 3]) @ rot.T
    angle = heading(cloud[:, :2], 0.5 if usable else 0.0)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]) @ rot
    box = _content_box(points @ rot.T if usable else None, c2w[:, :3, 3] @ rot.T)
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, -box.mean(0).astype(np.float64)
    return out


def heading(xy: np.ndarray, percent: float) -> float:
    """Angle (radians) of the ground direction that becomes +x: the least-area box of the
    ``[N, 2]`` points (their ``percent``-``100 - percent`` percentile box), over whole
    degrees counted from their principal axis (signed towards its longer tail), with the
    box's longer side along x."""
    flat = xy - xy.mean(0)
    _, vectors = np.linalg.eigh(flat.T @ flat)
    major = vectors[:, -1]
    major = -major if np.sum((flat @ major) ** 3) < 0 else major
    sample = flat[:: max(1, len(flat) // 20_000)]
    angles = np.arctan2(major[1], major[0]) + np.radians(np.arange(90.0))
    sides = []
    for a in angles:
        turned = sample @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        sides.append(np.diff(np.percentile(turned, [percent, 100 - percent], axis=0), axis=0)[0])
    best = int(np.argmin([x * y for x, y in sides]))
    return float(angles[best] + (np.pi / 2 if sides[best][1] > sides[best][0] else 0.0))


def scene_frame(c2w: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
    """``[4, 4]`` similarity into the scene's frame: the identity when the file's frame
    already fits, else `level_transform` scaled to a mean camera distance of
    `NERF_DISTANCE` from the content's centre.

    A frame fits when levelling would shrink the scene box by less than `LEVEL_GAIN` and
    the cameras sit within `SIZE_RANGE` of `NERF_DISTANCE`: a levelled or synthetic capture
    keeps its coordinates (its poses stay exactly as written), while a model in an
    arbitrary world frame (raw COLMAP output, a rotated or metric export) is levelled,
    centred and brought to the size the defaults are tuned for.
    """
    c2w = np.asarray(c2w, np.float64)
    with np.errstate(over="ignore"):
        if not np.all(np.abs(c2w) < 1e30):  # left as is: `check_scene` names the camera
            return np.eye(4)
    level = level_transform(c2w, points)
    before = _content_box(points, c2w[:, :3, 3])
    moved = None if points is None else transform_points(level, points)
    centers = transform_points(level, c2w[:, :3, 3])
    after = _content_box(moved, centers)
    gain = np.prod(np.diff(after, axis=0)) / max(np.prod(np.diff(before, axis=0)), 1e-300)
    distance = float(np.mean(np.linalg.norm(centers, axis=-1)))  # the content is centred
    size = distance / NERF_DISTANCE
    if gain >= LEVEL_GAIN and SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        return np.eye(4)
    return np.diag([1.0 / max(size, 1e-12)] * 3 + [1.0]) @ level


def _content_box(points, centers) -> np.ndarray:
    box = points_box(points)
    return np.asarray(camera_box(centers) if box is None else box, np.float64)


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``[P, 3]`` points mapped by a ``[4, 4]`` (similarity) transform."""
    transform = np.asarray(transform, np.float64)
    return np.asarray(points, np.float64) @ transform[:3, :3].T + transform[:3, 3]


def transform_poses(transform: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """``[C, 3, 4]`` camera-to-world matrices moved by a ``[4, 4]`` similarity ``s R x + t``:
    rotations become ``R R_c`` (still orthonormal), centres ``s R c + t``."""
    transform = np.asarray(transform, np.float64)
    c2w = np.asarray(c2w, np.float64)[..., :3, :4]
    scale = float(np.cbrt(np.linalg.det(transform[:3, :3])))
    out = np.empty_like(c2w)
    out[..., :3] = (transform[:3, :3] / scale) @ c2w[..., :3]
    out[..., 3] = transform_points(transform, c2w[..., 3])
    return out


class CameraModelWarning(UserWarning):
    """A camera parameter that the pinhole `Cameras` cannot represent (lens distortion,
    skew) was ignored while loading."""
