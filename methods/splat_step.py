"""The Gaussian scene's jitted train step: one random crop of one training view per step
(3DGS renders whole views; a crop costs pixels, not Gaussians, so more steps fit the same
time on a CPU), the 3DGS colour loss ``(1 - lambda) L1 + lambda (1 - SSIM)``, and the
loss terms of `sparsefield.losses` a rasterizer can serve: those that need the training
pixels' alpha (``reg.mask``, on the crop's opacity) and unseen views (``reg.depth_smoothness``,
on a small render from an unseen pose every ``--splat.unseen-every`` steps). The step logs
``overflow``: tile-list entries the rasterizer dropped (`bin_tiles`); above 0, raise
``--splat.raster.tile-capacity``."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..cameras import Cameras, image_rays, project_jnp, unseen_poses
from ..datasets.batches import RayData, keypoint_distance
from ..fields import gaussians as gs
from ..losses.base import LossInputs
from ..losses.consistency import ShiftedView, bilinear
from ..losses.keypoints import KeypointTargets
from ..losses.photometric import l1_dssim
from ..losses.smoothness import UnseenPatches
from ..renderers.densify import accumulate
from ..renderers.render import RenderedRays
from ..renderers.splatting import rasterize


def crop_view(data: RayData, key, size: int, random_background: bool, factor: int = 1):
    """`crop_with_view` without the view's index: ``(camera, rgb, background, alpha)``."""
    return crop_with_view(data, key, size, random_background, factor)[:4]


def crop_with_view(data: RayData, key, size: int, random_background: bool, factor: int = 1):
    """One random ``size x size`` crop of a random training view: its camera (principal
    point shifted), target colours, background (random per crop with masks), alpha
    (None without masks) and the view's index. With ``factor`` > 1 the window is
    ``factor`` times larger and rendered at 1 / ``factor`` resolution (targets averaged
    over ``factor``² pixels)."""
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
    return cam, rgb, bg, alpha, v


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


def pixels(out: dict, camera: Cameras) -> tuple[RenderedRays, dict]:
    """A rasterized image as the rays of the loss contract, every pixel complete: its
    depth as ray distance (the rasterizer's is view depth ``z``; along a unit ray ``t =
    z / cos``, ``cos`` the ray's angle to the optical axis), its normalised distance as
    the caller gives it (``out["distance"]``, else the depth). Also the pixels' rays."""
    origins, directions = image_rays(camera)
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    cos = -directions @ camera.c2w[:3, 2]  # the camera looks down -Z
    opacity = out["opacity"].reshape(-1)
    depth = out["depth"].reshape(-1) / jnp.maximum(cos, 1e-6)
    rays = RenderedRays(rgb=out["rgb"].reshape(-1, 3), depth=depth, opacity=opacity,
                        complete=jnp.ones(opacity.shape, bool), distance=out.get("distance", out["depth"]).reshape(-1))
    return rays, {"origins": origins, "directions": directions}


def crop_keypoints(data: RayData, view, cam: Cameras, out: dict, factor: int) -> KeypointTargets | None:
    """The keypoints of the crop's view as the loss contract's keypoint rays: the crop's
    rendered depth (converted to ray distance) and opacity sampled at each keypoint, its
    target distance, and its weight (0 outside the crop)."""
    kp = data.keypoints
    if kp is None:
        return None
    full = jax.tree_util.tree_map(lambda a: a[view], data.cameras)
    uv = kp.uv[view]
    crop_uv = (uv - jnp.stack([full.cx, full.cy])) / factor + jnp.stack([cam.cx, cam.cy])
    inside = (crop_uv[:, 0] >= 0) & (crop_uv[:, 0] <= cam.width) & (crop_uv[:, 1] >= 0) & (crop_uv[:, 1] <= cam.height)
    sampled = bilinear(jnp.stack([out["depth"], out["opacity"]], -1), crop_uv)
    distance = keypoint_distance(full, uv, kp.depth[view])
    depth = keypoint_distance(cam, crop_uv, sampled[:, 0])  # view depth -> ray distance
    rays = RenderedRays(rgb=jnp.zeros((len(uv), 3)), depth=depth, opacity=sampled[:, 1],
                        complete=inside, distance=jnp.zeros(len(uv)))
    return KeypointTargets(rays, distance, kp.weight[view] * inside)


