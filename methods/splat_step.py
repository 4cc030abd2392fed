"""The Gaussian scene's jitted train step: one random crop of one training view per step
(3DGS renders whole views; a crop costs pixels, not Gaussians, so more steps fit the same
time on a CPU), the 3DGS colour loss ``(1 - lambda) L1 + lambda (1 - SSIM)``, and the
loss terms of `sparsefield.losses` a rasterizer can serve: those that need the training
pixels' alpha (``reg.mask``, on the crop's opacity) and unseen views (``reg.depth_smoothness``,
on a small render from an unseen pose every ``--splat.unseen-every`` steps). The step logs
``overflow``: tile-list entries the rasterizer dropped (`bin_tiles`); above 0, raise
``--splat.raster.tile-capacity``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..cameras import Cameras, unseen_poses
from ..datasets.batches import RayData
from ..fields import gaussians as gs
from ..losses.base import LossInputs
from ..losses.photometric import l1_dssim
from ..renderers.densify import accumulate
from ..renderers.render import RenderedRays
from ..renderers.splatting import rasterize


def crop_view(data: RayData, key, size: int, random_background: bool, factor: int = 1):
    """One random ``size x size`` crop of a random training view: its camera (principal
    point shifted), target colours, background (random per crop with masks) and alpha
    (None without masks). With ``factor`` > 1 the window is ``factor`` times larger and
    rendered at 1 / ``factor`` resolution (targets averaged over ``factor``² pixels)."""
    k_view, k_x, k_y, k_bg = jax.random.split(key, 4)
    num, height, width = data.images.shape[:3]
    size_x, size_y = (min(size * factor, width), min(size * factor, height)) if size else (width, height)
    size_x, size_y = size_x - size_x % factor, size_y - size_y % factor
    v = jax.random.randint(k_view, (), 0, num)
    x0 = jax.random.randint(k_x, (), 0, width - size_x + 1)
    y0 = jax.random.randint(k_y, (), 0, height - size_y + 1)
    cams = data.cameras
    cam = Cameras(cams.c2w[v], cams.fx[v], cams.fy[v], cams.cx[v] - x0, cams.cy[v] - y0,
                  width=size_x, height=size_y)
    rgb = jax.lax.dynamic_slice(data.images[v], (y0, x0, 0), (size_y, size_x, 3))
    alpha = jax.lax.dynamic_slice(data.alphas[v], (y0, x0), (size_y, size_x)) if data.has_alpha else None
    if random_background and alpha is not None:
        bg = jax.random.uniform(k_bg, (3,))
        rgb = rgb + (1.0 - alpha)[..., None] * (bg - data.background)
    else:
        bg = data.background
    if factor > 1:
        pool = lambda a: a.reshape(size_y // factor, factor, size_x // factor, factor, *a.shape[2:]).mean((1, 3))  # noqa: E731
        rgb = pool(rgb)
        alpha = None if alpha is None else pool(alpha)
        cam = Cameras(cam.c2w, cam.fx / factor, cam.fy / factor, cam.cx / factor, cam.cy / factor,
                      width=size_x // factor, height=size_y // factor)
    return cam, rgb, bg, alpha


def unseen_camera(data: RayData, key, center, scale: float, patches) -> Cameras:
    """A camera near a random training camera looking at the scene centre, placed as
    RegNeRF's unseen patches are (`sparsefield.cameras.unseen_poses`, without target
    jitter), with its resolution times ``scale``."""
    k_view, *keys = jax.random.split(key, 4)
    cams = data.cameras
    v = jax.random.randint(k_view, (), 0, cams.c2w.shape[0])
    c2w = unseen_poses(tuple(keys), cams.c2w[v][None], center, 1.0, patches.angle_jitter,
                       patches.radius_jitter, 0.0)[0]
    w, h = cams.width, cams.height
    return Cameras(c2w, cams.fx[v] * scale, cams.fy[v] * scale, cams.cx[v] * scale, cams.cy[v] * scale,
                   width=max(8, int(w * scale)), height=max(8, int(h * scale)))


def learning_rates(sc, extent: float, progress) -> dict:
    """Per-parameter learning rates at ``progress`` in [0, 1] (means decay 100x, 3DGS)."""
    m = sc.lr_multiplier
    return {"means": m * sc.lr_means * extent * 0.01 ** progress, "log_scales": m * sc.lr_log_scales,
            "quats": m * sc.lr_quats, "logit_opacities": m * sc.lr_opacity, "sh_dc": m * sc.lr_sh_dc,
            "sh_rest": m * sc.lr_sh_rest}


def make_optimizer() -> optax.GradientTransformation:
    """Adam's normalised step; learning rates are applied per parameter in the step."""
    return optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-15)


