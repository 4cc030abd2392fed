"""3D Gaussians as a method (``--method splat``): seeding for sparse views, the train step
(`splat_step`), densification and visual-hull culling between steps, rendering, meshes
from the summed Gaussian opacity, and the standard 3DGS PLY.

State: ``step``, ``params`` (the Gaussians, `sparsefield.fields.gaussians`), ``optimizer``,
``alive [N]`` and ``densify`` (the densification statistics). Every ``densify.every``
steps to the end, Gaussians are pruned whose mean has left the training masks' visual
hull or that fewer than ``--splat.min-views`` views see (``--splat.hull-cull``).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from ..cameras import image_rays
from ..fields import gaussians as gs
from ..fields import splat_files
from ..fields.gaussians import GaussianConfig
from ..losses.base import usable_terms
from ..renderers.densify import DensifyConfig, DensifyStrategy
from ..renderers.splatting import SplatRenderConfig, quat_to_rotmat, rasterize
from .base import Method, SurfaceField, TrainViews
from .splat_seed import outside_hull, seed_points
from .splat_step import (CoTraining, DepthDistortion, DropGaussian, FlatCap, NeedleCap, OpacityDecay, OpacityNoise,
                         fields_of, make_optimizer, make_train_step)


@dataclasses.dataclass(frozen=True)
class GaussianTraining:
    """What every method of the Gaussian family trains with (``--splat.*``, and
    ``--surfel.*`` where the settings mean the same)."""

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
    steps: 26.14 dB without, 27.22 dB with 0.5 (0.3: 26.89, 0.7: 26.93)."""
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
    24.10 dB on every step, 24.09 dB on every 4th in three quarters of the time)."""
    hull_cull: bool = True
    """Every ``densify.every`` steps to the end of the run, prune Gaussians whose mean
    lies outside the visual hull of the training masks (GaussianObject) or inside the
    frustum of fewer than ``min_views`` training views (without masks, only the latter)."""
    min_views: int = 4
    """Seed and keep Gaussians only where at least this many training views (capped at
    their number) see them: one view does not fix a Gaussian's depth, and such Gaussians
    float in front of novel views. Demo scene, 8 views, 800 steps: 24.02 dB without this
    rule, 25.86 dB with 3 views, 26.15 dB with 4 (5 gives the same run)."""
    drop: DropGaussian | None = None
    """DropGaussian: drop a random share of the Gaussians in each training render."""
    opacity_decay: OpacityDecay | None = None
    """Binocular3DGS's opacity decay after every step."""
    opacity_noise: OpacityNoise | None = None
    """Multiplicative noise on the opacities of every training render (co-adaptation)."""
    needle_cap: NeedleCap | None = None
    """Cap each Gaussian's longest axis at a multiple of its second longest, every step."""


@dataclasses.dataclass(frozen=True)
class SplatConfig(GaussianTraining):
    """Gaussian-splatting training (``--method splat``)."""

    co_training: CoTraining | None = None
    """CoR-GS: a second scene trained beside the first, co-pruning and co-regularization."""
    distortion: DepthDistortion | None = None
    """2DGS's depth distortion on the training crops (surfels have their own)."""
    flat_cap: FlatCap | None = None
    """Cap each Gaussian's shortest axis at a fraction of its second shortest, every step
    (surfels are flat already)."""


PARAMS_PER_GAUSSIAN = 59
"""Mean 3, scales 3, rotation 4, opacity 1, SH colour 3 + 45."""


def scene_extent(bbox) -> float:
    """Half the box diagonal: the length 3DGS scales positions' learning rate with."""
    bbox = np.asarray(bbox, np.float64)
    return 0.5 * float(np.linalg.norm(bbox[1] - bbox[0]))


def state_from(params: dict, alive) -> dict:
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    n = params["means"].shape[0]
    return {"step": jnp.zeros((), jnp.int32), "params": params, "optimizer": make_optimizer().init(params),
            "alive": jnp.asarray(alive), "densify": DensifyStrategy().init(n)}


def empty_state(capacity: int) -> dict:
    """A state of ``capacity`` slots, its values unused (what a checkpoint is read into)."""
    params, alive = gs.make_params(np.zeros((2, 3)) + [[0, 0, 0], [1, 1, 1]], np.zeros((2, 3)), capacity, 0.1)
    return state_from(params, alive)


