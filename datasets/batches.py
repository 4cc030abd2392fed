"""Ray batches drawn from the chosen training views only, with explicit keys.

The chosen views live on the device as one `RayData`; `sample_rays` picks random pixels
of random views inside the jitted train step, so no host round trip happens per step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from sparsefield.cameras import Cameras, pixel_rays
from sparsefield.datasets.scene import SceneData


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
        ``origins [R, 3]``, ``directions [R, 3]``, ``rgb [R, 3]`` and ``background [R, 3]``.
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
    return {"origins": origins, "directions": directions, "rgb": rgb, "background": bg}
