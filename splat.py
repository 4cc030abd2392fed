"""Gaussian scenes as a training method (``--method splat``): initialisation, the jitted
train step, the loop with densification, reading a run back, and PLY / mesh export.

`train.py` hands a run here when ``config.method == "splat"``; the run folder is the
same as a NeRF run's (``config.json``, ``checkpoints/``, ``metrics.json``, renders), so
``render``, ``eval`` and ``export`` work on it unchanged. Each step renders one random
crop of one training view (3DGS renders whole views; a crop costs pixels, not
Gaussians, so more steps fit the same time on a CPU), with the 3DGS loss
``(1 - lambda) L1 + lambda (1 - SSIM)``, plus RegNeRF's depth smoothness on a small
render from an unseen pose every ``--splat.unseen-every`` steps when
``reg.depth_smoothness`` is on, and the mask loss on the crop's opacity when
``reg.mask`` is on (the same terms and weights as the NeRF path). Every
``densify.every`` steps to the end, Gaussians are pruned whose mean has left the
training masks' visual hull or that fewer than ``--splat.min-views`` views see
(``--splat.hull-cull``). The step logs
``overflow``: tile-list entries the rasterizer dropped (`bin_tiles`); above 0, raise
``--splat.raster.tile-capacity``.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsefield import metrics
from sparsefield.cameras import Cameras
from sparsefield.datasets.batches import RayData, look_at_jnp, make_ray_data
from sparsefield.fields import gaussians as gs
from sparsefield.fields.gaussians import GaussianConfig
from sparsefield.renderers.densify import DensifyConfig, DensifyState, DensifyStrategy, accumulate
from sparsefield.renderers.regularizers import binary_cross_entropy, depth_smoothness
from sparsefield.renderers.splatting import SplatRenderConfig, rasterize


@dataclasses.dataclass(frozen=True)
class SplatConfig:
    """Gaussian-splatting training (``--method splat``)."""

    gaussians: GaussianConfig = GaussianConfig()
    raster: SplatRenderConfig = SplatRenderConfig(tile_size=8, tile_capacity=1024, pairs_per_gaussian=16.0)
    """Rasterizer: 8 x 8 tiles of up to 1024 Gaussians (the renderer's default is 16 x 16
    and 256): on the demo scene those drop tens of thousands of list entries per 400x400
    view, and dropped entries cost test PSNR (1.8 dB from 512 to 256 per 16 x 16 tile)."""
    densify: DensifyConfig = DensifyConfig()
    """Adaptive density control (``--splat.densify.stop 0`` keeps the initial Gaussians)."""
    crop: int = 160
    """Side of the random training crop in pixels (0: whole views)."""
    coarse: float = 0.5
    """Fraction of the run's first steps that render crops twice as wide at half the
    resolution: as many pixels per step, four times the area, so the Gaussians see more
    of each view while the scene takes shape. Demo scene, 8 views, fewshot preset, 700
    steps: 26.14 dB without (118 s), 26.89 dB with 0.3, 27.22 dB with 0.5 (126 s, the
    second compiled step included), 26.93 dB with 0.7."""
    ssim_weight: float = 0.2
    """lambda of the D-SSIM term (3DGS: 0.2)."""
    lr_means: float = 1.6e-4
    """Learning rate of the means, times the scene extent; decays 100x over the run."""
    lr_log_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacity: float = 5e-2
    lr_sh_dc: float = 2.5e-3
    lr_sh_rest: float = 1.25e-4
    lr_multiplier: float = 4.0
    """All learning rates are scaled by this: 3DGS's rates are tuned for 30k steps."""
    unseen_scale: float = 0.25
    """Resolution factor of the unseen-pose render for depth smoothness."""
    unseen_every: int = 4
    """Depth smoothness on every this many steps: the unseen render sees every Gaussian,
    and on each step it took a third of the step's time (demo scene, 8 views, 800 steps:
    24.10 dB in 488 s on every step, 24.09 dB in 382 s on every 4th, 24.02 dB in 311 s
    without it)."""
    hull_cull: bool = True
    """Every ``densify.every`` steps to the end of the run, prune Gaussians whose mean
    lies outside the visual hull of the training masks (GaussianObject) or inside the
    frustum of fewer than ``min_views`` training views (without masks, only the latter)."""
    min_views: int = 4
    """Seed and keep Gaussians only where at least this many training views (capped at
    their number) see them: one view does not fix a Gaussian's depth, and such Gaussians
    float in front of novel views. Demo scene, 8 views, 800 steps: 24.02 dB test PSNR
    without this rule, 25.86 dB with 3 views (67 Gaussians left that exactly 3 views see,
    the rest all 8), 26.15 dB with 4 (5 gives the same run)."""