def co_prune(scenes: dict, co) -> dict:
    """CoR-GS's co-pruning: in each of two scenes, the live Gaussians with no live Gaussian
    of the other scene within ``co.prune_distance`` times the other scene's median
    neighbour spacing die, unless (``co.coverage`` > 0) their mean lies within
    ``co.coverage`` standard deviations of one of the other's Gaussians. One scene:
    unchanged."""
    if co is None or "twin" not in scenes:
        return scenes
    live = {n: np.asarray(s["alive"]) for n, s in scenes.items()}
    means = {n: np.asarray(s["params"]["means"])[live[n]] for n, s in scenes.items()}
    out = {}
    for n, other in (("main", "twin"), ("twin", "main")):
        tree = cKDTree(means[other])
        spacing = float(np.median(tree.query(means[other], k=2)[0][:, 1])) if len(means[other]) > 1 else np.inf
        points = np.asarray(scenes[n]["params"]["means"])
        keep = tree.query(points)[0] <= co.prune_distance * spacing
        if co.coverage > 0:
            keep |= covered(points, scenes[other], live[other], co.coverage, tree)
        out[n] = {**scenes[n], "alive": jnp.asarray(live[n] & keep)}
    return out


def covered(points, scene: dict, alive, sigmas: float, tree: cKDTree | None = None,
            neighbours: int = 16) -> np.ndarray:
    """Which ``points`` lie within ``sigmas`` standard deviations (Mahalanobis distance)
    of one of the ``neighbours`` live Gaussians of ``scene`` whose means are nearest
    (``tree``: a KD-tree of those live means, where the caller has one)."""
    params = jax.device_get(scene["params"])
    means = np.asarray(params["means"])[alive]
    if len(means) == 0:
        return np.zeros(len(points), bool)
    rot = np.asarray(quat_to_rotmat(jnp.asarray(np.asarray(params["quats"])[alive])))
    inv_scales = np.exp(-np.asarray(params["log_scales"])[alive])
    _, idx = (tree or cKDTree(means)).query(points, k=min(neighbours, len(means)))
    idx = idx.reshape(len(points), -1)
    local = np.einsum("nkji,nkj->nki", rot[idx], points[:, None, :] - means[idx]) * inv_scales[idx]
    return np.min(np.sum(local * local, -1), -1) <= sigmas * sigmas


def densify_scene(method, settings: GaussianTraining, scene: dict, step: int, outside) -> dict:
    """One densification of one Gaussian-family scene outside jit by ``method.strategy``
    (may double its capacity; the step then retraces); ``outside(means)``, when given,
    marks what the visual-hull cull removes. ``step`` seeds the random splits."""
    info = {"alive": scene["alive"], "extent": scene_extent(method.bbox),
            "max_capacity": settings.gaussians.max_capacity, "key": method.config.seed * 100003 + step}
    if outside is not None:
        info["outside"] = outside(scene["params"]["means"])
    params, opt_state, dstate = method.strategy.update(scene["params"], scene["optimizer"], scene["densify"],
                                                       step - step % settings.densify.every, info)
    return {**scene, "params": params, "optimizer": opt_state, "alive": info["alive"], "densify": dstate}


def retire_twin(state: dict, co, done: int, steps: int) -> dict:
    """``state`` without its co-trained twin once ``co.until`` of the ``steps`` are done."""
    if co is None or "twin" not in state or done < co.until * steps:
        return state
    return {k: v for k, v in state.items() if k != "twin"}


def cull(scene: dict, outside) -> dict:
    """``scene`` without the live Gaussians whose means ``outside`` marks."""
    return {**scene, "alive": jnp.asarray(np.asarray(scene["alive"]) & ~outside(scene["params"]["means"]))}


