"""Cameras and Gaussians between sparsefield and viser.

viser's camera handle reports ``wxyz`` (the rotation camera -> world as a unit quaternion)
and ``position`` in its world frame, with OpenCV camera axes (+X right, +Y down, +Z
forward), and ``fov`` as the vertical field of view. sparsefield's `Cameras` hold an
OpenGL camera-to-world matrix (+X right, +Y up, the camera looks down -Z). Both use the
same world frame, so a pose differs only by flipping the camera's Y and Z axes.

Gaussians go to the browser as viser draws them (`add_gaussian_splats`): centres,
covariances ``R S S^T R^T``, the degree-0 colour and the opacity of the live ones.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from viser import transforms as vtf

from ..cameras import Cameras
from ..fields.gaussians import SH_C0, activated
from ..renderers.splatting import covariance3d

FLIP_YZ = np.diag([1.0, -1.0, -1.0])
"""Camera axes OpenCV <-> OpenGL (x right; y down <-> up; z forward <-> back); its own
inverse."""

GAUSSIAN_KEYS = ("means", "log_scales", "quats", "logit_opacities", "sh_dc")
"""The parameters that make a state's ``params`` a set of 3D Gaussians the browser can
draw (with ``alive`` beside ``params``)."""


def c2w_from_viser(wxyz, position) -> np.ndarray:
    """``[3, 4]`` OpenGL camera-to-world matrix of a viser camera pose.

    ``R_gl = R_cv diag(1, -1, -1)``, ``t = position``.
    """
    rot = vtf.SO3(np.asarray(wxyz, np.float64)).as_matrix() @ FLIP_YZ
    return np.concatenate([rot, np.asarray(position, np.float64).reshape(3, 1)], axis=1)


def viser_from_c2w(c2w) -> tuple[np.ndarray, np.ndarray]:
    """``(wxyz [4], position [3])`` of an OpenGL camera-to-world matrix ``[3, 4]``; the
    inverse of `c2w_from_viser` (up to the quaternion's sign)."""
    c2w = np.asarray(c2w, np.float64)
    return vtf.SO3.from_matrix(c2w[:3, :3] @ FLIP_YZ).wxyz, c2w[:3, 3].copy()


def focal_from_fov(fov: float, size: float) -> float:
    """Focal length in pixels of a field of view ``fov`` (radians) across ``size`` pixels:
    ``f = size / (2 tan(fov / 2))``."""
    return 0.5 * size / math.tan(0.5 * fov)


def fov_from_focal(focal: float, size: float) -> float:
    """Field of view in radians across ``size`` pixels: ``2 atan(size / (2 f))``."""
    return 2.0 * math.atan(0.5 * size / focal)


def image_size(aspect: float, long_side: int) -> tuple[int, int]:
    """``(width, height)`` with the longer side ``long_side`` and ``width / height``
    close to ``aspect`` (each at least 1 pixel)."""
    if aspect >= 1.0:
        return long_side, max(1, round(long_side / aspect))
    return max(1, round(long_side * aspect)), long_side


def viser_camera(wxyz, position, fov: float, width: int, height: int) -> Cameras:
    """One sparsefield camera seeing what a viser camera sees, at ``width x height``:
    square pixels, ``fy`` from the vertical ``fov``, principal point at the centre."""
    focal = focal_from_fov(fov, height)
    scalar = lambda v: np.float32(v)  # noqa: E731
    return Cameras(c2w=c2w_from_viser(wxyz, position).astype(np.float32), fx=scalar(focal), fy=scalar(focal),
                   cx=scalar(0.5 * width), cy=scalar(0.5 * height), width=int(width), height=int(height))


def vertical_fov(camera: Cameras) -> float:
    """The vertical field of view of one camera (viser's frustums and camera take it)."""
    return fov_from_focal(float(camera.fy), camera.height)


def has_gaussians(state: dict) -> bool:
    """Whether a method's state holds 3D Gaussians (`GAUSSIAN_KEYS` in ``params`` and an
    ``alive`` mask), whatever the method is called."""
    params = state.get("params")
    return isinstance(params, dict) and "alive" in state and all(k in params for k in GAUSSIAN_KEYS)


def splat_arrays(state: dict) -> dict[str, np.ndarray]:
    """The live Gaussians of a state as `viser`'s ``add_gaussian_splats`` takes them.

    Returns:
        ``centers [N, 3]``, ``covariances [N, 3, 3]`` (``R S S^T R^T``, the rasterizer's
        `covariance3d`), ``rgbs [N, 3]`` (the view-independent colour ``0.5 + C0 c_dc``
        clipped to [0, 1]; the browser draws no higher SH degrees) and ``opacities [N, 1]``.
    """
    alive = np.asarray(state["alive"], bool)
    params = {k: np.asarray(state["params"][k])[alive] for k in GAUSSIAN_KEYS}
    means, scales, quats, opacities = (np.array(a, np.float32) for a in jax.device_get(activated(params)))
    return {
        "centers": means,
        "covariances": np.array(covariance3d(scales, quats), np.float32),
        "rgbs": np.clip(0.5 + SH_C0 * params["sh_dc"], 0.0, 1.0).astype(np.float32),
        "opacities": opacities.reshape(-1, 1),
    }