@dataclasses.dataclass(frozen=True)
class CoTraining:
    """CoR-GS (Zhang et al., ECCV 2024): two Gaussian scenes trained side by side from the
    same views. Where they disagree is where the views do not constrain the scene: a
    Gaussian with no Gaussian of the other scene within ``prune_distance`` is pruned
    (co-pruning, at every densification), and renders of the two from unseen poses are
    held together (co-regularization, `TrainStep.disagreement`). The first scene is the
    one evaluated and exported. Doubles the cost of a step while the twin lives (``until``)."""

    weight: float = 1.0
    """Weight of the co-regularization loss."""
    every: int = 1
    """Co-regularize on every this many steps."""
    scale: float = 0.5
    """Resolution factor of the unseen-pose renders."""
    prune_distance: float = 3.0
    """Co-pruning distance, in units of the other scene's median distance between
    neighbouring Gaussians (so it follows how dense the scenes are)."""
    coverage: float = 3.0
    """A Gaussian also survives co-pruning where its mean lies within this many standard
    deviations of one of the other scene's Gaussians (a long Gaussian along a wire covers
    points far from its mean); 0: by the distance between means alone (the paper's rule).
    Thin wires, 3 and 4 views: +0.4 and +1.3 dB over the paper's rule; the other scenes
    within 0.2 dB."""
    poses: UnseenPatches = UnseenPatches()
    """How the unseen poses are drawn around the training cameras (angle and radius jitter)."""
    until: float = 1.0
    """Fraction of the run after which the twin is dropped and the first scene trains on
    alone: co-pruning ends with densification (``densify.stop``) anyway, and each step
    then costs what one scene's does."""


@dataclasses.dataclass(frozen=True)
class DropGaussian:
    """DropGaussian (Park et al., CVPR 2025): every training render drops a random share
    ``r`` of the Gaussians and scales the opacity of the rest by ``1 / (1 - r)``, so no
    Gaussian can hide behind another in the training views and the ones far from the
    training views also receive gradients. With ``ramp`` the rate grows linearly from 0
    to ``rate`` over the run."""

    rate: float = 0.1
    """r: the share of Gaussians dropped in each training render."""
    ramp: bool = True
    """Grow the rate linearly over the run instead of holding it."""

    def apply(self, alive, opacities, key, progress):
        """``(alive, opacities)`` of one training render."""
        rate = self.rate * progress if self.ramp else self.rate
        keep = jax.random.uniform(key, alive.shape) >= rate
        return alive & keep, jnp.minimum(opacities / (1.0 - rate), 1.0)


