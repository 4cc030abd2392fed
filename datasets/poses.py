"""Camera-pose conventions, checks and scene bounds shared by the loaders.

sparsefield cameras are OpenGL: camera-to-world columns are [right, up, back] and the
camera looks down its -Z axis. OpenCV poses (COLMAP, DTU / IDR: x right, y down, z
forward) and LLFF poses ([down, right, back]) are converted here, together with COLMAP
quaternions, the decomposition ``P = K [R | t]`` of a projection matrix (no OpenCV
needed), rigidity checks, and the near / far / box bounds derived from cameras for
formats that carry none.
"""

from __future__ import annotations

import numpy as np

from ..cameras import Cameras
from .scene import DatasetError

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


class CameraModelWarning(UserWarning):
    """A camera parameter that the pinhole `Cameras` cannot represent (lens distortion,
    skew) was ignored while loading."""