class SplatMethod(Method):
    """``--method splat`` (see the module docstring)."""

    name = "splat"
    progress = ("gaussians",)
    native_formats = (".splat.ply", ".spz", ".splat")
    supplies = frozenset({"alpha", "patches", "views", "keypoints", "binocular"})

    def __init__(self, config, bbox):
        super().__init__(config, bbox)
        self.terms, self.skipped = usable_terms(config.reg.terms(), self.supplies)
        self.strategy = DensifyStrategy(config.splat.densify, config.steps)

    # ---- training ------------------------------------------------------------------------

    def needs_points(self) -> bool:
        keypoint_terms = any("keypoints" in term.needs for term in self.terms.values())
        return keypoint_terms or self.config.splat.gaussians.init == "points"

    def data(self, views: TrainViews):
        """The training views on the device, with their keypoints when a term reads them."""
        data = super().data(views)
        if data.keypoints is None and any("keypoints" in t.needs for t in self.terms.values()):
            self.terms = {n: t for n, t in self.terms.items() if "keypoints" not in t.needs}
            print("keypoint depth: no keypoints to supervise; the term is off")
        return data

    def init(self, views: TrainViews) -> dict:
        state = self.seeded(self.config, views)
        if self.config.splat.co_training is not None:  # the twin starts from its own draw of seeds
            twin = self.seeded(dataclasses.replace(self.config, seed=self.config.seed + 1), views)
            state["twin"] = {k: twin[k] for k in ("params", "optimizer", "alive", "densify")}
        return state

    @staticmethod
    def seeded(config, views: TrainViews) -> dict:
        points, colors = seed_points(config, views)
        g = config.splat.gaussians
        params, alive = gs.make_params(points, colors, gs.capacity_for(len(points)), g.init_opacity)
        return state_from(params, alive)

    def stage(self, step: int) -> int:
        """The crop factor: 2 (twice as wide at half resolution) in the coarse phase, else 1."""
        return 2 if step < self.config.splat.coarse * self.config.steps else 1

    def make_step(self, factor: int):
        if not self._steps and self.skipped:
            print(f"splat: {', '.join('reg.' + n for n in self.skipped)} act on ray samples or field tables; not used")
        return make_train_step(self.config, self.bbox, self.terms, factor)

    def after_step(self, state: dict, done: int, views: TrainViews) -> dict:
        """Densify when due (and co-prune the twins); else, with ``hull_cull``, cull
        outside the visual hull every ``densify.every`` steps and at the end. The twin
        leaves at ``co_training.until``."""
        sc = self.config.splat
        state = retire_twin(state, sc.co_training, done, self.config.steps)
        outside = (lambda means: outside_hull(means, views, sc.min_views)) if sc.hull_cull else None
        scenes = fields_of(state)
        if self.strategy.due(done):
            scenes = {n: self.densify(f, done + 7919 * i, outside) for i, (n, f) in enumerate(scenes.items())}
            scenes = co_prune(scenes, sc.co_training)
        elif outside is not None and (done % sc.densify.every == 0 or done == self.config.steps):
            scenes = {n: cull(f, outside) for n, f in scenes.items()}
        else:
            return state
        return {**state, **scenes["main"]} | ({"twin": scenes["twin"]} if "twin" in scenes else {})

    def densify(self, scene: dict, step: int, outside) -> dict:
        """One densification of one scene (`densify_scene`); ``step`` seeds the random splits."""
        return densify_scene(self, self.config.splat, scene, step, outside)

    def num_params(self, state: dict) -> int:
        return int(np.sum(np.asarray(state["alive"]))) * PARAMS_PER_GAUSSIAN

    # ---- using a trained state -----------------------------------------------------------

    def render(self, state: dict, camera, background) -> dict[str, np.ndarray]:
        camera = jax.tree_util.tree_map(jnp.asarray, camera)
        degree = gs.active_degree(self.config.splat.gaussians, state["step"])
        out = jax.device_get(_render(state["params"], state["alive"], camera, jnp.asarray(background, jnp.float32),
                                     self.config.splat.raster, degree))
        return {"rgb": np.clip(out["rgb"], 0.0, 1.0), "depth": out["depth"], "opacity": out["opacity"]}

    def pixel_renderer(self, state: dict):
        """The whole image rasterized, then the pixels picked (all ``valid``)."""
        degree, raster = gs.active_degree(self.config.splat.gaussians, state["step"]), self.config.splat.raster
        return picked_pixels(lambda s, camera, bg: _render(s["params"], s["alive"], camera, bg, raster, degree)["rgb"])

    def surface(self, state: dict) -> SurfaceField:
        """The summed opacity of the Gaussians (`opacity_field`), iso-level 0.5, coloured
        by the nearest Gaussian's base colour."""
        params, alive = jax.device_get(state["params"]), np.asarray(state["alive"])
        base = np.clip(0.5 + gs.SH_C0 * params["sh_dc"][alive], 0.0, 1.0)
        tree = cKDTree(params["means"][alive])
        return SurfaceField(opacity_field(params, alive), lambda x, d: base[tree.query(x)[1]], 0.5, self.bbox)

    def export(self, state: dict, out: Path) -> Path | None:
        """The live Gaussians in the splat file ``out`` names: ``*.splat.ply`` (the 3DGS PLY
        layout, full precision), ``*.spz`` (Niantic's compressed format, version 3, SH up
        to the degree the run has switched on) or ``*.splat`` (antimatter15's 32 bytes a
        Gaussian, base colour only); see `sparsefield.fields.splat_files`."""
        degree = int(gs.active_degree(self.config.splat.gaussians, int(state["step"])))
        writers = dict(zip(self.native_formats, (gs.write_ply, functools.partial(splat_files.write_spz, degree=degree),
                                                 splat_files.write_splat)))
        suffix = next((s for s in writers if str(out).lower().endswith(s)), None)
        if suffix is None:
            return None
        n = writers[suffix](out, jax.device_get(state["params"]), np.asarray(state["alive"]))
        print(f"splats: {n:,} Gaussians -> {out}")
        return Path(out)

    # ---- checkpoints ---------------------------------------------------------------------

    def template(self, arrays: dict) -> dict:
        """Empty Gaussians at the capacity the arrays hold (and a twin's, with co-training)."""
        means = arrays.get("params/means", arrays.get("arr_1"))  # format 1: step, then params by key
        state = empty_state(means.shape[0])
        if "twin/params/means" in arrays:
            twin = empty_state(arrays["twin/params/means"].shape[0])
            state["twin"] = {k: twin[k] for k in ("params", "optimizer", "alive", "densify")}
        return state

    def legacy_layout(self) -> tuple[str, ...]:
        return ("step", "params", "optimizer", "alive", "densify")


