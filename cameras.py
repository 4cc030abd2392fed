"""Pinhole cameras as pytrees, pixel-centre ray generation and ray-box intersection.

Convention: OpenGL / Blender. A camera-to-world matrix ``c2w`` ``[3, 4]`` maps camera
coordinates to world coordinates; the camera looks down its -Z axis with +Y up and +X to
the right. Pixel ``(i, j)`` (column, row) has its centre at ``(i + 0.5, j + 0.5)``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Cameras:
    """A batch of pinhole cameras sharing one image size.

    Attributes:
        c2w: ``[..., 3, 4]`` camera-to-world rotation and translation (OpenGL convention).
        fx, fy: ``[...]`` focal lengths in pixels.
        cx, cy: ``[...]`` principal point in pixels (image centre is ``(W/2, H/2)``).
        width, height: image size in pixels (static).
    """

    c2w: Float[Array, "... 3 4"]
    fx: Float[Array, "..."]
    fy: Float[Array, "..."]
    cx: Float[Array, "..."]
    cy: Float[Array, "..."]
    width: int = dataclasses.field(metadata=dict(static=True))
    height: int = dataclasses.field(metadata=dict(static=True))

    def __getitem__(self, index) -> "Cameras":
        return dataclasses.replace(
            self,
            c2w=self.c2w[index],
            fx=self.fx[index],
            fy=self.fy[index],
            cx=self.cx[index],
            cy=self.cy[index],
        )

    def __len__(self) -> int:
        return int(np.shape(self.fx)[0])

    @property
    def centers(self) -> Float[Array, "... 3"]:
        return self.c2w[..., :3, 3]

    def scaled(self, factor: float) -> "Cameras":
        """Cameras for images resized by ``factor`` (e.g. 0.5 halves the resolution)."""
        return dataclasses.replace(
            self,
            fx=self.fx * factor,
            fy=self.fy * factor,
            cx=self.cx * factor,
            cy=self.cy * factor,
            width=int(round(self.width * factor)),
            height=int(round(self.height * factor)),
        )


def make_cameras(c2w, fov_x: float, width: int, height: int) -> Cameras:
    """Cameras from poses and a horizontal field of view, principal point at the centre.

    Args:
        c2w: ``[C, 3, 4]`` or ``[C, 4, 4]`` camera-to-world matrices.
        fov_x: horizontal field of view in radians (Blender's ``camera_angle_x``).
        width, height: image size in pixels.
    """
    c2w = np.asarray(c2w, np.float32)[..., :3, :4]
    focal = 0.5 * width / math.tan(0.5 * fov_x)
    ones = np.ones(c2w.shape[:-2], np.float32)
    return Cameras(
        c2w=c2w,
        fx=focal * ones,
        fy=focal * ones,
        cx=0.5 * width * ones,
        cy=0.5 * height * ones,
        width=width,
        height=height,
    )


def pixel_rays(
    cameras: Cameras, px: Float[Array, "..."], py: Float[Array, "..."]
) -> tuple[Float[Array, "... 3"], Float[Array, "... 3"]]:
    """World-space rays through pixel positions.

    Args:
        cameras: cameras broadcastable against ``px`` (e.g. gathered per ray).
        px, py: continuous pixel coordinates; pass ``i + 0.5`` for the centre of column i.

    Returns:
        origins ``[..., 3]`` and unit directions ``[..., 3]``:
        ``d = normalize(R @ ((px - cx) / fx, -(py - cy) / fy, -1))``.
    """
    d_cam = jnp.stack(
        [(px - cameras.cx) / cameras.fx, -(py - cameras.cy) / cameras.fy, -jnp.ones_like(px)],
        axis=-1,
    )
    rot = cameras.c2w[..., :3, :3]
    d = jnp.einsum("...ij,...j->...i", rot, d_cam)
    d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
    o = jnp.broadcast_to(cameras.c2w[..., :3, 3], d.shape)
    return o, d


def image_rays(camera: Cameras) -> tuple[Float[Array, "H W 3"], Float[Array, "H W 3"]]:
    """Rays through every pixel centre of one camera, ``[H, W, 3]`` each."""
    j, i = jnp.meshgrid(
        jnp.arange(camera.height, dtype=jnp.float32),
        jnp.arange(camera.width, dtype=jnp.float32),
        indexing="ij",
    )
    return pixel_rays(camera, i + 0.5, j + 0.5)


def intersect_box(
    origins: Float[Array, "... 3"],
    directions: Float[Array, "... 3"],
    box_min: Float[Array, "3"],
    box_max: Float[Array, "3"],
) -> tuple[Float[Array, "..."], Float[Array, "..."], jax.Array]:
    """Slab test of rays against an axis-aligned box.

    Returns:
        ``t_near``, ``t_far`` (``t_near`` clamped at 0, so a camera inside the box starts at
        its origin) and ``hit`` (True where ``t_far > t_near``).
    """
    safe = jnp.where(jnp.abs(directions) < 1e-9, 1e-9, directions)
    inv = 1.0 / safe
    t0 = (box_min - origins) * inv
    t1 = (box_max - origins) * inv
    t_near = jnp.maximum(jnp.max(jnp.minimum(t0, t1), axis=-1), 0.0)
    t_far = jnp.min(jnp.maximum(t0, t1), axis=-1)
    hit = t_far > t_near
    return t_near, jnp.where(hit, t_far, t_near), hit


def orbit_poses(
    center, radius: float, elevation_deg: float, frames: int, up=(0.0, 0.0, 1.0)
) -> np.ndarray:
    """``[frames, 3, 4]`` camera-to-world matrices circling ``center`` and looking at it.

    The orbit turns about the ``up`` axis at ``elevation_deg`` above the plane normal to it.
    """
    center = np.asarray(center, np.float64)
    up = np.asarray(up, np.float64)
    up = up / np.linalg.norm(up)
    e1 = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    elev = math.radians(elevation_deg)
    poses = []
    for k in range(frames):
        az = 2.0 * math.pi * k / frames
        offset = radius * (
            math.cos(elev) * (math.cos(az) * e1 + math.sin(az) * e2) + math.sin(elev) * up
        )
        poses.append(look_at(center + offset, center, up))
    return np.stack(poses)


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """``[3, 4]`` camera-to-world matrix at ``eye`` looking at ``target`` (OpenGL axes)."""
    eye = np.asarray(eye, np.float64)
    forward = np.asarray(target, np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, np.float64))
    if np.linalg.norm(right) < 1e-8:  # looking straight along `up`
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    rot = np.stack([right, cam_up, -forward], axis=1)
    return np.concatenate([rot, eye[:, None]], axis=1).astype(np.float32)


def project_points(points: np.ndarray, cameras: Cameras, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates ``(u, v)`` (column, row; pixel centres at ``+0.5``) and view
    depth (distance along the camera's -Z axis) of world ``points [M, 3]`` in camera
    ``k``, in numpy (float64)."""
    c2w = np.asarray(cameras.c2w[k], np.float64)
    local = (np.asarray(points, np.float64) - c2w[:3, 3]) @ c2w[:3, :3]  # world -> camera
    depth = -local[:, 2]
    safe = np.maximum(depth, 1e-6)
    u = float(cameras.fx[k]) * local[:, 0] / safe + float(cameras.cx[k])
    v = -float(cameras.fy[k]) * local[:, 1] / safe + float(cameras.cy[k])
    return u, v, depth


def look_at_jnp(
    eye: Float[Array, "N 3"], target: Float[Array, "N 3"], up: Float[Array, "N 3"]
) -> Float[Array, "N 3 4"]:
    """`look_at` for batches inside jit: ``[N, 3, 4]`` camera-to-world matrices at ``eye``
    looking at ``target`` (OpenGL axes: the camera looks down -Z)."""
    unit = lambda v: v / jnp.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    forward = unit(target - eye)
    right = unit(jnp.cross(forward, up))
    cam_up = jnp.cross(right, forward)
    rot = jnp.stack([right, cam_up, -forward], axis=-1)
    return jnp.concatenate([rot, eye[..., None]], axis=-1)


def unseen_poses(
    keys: tuple[jax.Array, jax.Array, jax.Array],
    c2w: Float[Array, "N 3 4"],
    center: Float[Array, " 3"],
    scale: float,
    angle_jitter: float,
    radius_jitter: float,
    target_jitter: float,
) -> Float[Array, "N 3 4"]:
    """Poses near given cameras, looking at the scene (RegNeRF's unseen views, sec. 3.2).

    For each camera with centre ``c`` and ``r = |c - o|`` (``o``: the scene ``center``),
    the new camera sits at ``o + r (1 + radius_jitter u) normalize((c - o) / r +
    angle_jitter n)`` (``u ~ U[-1, 1]``, ``n ~ N(0, I)``: a move on the sphere through
    ``c`` and along the ray towards ``o``) and looks at ``o + scale target_jitter n'``
    with the camera's own up vector.

    Args:
        keys: ``(k_direction, k_radius, k_target)``.
        c2w: the cameras the new poses start from.
        scale: length the target jitter is relative to (the box diagonal).
    """
    k_dir, k_rad, k_tgt = keys
    n = c2w.shape[0]
    offset = c2w[:, :3, 3] - center
    radius = jnp.linalg.norm(offset, axis=-1, keepdims=True)
    direction = offset / radius + angle_jitter * jax.random.normal(k_dir, (n, 3))
    direction = direction / jnp.linalg.norm(direction, axis=-1, keepdims=True)
    radius = radius * (1.0 + radius_jitter * jax.random.uniform(k_rad, (n, 1), minval=-1.0, maxval=1.0))
    eye = center + radius * direction
    target = center + scale * target_jitter * jax.random.normal(k_tgt, (n, 3))
    return look_at_jnp(eye, target, c2w[:, :3, 1])


def mean_up(cameras: Cameras) -> np.ndarray:
    """``[3]`` the unit mean of the cameras' up vectors (their ``+Y`` axes in the world)."""
    up = np.asarray(cameras.c2w, np.float64).reshape(-1, 3, 4)[:, :, 1].mean(0)
    return up / max(np.linalg.norm(up), 1e-12)


def elevations(offsets: np.ndarray, up) -> np.ndarray:
    """``[C]`` elevation in degrees of camera positions ``offsets [C, 3]`` (relative to the
    point they look at) above the plane normal to the unit vector ``up``."""
    offsets = np.asarray(offsets, np.float64)
    sine = offsets @ np.asarray(up, np.float64) / np.linalg.norm(offsets, axis=-1)
    return np.degrees(np.arcsin(np.clip(sine, -1.0, 1.0)))


def orbit_cameras(train: Cameras, target, frames: int) -> Cameras:
    """An orbit of ``frames`` cameras around ``target`` at the ``train`` cameras' mean
    distance and elevation, about their mean up vector, with the first one's intrinsics."""
    up = mean_up(train)
    offsets = np.asarray(train.centers) - np.asarray(target)
    radius = float(np.linalg.norm(offsets, axis=-1).mean())
    elev = float(elevations(offsets, up).mean())
    poses = orbit_poses(target, radius, elev, frames, up)
    ref = train[0]
    n = len(poses)
    return Cameras(poses, *(np.full(n, np.asarray(v), np.float32) for v in (ref.fx, ref.fy, ref.cx, ref.cy)),
                   width=ref.width, height=ref.height)


def project_jnp(points: Float[Array, "N 3"], cameras: Cameras) -> tuple[Float[Array, "N C 2"], Float[Array, "N C"]]:
    """`project_points` inside jit, into every camera of a batch: pixel coordinates
    ``(u, v)`` (pixel centres at ``+0.5``) ``[N, C, 2]`` and view depth (along the
    camera's -Z axis) ``[N, C]`` of world ``points``."""
    rot, origin = cameras.c2w[:, :3, :3], cameras.c2w[:, :3, 3]
    local = jnp.einsum("cji,ncj->nci", rot, points[:, None, :] - origin[None])  # world -> camera
    depth = -local[..., 2]
    safe = jnp.where(jnp.abs(depth) < 1e-6, 1e-6, depth)
    u = cameras.fx * local[..., 0] / safe + cameras.cx
    v = -cameras.fy * local[..., 1] / safe + cameras.cy
    return jnp.stack([u, v], -1), depth


def so3_exp(omega: Float[Array, "... 3"]) -> Float[Array, "... 3 3"]:
    """Rotation matrices of axis-angle vectors (Rodrigues), smooth at zero:
    ``exp([w]x) = I + a [w]x + b [w]x^2`` with ``a = sin t / t``, ``b = (1 - cos t) / t^2``,
    ``t = |w|`` (their Taylor series below ``t = 1e-3``)."""
    theta2 = jnp.sum(omega * omega, axis=-1)[..., None, None]
    small = theta2 < 1e-6
    safe = jnp.where(small, 1.0, theta2)
    theta = jnp.sqrt(safe)
    a = jnp.where(small, 1.0 - theta2 / 6.0, jnp.sin(theta) / theta)
    b = jnp.where(small, 0.5 - theta2 / 24.0, (1.0 - jnp.cos(theta)) / safe)
    x, y, z = omega[..., 0], omega[..., 1], omega[..., 2]
    zero = jnp.zeros_like(x)
    k = jnp.stack([jnp.stack([zero, -z, y], -1), jnp.stack([z, zero, -x], -1), jnp.stack([-y, x, zero], -1)], -2)
    return jnp.eye(3) + a * k + b * (k @ k)


def corrected_poses(c2w: Float[Array, "... 3 4"], delta: Float[Array, "... 6"], scale: float = 1.0) -> Float[Array, "... 3 4"]:
    """Camera-to-world matrices moved by corrections in each camera's own frame:
    ``R' = R exp(w)``, ``c' = c + R (scale v)`` for ``delta = (w, v)`` (rotation in
    radians, translation in units of ``scale``); ``delta = 0`` leaves them unchanged."""
    rot = c2w[..., :3, :3]
    new_rot = rot @ so3_exp(delta[..., :3])
    new_center = c2w[..., :3, 3] + jnp.einsum("...ij,...j->...i", rot, scale * delta[..., 3:])
    return jnp.concatenate([new_rot, new_center[..., None]], axis=-1)


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees of the rotation between ``a [..., 3, 3]`` and ``b [..., 3, 3]``."""
    rel = np.einsum("...ji,...jk->...ik", np.asarray(a, np.float64), np.asarray(b, np.float64))
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