@dataclasses.dataclass(frozen=True)
class OpacityNoise:
    """Opacity noise injection (Chen et al., "Quantifying and Alleviating Co-Adaptation in
    Sparse-View 3D Gaussian Splatting", NeurIPS 2025): every training render multiplies
    each opacity by ``1 + e``, ``e ~ N(0, sigma^2)`` clipped to ``[-sigma, sigma]``, so no
    pixel's colour can rest on one exact blend of Gaussians behind it (co-adaptation);
    test renders see the opacities as they are."""

    sigma: float = 0.8
    """Standard deviation (and clip) of the multiplicative noise; the authors' code uses 0.8.
    On top of the few-shot preset at 3 views, 0.8 and 0.4 moved PSNR by less than the runs'
    spread (`docs/fewshot.md`)."""

    def apply(self, opacities, key):
        """The opacities of one training render, in [0, 1]."""
        noise = jnp.clip(self.sigma * jax.random.normal(key, opacities.shape), -self.sigma, self.sigma)
        return jnp.clip(opacities * (1.0 + noise), 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class OpacityDecay:
    """Opacity decay (Binocular3DGS, Han et al., NeurIPS 2024): after every step each
    opacity is multiplied by ``factor``, ``o <- lambda o``; Gaussians the views need get
    their opacity back through the loss, the rest fade and are pruned (floaters)."""

    factor: float = 0.995
    """lambda: multiplier of every opacity per step."""
    stop: float = 0.9
    """Fraction of the run after which opacities are left alone (they settle)."""

    def apply(self, logits, progress):
        """``logit(lambda sigmoid(l))`` until ``stop``."""
        o = jnp.clip(jax.nn.sigmoid(logits) * self.factor, 1e-6, 1.0 - 1e-6)
        return jnp.where(progress < self.stop, jnp.log(o) - jnp.log1p(-o), logits)


@dataclasses.dataclass(frozen=True)
class NeedleCap:
    """A cap on how elongated a Gaussian may grow: after every step its longest axis is
    shortened to at most ``ratio`` times its second longest. A needle lying along a
    training camera's ray looks like a point to that camera, so from few views nothing in
    the colour loss stops one growing; from a novel view needles show as streaks. Discs
    (two long axes, one short: surfaces) are left alone."""

    ratio: float = 8.0
    """Largest allowed ratio of a Gaussian's longest axis to its second longest."""

    def apply(self, log_scales):
        """``log_scales [N, A]`` with each row's largest entry at most ``log ratio`` above
        its second largest."""
        second = jnp.sort(log_scales, axis=-1)[..., -2]
        return jnp.minimum(log_scales, (second + jnp.log(self.ratio))[..., None])


@dataclasses.dataclass(frozen=True)
class DepthDistortion:
    """2DGS's depth distortion (Huang et al., SIGGRAPH 2024, eq. 13) for 3D Gaussians:
    ``L_d = mean_x sum_{i,j} w_i w_j (z_i - z_j)^2 / D^2`` over the Gaussians blended into
    each pixel of the training crop (``z_i`` their centres' depths, ``D`` the scene box
    diagonal). It concentrates each ray's weight at one depth: a floor seen at a grazing
    angle is made opaque at one height instead of by blobs spread above and under it. At
    3 views on the suite it did not help (`docs/fewshot.md`)."""

    weight: float = 1.0
    """Loss weight. On the suite at 3 views (`docs/fewshot.md`), 100 and 10 cost the
    preset 1.8 and 0.6 dB; 1 is the largest weight measured that did not lose."""
    start: float = 0.1
    """Fraction of the run after which the term is on (2DGS: 3k of 30k steps)."""


@dataclasses.dataclass(frozen=True)
class FlatCap:
    """Flat Gaussians: after every step each Gaussian's shortest axis is shortened to at
    most ``ratio`` times its second shortest, so every Gaussian is a disc (a piece of
    surface, as in the flattening terms of NeuSG and PGSR). From few views a surface seen
    at a grazing angle (a floor from low cameras) is made of blobs whose thickness the
    views do not fix; from a steeper novel view their depth spread smears the texture. At
    3 views it cost the few-shot preset 0.6 dB on each scene tried (`docs/fewshot.md`)."""

    ratio: float = 0.1
    """Largest allowed ratio of a Gaussian's shortest axis to its second shortest."""

    def apply(self, log_scales):
        """``log_scales [N, A]`` with each row's smallest entry at least ``-log ratio``
        below its second smallest."""
        ordered = jnp.sort(log_scales, axis=-1)
        cap = ordered[..., 1] + jnp.log(self.ratio)
        smallest = jnp.argmin(log_scales, axis=-1)
        is_smallest = jnp.arange(log_scales.shape[-1]) == smallest[..., None]
        return jnp.where(is_smallest, jnp.minimum(log_scales, cap[..., None]), log_scales)


FIELD = ("params", "optimizer", "alive", "densify")
"""The components of one Gaussian scene in a splat state (a co-trained twin has its own
under ``twin``)."""


def fields_of(state: dict) -> dict[str, dict]:
    """``{"main": scene, "twin": scene}`` (the twin only with co-training)."""
    return {"main": {k: state[k] for k in FIELD}} | ({"twin": state["twin"]} if "twin" in state else {})


def make_train_step(config, bbox, terms: dict, factor: int = 1):
    """``train_step(state, data, key) -> (state, metrics)``, jitted with the state donated;
    ``factor``: crops ``factor`` times larger rendered at 1 / ``factor`` resolution."""
    return jax.jit(TrainStep(config, np.asarray(bbox, np.float64), terms, factor), donate_argnums=0)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainStep:
    """One training step of a Gaussian scene; calling it runs the stages (`__call__`)."""

    config: object
    bbox: np.ndarray
    terms: dict
    factor: int = 1

    rasterizer = staticmethod(rasterize)
    """Draws the scene (`sparsefield.renderers.splatting.rasterize`; surfels swap in theirs)."""

    @property
    def splat(self):
        """The method's settings (``--splat.*``)."""
        return self.config.splat

    def render_losses(self, out: dict, cam: Cameras, step) -> dict:
        """Terms the method computes from its own training render: the depth distortion
        when ``--splat.distortion`` is on."""
        term = self.splat.distortion  # surfels override this method with their own terms
        if term is None:
            return {}
        diagonal = float(np.linalg.norm(self.bbox[1] - self.bbox[0]))
        weight = jnp.where(step >= term.start * self.config.steps, term.weight, 0.0)
        return {"distortion": weight * jnp.mean(out["distortion"]) / diagonal**2}

    def __call__(self, state: dict, data: RayData, key):
        """Render a crop and score it (`total`: one scene, or two with co-training), then
        per scene Adam with per-parameter rates, opacity decay, densification statistics."""
        fields = fields_of(state)
        params = {n: f["params"] for n, f in fields.items()}
        offsets = {n: jnp.zeros((f["alive"].shape[0], 2)) for n, f in fields.items()}
        alive = {n: f["alive"] for n, f in fields.items()}
        (loss, (losses, stats)), (grads, grad2d) = jax.value_and_grad(self.total, argnums=(0, 1), has_aux=True)(
            params, offsets, alive, data, key, state["step"])
        progress = state["step"] / self.config.steps
        updated = {n: self.update(fields[n], grads[n], grad2d[n], stats[n], progress) for n in fields}
        mse, _, _, overflow = stats["main"]
        metrics = {"loss": loss, "psnr": -10.0 * jnp.log10(mse), "gaussians": jnp.sum(state["alive"]),
                   "overflow": overflow.astype(jnp.float32), **{f"loss_{k}": v for k, v in losses.items()}}
        new = {"step": state["step"] + 1, **updated["main"]} | ({"twin": updated["twin"]} if "twin" in updated else {})
        return new, metrics

    def update(self, field: dict, grads, grad2d, stats, progress) -> dict:
        """One scene's Adam step with 3DGS's per-parameter learning rates, opacity decay,
        the needle and flat caps, and its densification statistics."""
        updates, opt_state = make_optimizer().update(grads, field["optimizer"])
        extent = 0.5 * float(np.linalg.norm(self.bbox[1] - self.bbox[0]))
        lrs = learning_rates(self.splat, extent, progress)
        params = {k: v - lrs[k] * updates[k] for k, v in field["params"].items()}
        if self.splat.opacity_decay is not None:
            params["logit_opacities"] = self.splat.opacity_decay.apply(params["logit_opacities"], progress)
        if self.splat.needle_cap is not None:
            params["log_scales"] = self.splat.needle_cap.apply(params["log_scales"])
        if getattr(self.splat, "flat_cap", None) is not None:  # splat only: surfels are flat
            params["log_scales"] = self.splat.flat_cap.apply(params["log_scales"])
        _, visible, size, _ = stats
        densify = accumulate(field["densify"], grad2d, visible, 0.5 * size)
        return {"params": params, "optimizer": opt_state, "alive": field["alive"], "densify": densify}

    def total(self, params: dict, offsets: dict, alive: dict, data, key, step):
        """The loss of every scene on the same crop (`losses`); with co-training, the twin's
        terms (``twin_*``) and their disagreement on an unseen view (``co_training``)."""
        per = {n: self.losses(params[n], offsets[n], alive[n], data, key, step)[1] for n in params}
        losses = dict(per["main"][0])
        if "twin" in params:
            losses |= {f"twin_{k}": v for k, v in per["twin"][0].items()}
            losses["co_training"] = self.disagreement(params, alive, data, jax.random.fold_in(key, 4), step)
        return sum(losses.values()), (losses, {n: per[n][1:] for n in params})

    def disagreement(self, params: dict, alive: dict, data, key, step):
        """CoR-GS's co-regularization: the two scenes rendered from one unseen pose should
        agree, ``(1 - lambda) L1 + lambda D-SSIM`` between the renders (every
        ``co.every`` steps)."""
        co = self.splat.co_training
        box = jnp.asarray(self.bbox, jnp.float32)

        def on(params):
            cam = unseen_camera(data, key, box.mean(0), co.scale, co.poses)
            a, b = (self.render(params[n], alive[n], cam, jnp.zeros(3), step)["rgb"] for n in ("main", "twin"))
            return co.weight * l1_dssim(a, b, self.splat.ssim_weight)

        return jax.lax.cond(step % max(co.every, 1) == 0, on, lambda p: jnp.float32(0.0), params)

    def render(self, params, alive, cam, bg, step, offset=None, key=None):
        """Rasterize ``cam``; with ``key``, a training render (DropGaussian and opacity noise
        when on)."""
        colors = gs.gaussian_colors(params, cam.c2w[:3, 3], gs.active_degree(self.splat.gaussians, step))
        means, scales, quats, opacities = gs.activated(params)
        if key is not None and self.splat.drop is not None:
            alive, opacities = self.splat.drop.apply(alive, opacities, key, step / self.config.steps)
        if key is not None and self.splat.opacity_noise is not None:
            opacities = self.splat.opacity_noise.apply(opacities, jax.random.fold_in(key, 1))
        extra = {"distortion": True} if key is not None and getattr(self.splat, "distortion", None) else {}
        return self.rasterizer(means, scales, quats, opacities, colors, cam, bg, self.splat.raster, alive, offset,
                               **extra)

    def losses(self, params, offset, alive, data, key, step):
        """``(sum, (losses by name, mse, visible, crop size, overflow))``: the 3DGS colour
        loss on a crop, the terms the rasterizer can serve, the patch terms."""
        cam, target, bg, alpha, view = crop_with_view(data, key, self.splat.crop, self.config.random_background,
                                                 self.factor)
        out = self.render(params, alive, cam, bg, step, offset, key=jax.random.fold_in(key, 2))
        rays, pixel_rays = pixels(out, cam)
        batch = {"rgb": target.reshape(-1, 3), "view": jnp.full(rays.opacity.shape, view), **pixel_rays}
        batch |= {} if alpha is None else {"alpha": alpha.reshape(-1)}
        inputs = LossInputs(rays, batch, step, views=data, keypoints=crop_keypoints(data, view, cam, out, self.factor),
                            binocular=self.shifted_view(params, alive, cam, bg, step, rays, batch, key))
        losses = {"rgb": l1_dssim(out["rgb"], target, self.splat.ssim_weight)} | self.render_losses(out, cam, step)
        losses |= {n: t.weight_at(step) * t(inputs) for n, t in self.terms.items()
                   if "patches" not in t.needs and ("alpha" not in t.needs or alpha is not None)}
        losses |= self.unseen_losses(params, alive, data, jax.random.fold_in(key, 1), step)
        mse = jnp.mean((out["rgb"] - target) ** 2)
        return sum(losses.values()), (losses, mse, out["visible"], max(cam.width, cam.height), out["overflow"])


    def shifted_view(self, params, alive, cam: Cameras, bg, step, rays: RenderedRays, batch: dict, key):
        """For a term that needs ``binocular``: the crop rendered from its camera shifted
        sideways by the term's baseline (left or right at random), sampled where each
        pixel's surface point lands (`ShiftedView`); None otherwise."""
        term = next((t for t in self.terms.values() if "binocular" in t.needs), None)
        if term is None:
            return None
        side = jnp.where(jax.random.bernoulli(jax.random.fold_in(key, 3)), 1.0, -1.0)
        shift = side * term.baseline * float(np.linalg.norm(self.bbox[1] - self.bbox[0])) * cam.c2w[:3, 0]
        moved = dataclasses.replace(cam, c2w=cam.c2w.at[:3, 3].add(shift))
        image = self.render(params, alive, moved, bg, step)["rgb"]
        points = batch["origins"] + (rays.depth / jnp.maximum(rays.opacity, 1e-3))[:, None] * batch["directions"]
        uv, depth = project_jnp(points, jax.tree_util.tree_map(lambda a: a[None], moved))
        uv, depth = uv[:, 0], depth[:, 0]
        valid = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= moved.width) & (uv[:, 1] >= 0) & (uv[:, 1] <= moved.height)
        return ShiftedView(bilinear(image, uv), valid)

    def unseen_losses(self, params, alive, data, key, step) -> dict:
        """The patch terms on a small render from an unseen pose (every ``unseen_every`` steps)."""
        patch_terms = {n: t for n, t in self.terms.items() if "patches" in t.needs}
        if not patch_terms:
            return {}
        box = jnp.asarray(self.bbox, jnp.float32)
        center, diagonal = box.mean(0), float(np.linalg.norm(self.bbox[1] - self.bbox[0]))

        def on(params):
            cam = unseen_camera(data, key, center, self.splat.unseen_scale, next(iter(patch_terms.values())).patches)
            u = self.render(params, alive, cam, jnp.zeros(3), step)
            far = jnp.linalg.norm(cam.c2w[:3, 3] - center) + 0.5 * diagonal
            u = {**u, "distance": (u["depth"] + (1.0 - u["opacity"]) * far) / diagonal}
            inputs = LossInputs(None, {}, step, pixels(u, cam)[0], (1, cam.height, cam.width))
            return {n: t.weight_at(step) * t(inputs) for n, t in patch_terms.items()}

        off = lambda p: {n: jnp.float32(0.0) for n in patch_terms}  # noqa: E731
        return jax.lax.cond(step % max(self.splat.unseen_every, 1) == 0, on, off, params)