CONFIG_CLASSES = (SplatConfig, GaussianConfig, SplatRenderConfig, DensifyConfig)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SplatState:
    """Everything the splat train step updates."""

    step: jax.Array
    params: dict
    opt_state: optax.OptState
    alive: jax.Array
    densify: DensifyState


def scene_extent(bbox) -> float:
    """Half the box diagonal: the length 3DGS scales positions' learning rate with."""
    bbox = np.asarray(bbox, np.float64)
    return 0.5 * float(np.linalg.norm(bbox[1] - bbox[0]))


def make_optimizer() -> optax.GradientTransformation:
    """Adam's normalised step; learning rates are applied per parameter in the step."""
    return optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-15)


def state_from(params: dict, alive) -> SplatState:
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    n = params["means"].shape[0]
    return SplatState(jnp.zeros((), jnp.int32), params, make_optimizer().init(params),
                      jnp.asarray(alive), DensifyStrategy().init(n))


def empty_state(capacity: int) -> SplatState:
    """A state of ``capacity`` slots (the template a checkpoint is read into)."""
    params, alive = gs.make_params(np.zeros((2, 3)) + [[0, 0, 0], [1, 1, 1]], np.zeros((2, 3)), capacity, 0.1)
    return state_from(params, alive)


def seed_points(config, scene, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Initial points and colours: ``--init-from`` a NeRF run, the visual hull of the
    training masks, or uniform in the box; isolated points removed."""
    g, bbox = config.splat.gaussians, np.asarray(scene.bbox, np.float64)
    if config.init_from is not None:
        from sparsefield import evaluate

        nerf = evaluate.load_run(config.init_from)
        p, field = nerf.state.params, nerf.field
        points, colors = gs.density_points(
            config.seed, jax.jit(lambda x: field.sigma(p, x)), jax.jit(lambda x, d: field(p, x, d)[1]),
            np.asarray(nerf.facts["bbox"], np.float64), g.init_points)
        print(f"init: {len(points):,} points from the density of {config.init_from}")
    elif g.init == "hull" and scene.masks is not None:
        points, colors = gs.visual_hull_points(config.seed, scene.cameras[ids], scene.masks[ids],
                                               scene.images[ids], bbox, g.init_points,
                                               min_views=config.splat.min_views)
        print(f"init: {len(points):,} points inside the visual hull of {len(ids)} masks")
    else:
        rng = np.random.default_rng(config.seed)
        points = rng.uniform(bbox[0], bbox[1], (g.init_points, 3))
        seen, _ = gs.hull_test(points, scene.cameras[ids], min_views=config.splat.min_views)
        points = points[seen] if seen.any() else points
        colors = np.full((len(points), 3), 0.5)
        print(f"init: {len(points):,} points uniform in the box, seen by {config.splat.min_views} views")
    points, colors = gs.remove_outliers(points, colors, g.outlier_neighbours, g.outlier_std)
    return points.astype(np.float32), colors


def init_state(config, scene, ids: np.ndarray) -> SplatState:
    points, colors = seed_points(config, scene, ids)
    params, alive = gs.make_params(points, colors, gs.capacity_for(len(points)), config.splat.gaussians.init_opacity)
    return state_from(params, alive)


# ---- the train step ----------------------------------------------------------------------


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
    """A camera near a random training camera looking at the scene centre, jittered as
    RegNeRF's unseen patches are (`sparsefield.datasets.batches.sample_patches`), with
    its resolution times ``scale``."""
    k_view, k_dir, k_rad = jax.random.split(key, 3)
    cams = data.cameras
    v = jax.random.randint(k_view, (), 0, cams.c2w.shape[0])
    offset = cams.c2w[v, :3, 3] - center
    radius = jnp.linalg.norm(offset)
    direction = offset / radius + patches.angle_jitter * jax.random.normal(k_dir, (3,))
    radius = radius * (1.0 + patches.radius_jitter * jax.random.uniform(k_rad, minval=-1.0, maxval=1.0))
    eye = center + radius * direction / jnp.linalg.norm(direction)
    c2w = look_at_jnp(eye[None], center[None], cams.c2w[v, :3, 1][None])[0]
    w, h = cams.width, cams.height
    return Cameras(c2w, cams.fx[v] * scale, cams.fy[v] * scale, cams.cx[v] * scale, cams.cy[v] * scale,
                   width=max(8, int(w * scale)), height=max(8, int(h * scale)))


def ssim_for_training(x: jax.Array, y: jax.Array) -> jax.Array:
    """SSIM with the same 11x11 Gaussian window as `sparsefield.metrics.ssim`, without its
    clipping of ``sigma_xy`` by ``sqrt(sigma_x^2 sigma_y^2)`` (as 3DGS trains): that
    square root has an infinite derivative on flat patches such as a plain background.

    The five local statistics are blurred together, each axis as one product with a
    banded matrix: on a 160x160 crop, forward + backward take 3.7 ms against 59 ms for
    the sum of 11 shifted slices `sparsefield.metrics.ssim` uses, whose backward pads
    every slice (a quarter of a splat train step on a 2-core CPU)."""
    w = metrics._gaussian_1d(metrics.SSIM_SIZE, metrics.SSIM_SIGMA)
    rows, cols = jnp.asarray(_band(x.shape[-3], w)), jnp.asarray(_band(x.shape[-2], w))
    c = x.shape[-1]
    stats = jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1)
    stats = jnp.einsum("hk,kwc->hwc", rows, stats)
    stats = jnp.einsum("hkc,wk->hwc", stats, cols)
    mu_x, mu_y, xx, yy, xy = (stats[..., i * c:(i + 1) * c] for i in range(5))
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = metrics.SSIM_K1**2, metrics.SSIM_K2**2
    return jnp.mean((2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)))


def _band(n: int, w: np.ndarray) -> np.ndarray:
    """``[n - k + 1, n]``: row ``i`` holds the window ``w`` at columns ``i .. i + k - 1``, so
    a product with it is the 'valid' correlation with ``w`` along that axis."""
    k = len(w)
    band = np.zeros((n - k + 1, n), np.float32)
    for i in range(n - k + 1):
        band[i, i:i + k] = w
    return band


def learning_rates(sc: SplatConfig, extent: float, progress) -> dict:
    """Per-parameter learning rates at ``progress`` in [0, 1] (means decay 100x, 3DGS)."""
    m = sc.lr_multiplier
    return {"means": m * sc.lr_means * extent * 0.01 ** progress, "log_scales": m * sc.lr_log_scales,
            "quats": m * sc.lr_quats, "logit_opacities": m * sc.lr_opacity, "sh_dc": m * sc.lr_sh_dc,
            "sh_rest": m * sc.lr_sh_rest}


def make_train_step(config, data: RayData, bbox, factor: int = 1):
    """``train_step(state, key) -> (state, metrics)``, jitted with the state donated;
    ``factor``: crops ``factor`` times larger rendered at 1 / ``factor`` resolution."""
    sc = config.splat
    box = jnp.asarray(bbox, jnp.float32)
    center, diagonal = box.mean(0), float(jnp.linalg.norm(box[1] - box[0]))
    extent = scene_extent(bbox)
    smooth, mask = config.reg.depth_smoothness, config.reg.mask
    optimizer = make_optimizer()

    def render(params, alive, cam, bg, step, offset=None):
        colors = gs.gaussian_colors(params, cam.c2w[:3, 3], gs.active_degree(sc.gaussians, step))
        return rasterize(*gs.activated(params), colors, cam, bg, sc.raster, alive, offset)

    def loss_fn(params, offset, alive, key, step):
        cam, target, bg, alpha = crop_view(data, key, sc.crop, config.random_background, factor)
        out = render(params, alive, cam, bg, step, offset)
        l1 = jnp.mean(jnp.abs(out["rgb"] - target))
        d_ssim = 1.0 - ssim_for_training(out["rgb"], target)
        losses = {"rgb": (1.0 - sc.ssim_weight) * l1 + sc.ssim_weight * d_ssim}
        if mask is not None and alpha is not None:
            losses["mask"] = mask.weight_at(step) * jnp.mean(binary_cross_entropy(out["opacity"], alpha))
        if smooth is not None:
            def unseen_term(params):
                ucam = unseen_camera(data, jax.random.fold_in(key, 1), center, sc.unseen_scale, smooth.patches)
                u = render(params, alive, ucam, jnp.zeros(3), step)
                far = jnp.linalg.norm(ucam.c2w[:3, 3] - center) + 0.5 * diagonal
                depth = (u["depth"] + (1.0 - u["opacity"]) * far) / diagonal
                g = jax.lax.stop_gradient(u["opacity"]) if smooth.opacity_weighted else jnp.ones_like(depth)
                return smooth.weight_at(step) * depth_smoothness(depth[None], g[None])[0]

            losses["depth_smoothness"] = jax.lax.cond(
                step % max(sc.unseen_every, 1) == 0, unseen_term, lambda p: jnp.float32(0.0), params)
        mse = jnp.mean((out["rgb"] - target) ** 2)
        return sum(losses.values()), (losses, mse, out["visible"], max(cam.width, cam.height), out["overflow"])

    def train_step(state: SplatState, key):
        offset = jnp.zeros((state.alive.shape[0], 2))
        (loss, (losses, mse, visible, size, overflow)), (grads, grad2d) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(state.params, offset, state.alive, key, state.step)
        updates, opt_state = optimizer.update(grads, state.opt_state)
        lrs = learning_rates(sc, extent, state.step / config.steps)
        params = {k: v - lrs[k] * updates[k] for k, v in state.params.items()}
        densify = accumulate(state.densify, grad2d, visible, 0.5 * size)
        metrics_ = {"loss": loss, "psnr": -10.0 * jnp.log10(mse), "rays": jnp.float32(0),
                    "gaussians": jnp.sum(state.alive), "overflow": overflow.astype(jnp.float32),
                    **{f"loss_{k}": v for k, v in losses.items()}}
        return SplatState(state.step + 1, params, opt_state, state.alive, densify), metrics_

    return jax.jit(train_step, donate_argnums=0)


# ---- the loop ----------------------------------------------------------------------------


def outside_hull(state: SplatState, hull, min_views: int) -> np.ndarray:
    """``[N]``: Gaussians whose mean is outside ``hull = (cameras, masks or None)``
    (`sparsefield.fields.gaussians.hull_test`)."""
    return ~gs.hull_test(np.asarray(state.params["means"]), *hull, min_views=min_views)[0]


def densify_step(strategy: DensifyStrategy, state: SplatState, step: int, extent: float, config,
                 hull=None) -> SplatState:
    """One densification outside jit (may double the capacity; the step then retraces).
    ``hull = (cameras, masks)`` of the training views prunes Gaussians outside their
    visual hull (`outside_hull`)."""
    info = {"alive": state.alive, "extent": extent, "max_capacity": config.splat.gaussians.max_capacity,
            "key": config.seed * 100003 + step}
    if hull is not None:
        info["outside"] = outside_hull(state, hull, config.splat.min_views)
    params, opt_state, dstate = strategy.update(state.params, state.opt_state, state.densify, step, info)
    return SplatState(state.step, params, opt_state, info["alive"], dstate)


def cull_step(state: SplatState, hull, min_views: int) -> SplatState:
    """Prune (mark dead) the Gaussians outside ``hull`` between and after densifications."""
    alive = np.asarray(state.alive) & ~outside_hull(state, hull, min_views)
    return dataclasses.replace(state, alive=jnp.asarray(alive))


def hull_of(config, scene, ids: np.ndarray):
    """``(cameras, masks)`` of the training views (masks None when the scene has none)
    when hull culling is on, else None."""
    if not config.splat.hull_cull:
        return None
    return scene.cameras[ids], (None if scene.masks is None else np.asarray(scene.masks[ids]))


def save(run: Path, state: SplatState, history: dict, seconds: float) -> None:
    """Checkpoint and training history (with the training time so far)."""
    from sparsefield import evaluate, runs

    history["train_seconds"] = seconds
    runs.save_checkpoint(run, state)
    evaluate.save_history(run, history)


def train_splat(config, scene, train_ids: np.ndarray, logged, run: Path) -> Path:
    """Train a Gaussian scene (resuming ``run`` when it has a checkpoint), then evaluate."""
    from tqdm import tqdm

    from sparsefield import evaluate, runs

    ckpt = runs.latest_checkpoint(run) if (run / "config.json").exists() else None
    if ckpt is not None:
        state = load_state(ckpt)
        print(f"resuming {run} from step {int(state.step)}")
    else:
        state = init_state(config, scene, train_ids)
    runs.save_config(config, run, {
        "train_view_ids": [int(i) for i in logged], "bbox": scene.bbox.tolist(),
        "test_ids": [int(i) for i in evaluate.test_views(config, scene)],
        "num_params": int(jnp.sum(state.alive)) * 59, "devices": jax.device_count()})
    data = make_ray_data(scene, train_ids)
    fine_fn = make_train_step(config, data, scene.bbox)
    coarse_fn = make_train_step(config, data, scene.bbox, factor=2) if config.splat.coarse > 0 else fine_fn
    strategy = DensifyStrategy(config.splat.densify, config.steps)
    extent, base_key = scene_extent(scene.bbox), jax.random.PRNGKey(config.seed + 1)
    hull = hull_of(config, scene, train_ids)
    history = evaluate.load_history(run)
    seconds = history.get("train_seconds", 0.0)
    bar = tqdm(total=config.steps, initial=int(state.step), desc="train splat", dynamic_ncols=True)
    t_last = time.perf_counter()
    try:
        for step in range(int(state.step), config.steps):
            step_fn = coarse_fn if step < config.splat.coarse * config.steps else fine_fn
            state, m = step_fn(state, jax.random.fold_in(base_key, step))
            done = step + 1
            if strategy.due(done):
                state = densify_step(strategy, state, done, extent, config, hull)
            elif hull is not None and (done % config.splat.densify.every == 0 or done == config.steps):
                state = cull_step(state, hull, config.splat.min_views)
            if done % 10 == 0 or done == config.steps:
                m = {k: float(v) for k, v in jax.device_get(m).items()}
                now = time.perf_counter()
                seconds, t_last = seconds + now - t_last, now
                bar.set_postfix(loss=f"{m['loss']:.4f}", psnr=f"{m['psnr']:.2f}", gaussians=f"{m['gaussians']:,.0f}")
                bar.update(done - bar.n)
                history["train"].append(m | {"step": done})
            if done % config.eval_every == 0 and done < config.steps:
                history["eval"].append(quick_eval(SplatRun(run, config, {}, state), scene, done))
                t_last = time.perf_counter()
            if done % config.checkpoint_every == 0:
                save(run, state, history, seconds)
    except KeyboardInterrupt:
        bar.close()
        save(run, state, history, seconds)
        print(f"\ninterrupted at step {int(state.step)}; resume with: sparsefield train --out {run}")
        sys.exit(130)
    bar.close()
    save(run, state, history, seconds)
    print(f"{int(jnp.sum(state.alive)):,} Gaussians after {config.steps} steps in {seconds:.0f} s")
    evaluate.evaluate_run(run, scene=scene, train_seconds=seconds)
    return run


# ---- reading a run back, export ----------------------------------------------------------


def load_state(ckpt: Path) -> SplatState:
    """Restore a splat checkpoint; its capacity is read from the stored arrays."""
    from sparsefield import runs

    with np.load(ckpt) as f:
        capacity = f["arr_1"].shape[0]  # leaves: step, then params in key order
    return runs.load_checkpoint(ckpt, empty_state(capacity))


def quick_eval(loaded: "SplatRun", scene, step: int) -> dict:
    """PSNR on the first ``eval_views`` test views (`sparsefield.evaluate.quick_eval`'s
    curve point for a splat run)."""
    from sparsefield import evaluate

    config = loaded.config
    ids = evaluate.test_views(config, scene)[: config.eval_views]
    values = [evaluate.frame_psnr(loaded.render(scene.cameras[int(i)], scene.background)["rgb"], scene.images[i],
                                  evaluate.metric_mask(config, scene, int(i))) for i in ids]
    return {"step": step, "psnr": float(np.mean(values)) if values else float("nan")}


@functools.partial(jax.jit, static_argnames=("raster",))
def _render(params, alive, camera, background, raster: SplatRenderConfig, degree):
    colors = gs.gaussian_colors(params, camera.c2w[:3, 3], degree)
    return rasterize(*gs.activated(params), colors, camera, background, raster, alive)


@dataclasses.dataclass
class SplatRun:
    """A splat run read back: what `sparsefield.evaluate` needs (``render``, ``state``,
    ``config``, ``facts``)."""

    run: Path
    config: object
    facts: dict
    state: SplatState

    def render(self, camera: Cameras, background) -> dict[str, np.ndarray]:
        camera = jax.tree_util.tree_map(jnp.asarray, camera)
        degree = gs.active_degree(self.config.splat.gaussians, self.state.step)
        out = jax.device_get(_render(self.state.params, self.state.alive, camera,
                                     jnp.asarray(background, jnp.float32), self.config.splat.raster, degree))
        return {"rgb": np.clip(out["rgb"], 0.0, 1.0), "depth": out["depth"], "opacity": out["opacity"],
                "samples": np.zeros_like(out["opacity"])}


def load_run(run: Path, config, facts: dict) -> SplatRun:
    from sparsefield import runs

    ckpt = runs.latest_checkpoint(run)
    if ckpt is None:
        raise runs.UsageError(f"{run}/checkpoints: the run has no checkpoint yet")
    return SplatRun(Path(run), config, facts, load_state(ckpt))


def density_fn(params: dict, alive, neighbours: int = 16):
    """World-space opacity field ``sum_g o_g exp(-(x - mu_g)^T Sigma_g^-1 (x - mu_g) / 2)``
    over each point's ``neighbours`` nearest live means (a KD-tree), for meshing."""
    from scipy.spatial import cKDTree

    from sparsefield.renderers.splatting import covariance3d

    keep = np.asarray(alive)
    means = np.asarray(params["means"])[keep]
    opac = np.asarray(jax.nn.sigmoid(params["logit_opacities"]))[keep]
    inv = np.linalg.inv(np.asarray(covariance3d(jnp.exp(params["log_scales"]), params["quats"]))[keep] + 1e-10 * np.eye(3))
    tree = cKDTree(means)

    def fn(x):
        _, idx = tree.query(np.asarray(x), k=min(neighbours, len(means)))
        d = np.asarray(x)[:, None, :] - means[idx]
        m = np.einsum("nki,nkij,nkj->nk", d, inv[idx], d)
        return np.sum(opac[idx] * np.exp(-0.5 * m), -1).astype(np.float32)

    return fn


def export(loaded: SplatRun, out: Path, resolution: int, threshold: float | None) -> Path:
    """``*.splat.ply``: the live Gaussians in the 3DGS PLY layout; any other mesh format:
    marching cubes of `density_fn` at ``threshold`` (default 0.5), coloured by the
    nearest Gaussian's base colour."""
    from scipy.spatial import cKDTree

    from sparsefield.renderers.mesh import extract_mesh, write_mesh

    params, alive = jax.device_get(loaded.state.params), np.asarray(loaded.state.alive)
    if str(out).lower().endswith(".splat.ply"):
        n = gs.write_ply(out, params, alive)
        print(f"splats: {n:,} Gaussians -> {out}")
        return out
    base = np.clip(0.5 + gs.SH_C0 * params["sh_dc"][alive], 0.0, 1.0)
    tree = cKDTree(params["means"][alive])
    mesh = extract_mesh(density_fn(params, alive), lambda x, d: base[tree.query(x)[1]],
                        np.asarray(loaded.facts["bbox"]), resolution, 0.5 if threshold is None else threshold)
    write_mesh(mesh, str(out))
    print(f"mesh: {len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces -> {out}")
    return out