@functools.partial(jax.jit, static_argnames=("raster",))
def _render(params, alive, camera, background, raster: SplatRenderConfig, degree):
    """One camera's colour, opacity and depth; depth as distance along each pixel's unit
    ray (the method protocol's meaning), from the rasterizer's view depth ``z``."""
    colors = gs.gaussian_colors(params, camera.c2w[:3, 3], degree)
    out = rasterize(*gs.activated(params), colors, camera, background, raster, alive)
    _, directions = image_rays(camera)
    cos = -directions @ camera.c2w[:3, 2]  # the camera looks down -Z
    return {**out, "depth": out["depth"] / jnp.maximum(cos, 1e-6)}


def picked_pixels(render_image):
    """A pixel renderer (`Method.pixel_renderer`) over a whole-image one,
    ``render_image(state, camera, background) -> rgb [H, W, 3]``: the image rasterized,
    then the pixels picked, all ``valid``."""
    def render(state, camera, ix, iy, background):
        return render_image(state, camera, background)[iy, ix], jnp.ones(ix.shape, bool)

    return render


def opacity_field(params: dict, alive, neighbours: int = 16):
    """World-space opacity field ``sum_g o_g exp(-(x - mu_g)^T Sigma_g^-1 (x - mu_g) / 2)``
    over each point's ``neighbours`` nearest live means (a KD-tree), for meshing."""
    keep = np.asarray(alive)
    means = np.asarray(params["means"])[keep]
    opac = np.asarray(jax.nn.sigmoid(params["logit_opacities"]))[keep]
    rot = np.asarray(quat_to_rotmat(jnp.asarray(params["quats"])), np.float64)[keep]
    inv_scales = np.exp(-np.asarray(params["log_scales"], np.float64))[keep]
    frames = np.swapaxes(rot, -1, -2) * inv_scales[:, :, None]  # rows R[:, i] / s_i: Sigma^-1 = F^T F, exactly PD
    tree = cKDTree(means)

    def fn(x):
        x = np.asarray(x)
        _, idx = tree.query(x, k=min(neighbours, len(means)))
        idx = idx.reshape(len(x), -1)  # k = 1 drops the neighbour axis
        local = np.einsum("nkij,nkj->nki", frames[idx], x[:, None, :] - means[idx])
        return np.sum(opac[idx] * np.exp(-0.5 * np.sum(local * local, -1)), -1).astype(np.float32)

    return fn
