"""Ray batches drawn from the chosen training views only, with explicit keys.

The chosen views live on the device as one `RayData`; `sample_rays` picks random pixels
of random views inside the jitted train step, so no host round trip happens per step.
`sample_patches` makes square pixel patches seen from unseen poses near the training
cameras (RegNeRF), for loss terms that regularise novel views; `sample_keypoints` draws
rays through the training views' triangulated keypoints, with their depths (DS-NeRF).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..cameras import Cameras, pixel_rays, unseen_poses
from .scene import SceneData


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Keypoints:
    """The training views' keypoints with known depth, padded to ``K`` per view.

    Attributes:
        uv: ``[V, K, 2]`` pixel ``(u, v)`` (centres at +0.5).
        depth: ``[V, K]`` view depth of the triangulated point (along the camera's -Z).
        weight: ``[V, K]`` confidence ``exp(-e^2 / 2)`` from the point's reprojection
            error ``e`` in pixels; 0 in padding.
    """

    uv: Float[Array, "V K 2"]
    depth: Float[Array, "V K"]
    weight: Float[Array, "V K"]


def make_keypoints(points, num_views: int) -> Keypoints | None:
    """`Keypoints` of a `sparsefield.datasets.triangulation.SparsePoints` (None when it is
    empty)."""
    if points is None or len(points) == 0:
        return None
    per_view = [points.keypoints(v) for v in range(num_views)]
    k = max(1, max(len(uv) for uv, _, _ in per_view))
    uv, depth, weight = np.zeros((num_views, k, 2)), np.ones((num_views, k)), np.zeros((num_views, k))
    for v, (pix, z, point) in enumerate(per_view):
        n = len(pix)
        uv[v, :n], depth[v, :n], weight[v, :n] = pix, z, np.exp(-0.5 * points.error[point] ** 2)
    return Keypoints(*(jnp.asarray(a, jnp.float32) for a in (uv, depth, weight)))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RayData:
    """Training views on the device.

    Attributes:
        images: ``[V, H, W, 3]`` colours composited on ``background``.
        alphas: ``[V, H, W]`` alpha masks (ones when the dataset has none).
        cameras: the ``V`` cameras.
        background: ``[3]`` colour the images were composited on.
        has_alpha: whether real masks exist (static): only then can the background be
            swapped for a random colour per ray.
        keypoints: the views' triangulated keypoints (`Keypoints`), or None.
    """

    images: Float[Array, "V H W 3"]
    alphas: Float[Array, "V H W"]
    cameras: Cameras
    background: Float[Array, " 3"]
    has_alpha: bool = dataclasses.field(metadata=dict(static=True))
    keypoints: Keypoints | None = None


def make_ray_data(scene: SceneData, ids: np.ndarray, points=None) -> RayData:
    """Put the views ``ids`` (indices into ``scene.images``) on the device, with their
    keypoints when ``points`` (a `SparsePoints` of these views) are given."""
    alphas = scene.masks[ids] if scene.masks is not None else np.ones(scene.images[ids].shape[:3])
    return RayData(
        images=jnp.asarray(scene.images[ids], jnp.float32),
        alphas=jnp.asarray(alphas, jnp.float32),
        cameras=jax.tree_util.tree_map(jnp.asarray, scene.cameras[ids]),
        background=jnp.asarray(scene.background, jnp.float32),
        has_alpha=scene.masks is not None,
        keypoints=make_keypoints(points, len(ids)),
    )


def sample_rays(data: RayData, key: jax.Array, num_rays: int, random_background: bool) -> dict:
    """Random pixels of random views, with jittered sub-pixel positions.

    With alpha masks and ``random_background``, each ray gets a random background colour
    ``b`` and its target is re-composited: ``c' = c + (1 - a)(b - b_scene)``, which holds
    because ``c = c_fg a + b_scene (1 - a)``. This stops the field from explaining the
    background with density (Instant-NGP's random background trick).

    Returns:
        ``origins [R, 3]``, ``directions [R, 3]``, ``rgb [R, 3]``, ``background [R, 3]``,
        ``view [R]`` (each ray's training view) and, when the data has alpha masks,
        ``alpha [R]``.
    """
    k_view, k_x, k_y, k_jit, k_bg = jax.random.split(key, 5)
    num_views, height, width = data.images.shape[:3]
    v = jax.random.randint(k_view, (num_rays,), 0, num_views)
    px = jax.random.randint(k_x, (num_rays,), 0, width)
    py = jax.random.randint(k_y, (num_rays,), 0, height)
    jitter = jax.random.uniform(k_jit, (2, num_rays))
    cams = jax.tree_util.tree_map(lambda a: a[v], data.cameras)
    origins, directions = pixel_rays(cams, px + jitter[0], py + jitter[1])
    rgb = data.images[v, py, px]
    if random_background and data.has_alpha:
        bg = jax.random.uniform(k_bg, (num_rays, 3))
        rgb = rgb + (1.0 - data.alphas[v, py, px])[:, None] * (bg - data.background)
    else:
        bg = jnp.broadcast_to(data.background, (num_rays, 3))
    batch = {"origins": origins, "directions": directions, "rgb": rgb, "background": bg, "view": v}
    if data.has_alpha:
        batch["alpha"] = data.alphas[v, py, px]
    return batch


def sample_patches(
    data: RayData,
    key: jax.Array,
    center: Float[Array, " 3"],
    scale: float,
    num_patches: int,
    size: int,
    stride: float = 1.0,
    angle_jitter: float = 0.2,
    radius_jitter: float = 0.1,
    target_jitter: float = 0.02,
) -> dict:
    """Pixel patches seen from random unseen poses around the training cameras (RegNeRF).

    For each of the ``N_p = num_patches`` patches: a training camera ``k`` with centre
    ``c_k`` is drawn; with the scene centre ``o`` and ``r = |c_k - o|``, the new camera
    sits at ``o + r (1 + radius_jitter u) normalize((c_k - o) / r + angle_jitter n)``
    (``u ~ U[-1, 1]``, ``n ~ N(0, I)``: a move on the sphere through ``c_k`` and along
    the ray towards ``o``), looks at ``o + scale target_jitter n'`` with camera ``k``'s
    up vector and intrinsics, and renders a ``P x P`` (``P = size``) patch of pixels
    ``stride`` apart at a random place in the image. Shapes are static: ``N_p P^2`` rays.

    Args:
        center: ``[3]`` scene centre ``o`` (the box centre).
        scale: world length the target jitter is relative to (the box diagonal).

    Returns:
        ``patch_origins [N_p P^2, 3]`` and ``patch_directions [N_p P^2, 3]``, patch-major
        then row-major (reshape to ``[N_p, P, P, 3]``).
    """
    k_view, k_dir, k_rad, k_tgt, k_x, k_y = jax.random.split(key, 6)
    cams = data.cameras
    view = jax.random.randint(k_view, (num_patches,), 0, cams.c2w.shape[0])
    poses = unseen_poses((k_dir, k_rad, k_tgt), cams.c2w[view], center, scale, angle_jitter, radius_jitter,
                         target_jitter)
    span = (size - 1) * stride
    x0 = jax.random.uniform(k_x, (num_patches,), maxval=jnp.maximum(cams.width - span - 1.0, 0.0))
    y0 = jax.random.uniform(k_y, (num_patches,), maxval=jnp.maximum(cams.height - span - 1.0, 0.0))
    grid = jnp.arange(size, dtype=jnp.float32) * stride + 0.5
    px = x0[:, None, None] + grid[None, None, :]  # [N_p, P, P]: rows are y, columns x
    py = y0[:, None, None] + grid[None, :, None]
    px, py = jnp.broadcast_arrays(px, py)
    per_ray = jnp.repeat(jnp.arange(num_patches), size * size)
    patch_cams = dataclasses.replace(
        cams, c2w=poses[per_ray], fx=cams.fx[view][per_ray], fy=cams.fy[view][per_ray],
        cx=cams.cx[view][per_ray], cy=cams.cy[view][per_ray],
    )
    origins, directions = pixel_rays(patch_cams, px.reshape(-1), py.reshape(-1))
    return {"patch_origins": origins, "patch_directions": directions}


def keypoint_distance(cameras: Cameras, uv: Float[Array, "... 2"], depth: Float[Array, "..."]) -> Float[Array, "..."]:
    """Distance along the unit ray through pixel ``uv`` to a point at view depth ``depth``:
    ``t = z |((u - c_x) / f_x, -(v - c_y) / f_y, -1)|``."""
    x = (uv[..., 0] - cameras.cx) / cameras.fx
    y = (uv[..., 1] - cameras.cy) / cameras.fy
    return depth * jnp.sqrt(x * x + y * y + 1.0)


def sample_keypoints(data: RayData, key: jax.Array, num_rays: int) -> dict:
    """Rays through random keypoints of the training views, drawn in proportion to their
    weight, with the distance along each ray to its triangulated point.

    Returns:
        ``keypoint_origins [R, 3]``, ``keypoint_directions [R, 3]``, ``keypoint_distance
        [R]`` and ``keypoint_weight [R]``.
    """
    kp = data.keypoints
    num_views, k = kp.weight.shape
    flat = jax.random.choice(key, num_views * k, (num_rays,), p=kp.weight.reshape(-1) / jnp.sum(kp.weight))
    v, i = flat // k, flat % k
    cams = jax.tree_util.tree_map(lambda a: a[v], data.cameras)
    uv = kp.uv[v, i]
    origins, directions = pixel_rays(cams, uv[:, 0], uv[:, 1])
    return {"keypoint_origins": origins, "keypoint_directions": directions,
            "keypoint_distance": keypoint_distance(cams, uv, kp.depth[v, i]), "keypoint_weight": kp.weight[v, i]}