def pixels(out: dict) -> RenderedRays:
    """A rasterized image as the rays of the loss contract: every pixel complete, its
    normalised distance given by the caller (``out["distance"]``, else the depth)."""
    flat = lambda a: a.reshape(-1, *a.shape[2:])  # noqa: E731
    opacity = flat(out["opacity"])
    return RenderedRays(rgb=flat(out["rgb"]), depth=flat(out["depth"]), opacity=opacity,
                        complete=jnp.ones(opacity.shape, bool), distance=flat(out.get("distance", out["depth"])))


def make_train_step(config, bbox, terms: dict, factor: int = 1):
    """``train_step(state, data, key) -> (state, metrics)``, jitted with the state donated;
    ``factor``: crops ``factor`` times larger rendered at 1 / ``factor`` resolution."""
    sc = config.splat
    box = jnp.asarray(bbox, jnp.float32)
    center, diagonal = box.mean(0), float(jnp.linalg.norm(box[1] - box[0]))
    extent = 0.5 * float(np.linalg.norm(np.asarray(bbox, np.float64)[1] - np.asarray(bbox, np.float64)[0]))
    pixel_terms = {n: t for n, t in terms.items() if "patches" not in t.needs}
    patch_terms = {n: t for n, t in terms.items() if "patches" in t.needs}
    optimizer = make_optimizer()

    def render(params, alive, cam, bg, step, offset=None):
        colors = gs.gaussian_colors(params, cam.c2w[:3, 3], gs.active_degree(sc.gaussians, step))
        return rasterize(*gs.activated(params), colors, cam, bg, sc.raster, alive, offset)

    def unseen_losses(params, alive, data, key, step) -> dict:
        """The patch terms on a small render from an unseen pose (every ``unseen_every`` steps)."""
        def on(params):
            smooth = next(iter(patch_terms.values()))
            cam = unseen_camera(data, key, center, sc.unseen_scale, smooth.patches)
            u = render(params, alive, cam, jnp.zeros(3), step)
            far = jnp.linalg.norm(cam.c2w[:3, 3] - center) + 0.5 * diagonal
            u = {**u, "distance": (u["depth"] + (1.0 - u["opacity"]) * far) / diagonal}
            inputs = LossInputs(None, {}, step, pixels(u), (1, cam.height, cam.width))
            return {n: t.weight_at(step) * t(inputs) for n, t in patch_terms.items()}

        off = lambda p: {n: jnp.float32(0.0) for n in patch_terms}  # noqa: E731
        return jax.lax.cond(step % max(sc.unseen_every, 1) == 0, on, off, params) if patch_terms else {}

    def loss_fn(params, offset, alive, data, key, step):
        cam, target, bg, alpha = crop_view(data, key, sc.crop, config.random_background, factor)
        out = render(params, alive, cam, bg, step, offset)
        batch = {"rgb": target.reshape(-1, 3)} | ({} if alpha is None else {"alpha": alpha.reshape(-1)})
        inputs = LossInputs(pixels(out), batch, step)
        losses = {"rgb": l1_dssim(out["rgb"], target, sc.ssim_weight)}
        losses |= {n: t.weight_at(step) * t(inputs) for n, t in pixel_terms.items()
                   if "alpha" not in t.needs or alpha is not None}
        losses |= unseen_losses(params, alive, data, jax.random.fold_in(key, 1), step)
        mse = jnp.mean((out["rgb"] - target) ** 2)
        return sum(losses.values()), (losses, mse, out["visible"], max(cam.width, cam.height), out["overflow"])

    def train_step(state: dict, data: RayData, key):
        offset = jnp.zeros((state["alive"].shape[0], 2))
        (loss, (losses, mse, visible, size, overflow)), (grads, grad2d) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(state["params"], offset, state["alive"], data, key, state["step"])
        updates, opt_state = optimizer.update(grads, state["optimizer"])
        lrs = learning_rates(sc, extent, state["step"] / config.steps)
        params = {k: v - lrs[k] * updates[k] for k, v in state["params"].items()}
        densify = accumulate(state["densify"], grad2d, visible, 0.5 * size)
        metrics = {"loss": loss, "psnr": -10.0 * jnp.log10(mse), "gaussians": jnp.sum(state["alive"]),
                   "overflow": overflow.astype(jnp.float32), **{f"loss_{k}": v for k, v in losses.items()}}
        new = {"step": state["step"] + 1, "params": params, "optimizer": opt_state, "alive": state["alive"],
               "densify": densify}
        return new, metrics

    return jax.jit(train_step, donate_argnums=0)
