"""Ray batches drawn from the chosen training views only, with explicit keys.

The chosen views live on the device as one `RayData`; `sample_rays` picks random pixels
of random views inside the jitted train step, so no host round trip happens per step.
`sample_patches` makes square pixel patches seen from unseen poses near the training
cameras (RegNeRF), for loss terms that regularise novel views.
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
class RayData:
    """Training views on the device.

    Attributes:
        images: ``[V, H, W, 3]`` colours composited on ``background``.
        alphas: ``[V, H, W]`` alpha masks (ones when the dataset has none).
        cameras: the ``V`` cameras.
        background: ``[3]`` colour the images were composited on.
        has_alpha: whether real masks exist (static): only then can the background be
            swapped for a random colour per ray.
    """

    images: Float[Array, "V H W 3"]
    alphas: Float[Array, "V H W"]
    cameras: Cameras
    background: Float[Array, " 3"]
    has_alpha: bool = dataclasses.field(metadata=dict(static=True))


def make_ray_data(scene: SceneData, ids: np.ndarray) -> RayData:
    """Put the views ``ids`` (indices into ``scene.images``) on the device."""
    alphas = scene.masks[ids] if scene.masks is not None else np.ones(scene.images[ids].shape[:3])
    return RayData(
        images=jnp.asarray(scene.images[ids], jnp.float32),
        alphas=jnp.asarray(alphas, jnp.float32),
        cameras=jax.tree_util.tree_map(jnp.asarray, scene.cameras[ids]),
        background=jnp.asarray(scene.background, jnp.float32),
        has_alpha=scene.masks is not None,
    )


def sample_rays(data: RayData, key: jax.Array, num_rays: int, random_background: bool) -> dict:
    """Random pixels of random views, with jittered sub-pixel positions.

    With alpha masks and ``random_background``, each ray gets a random background colour
    ``b`` and its target is re-composited: ``c' = c + (1 - a)(b - b_scene)``, which holds
    because ``c = c_fg a + b_scene (1 - a)``. This stops the field from explaining the
    background with density (Instant-NGP's random background trick).

    Returns:
        ``origins [R, 3]``, ``directions [R, 3]``, ``rgb [R, 3]``, ``background [R, 3]``
        and, when the data has alpha masks, ``alpha [R]``.
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
    batch = {"origins": origins, "directions": directions, "rgb": rgb, "background": bg}
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
