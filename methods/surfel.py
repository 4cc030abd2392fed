"""2D Gaussian surfels as a method (``--method surfel``; Huang et al., "2D Gaussian
Splatting for Geometrically Accurate Radiance Fields", SIGGRAPH 2024): flat Gaussian
disks rendered by ray-splat intersection (`sparsefield.renderers.surfels`), trained with
the Gaussian path's pieces and 2DGS's depth distortion and normal consistency
(`surfel_step`).

Shared with ``--method splat``: seeding (`splat_seed`: the visual hull of the masks, the
box, or ``--init-from RUN``; the min-views rule), the train step (`splat_step.TrainStep`:
crops and the coarse phase, the loss terms a rasterizer serves, ``reg.mask``,
``reg.depth-smoothness``, ``reg.consistency``), densification
(`sparsefield.renderers.densify`, splitting in the disk's plane) and visual-hull culling. Seeded disks take random orientations (2DGS)
and the mean distance to their 3 nearest neighbours as both scales. After the last step
the surfels no training view sees are pruned (``--surfel.prune-unseen``).

State: ``step``, ``params`` (``means [N, 3]``, ``log_scales [N, 2]``, ``quats [N, 4]``,
``logit_opacities [N]``, ``sh_dc [N, 3]``, ``sh_rest [N, 15, 3]``), ``optimizer``,
``alive [N]``, ``densify``. Exports: a mesh from the summed opacity of the disks
(`opacity_field`), and ``*.surfel.ply`` in 2DGS's layout (`surfel_ply`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from ..fields import gaussians as gs
from ..losses.base import usable_terms
from ..renderers.densify import DensifyStrategy
from ..renderers.splatting import quat_to_rotmat
from ..renderers.surfels import SurfelRenderConfig, rasterize
from . import surfel_ply
from .base import Method, SurfaceField, TrainViews
from .splat import GaussianTraining, SplatConfig, cull, densify_scene, picked_pixels
from .splat_seed import outside_hull, seed_points
from .splat_step import make_optimizer
from .surfel_step import make_train_step


@dataclasses.dataclass(frozen=True)
class SurfelConfig(GaussianTraining):
    """2D Gaussian surfel training (``--method surfel``): the Gaussian path's settings
    (`sparsefield.methods.splat.GaussianTraining`; a split draws its two disks in the
    parent's plane) and 2DGS's."""

    raster: SurfelRenderConfig = SurfelRenderConfig(tile_size=8, tile_capacity=1024, pairs_per_gaussian=16.0)
    """Rasterizer: 8 x 8 tiles of up to 1024 surfels, as the Gaussian path trains."""
    distortion_weight: float = 0.0
    """alpha of the depth distortion ``sum_ij w_i w_j (z_i - z_j)^2 / D^2`` (2DGS eq. 13;
    z in units of the box diagonal D)."""
    distortion_from: float = 0.1
    """Fraction of the run after which the distortion term is on (2DGS: 3k of 30k steps)."""
    normal_weight: float = 0.05
    """beta of the normal consistency ``sum_i w_i (1 - n_i^T N)`` (2DGS eq. 14: 0.05)."""
    normal_from: float = 0.25
    """Fraction of the run after which normal consistency is on (2DGS: 7k of 30k)."""
    prune_unseen: float = 1.0
    """After the last step, drop the surfels whose blending weights over all the training
    views' pixels sum to less than this (`blend_weights`; 0: keep all): the disks the
    hull seeded inside the object, which no view sees and which would mesh as inner
    shells. Demo scene, 8 views: half the surfels, the same test PSNR, mesh Chamfer
    0.97% -> 0.78% of the box diagonal."""
    thickness: float = 0.004
    """Standard deviation across each disk, in units of the box diagonal, of the opacity
    field that meshes are cut from (`opacity_field`)."""


PARAMS_PER_SURFEL = 58
"""Centre 3, scales 2, rotation 4, opacity 1, SH colour 3 + 45."""


def make_params(points: np.ndarray, colors: np.ndarray, capacity: int, opacity: float, key: int):
    """Surfels at ``points [M, 3]`` (`sparsefield.fields.gaussians.make_params` with two
    scales) in random orientations, padded to ``capacity``; returns ``params, alive``."""
    params, alive = gs.make_params(points, colors, capacity, opacity)
    quats = np.random.default_rng(key).normal(size=(capacity, 4))
    params["quats"] = (quats / np.linalg.norm(quats, axis=-1, keepdims=True)).astype(np.float32)
    params["log_scales"] = params["log_scales"][:, :2]
    return params, alive


def state_from(params: dict, alive) -> dict:
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    return {"step": jnp.zeros((), jnp.int32), "params": params, "optimizer": make_optimizer().init(params),
            "alive": jnp.asarray(alive), "densify": SurfelDensify().init(params["means"].shape[0])}


@dataclasses.dataclass(frozen=True)
class SurfelDensify(DensifyStrategy):
    """3DGS densification for disks: a split draws both new centres from the parent's 2D
    Gaussian in its tangent plane, ``p + R[:, :2] (s * eps)``, scales / 1.6 (2DGS)."""

    @staticmethod
    def _split(p: dict, originals: np.ndarray, copies: np.ndarray, key: int) -> None:
        if len(copies) == 0:
            return
        originals = originals[: len(copies)]
        rng = np.random.default_rng(key)
        tangents = np.asarray(quat_to_rotmat(jnp.asarray(p["quats"][originals])))[:, :, :2]
        std = np.exp(p["log_scales"][originals])
        base = p["means"][originals].copy()
        for idx in (originals, copies):
            p["means"][idx] = base + np.einsum("nij,nj->ni", tangents, rng.normal(size=std.shape) * std)
            p["log_scales"][idx] = np.log(std / 1.6)


class SurfelMethod(Method):
    """``--method surfel`` (see the module docstring)."""

    name = "surfel"
    progress = ("gaussians",)
    supplies = frozenset({"alpha", "patches", "views"})

    def __init__(self, config, bbox):
        super().__init__(config, bbox)
        self.terms, self.skipped = usable_terms(config.reg.terms(), self.supplies)
        self.strategy = SurfelDensify(config.surfel.densify, config.steps)

    # ---- training ------------------------------------------------------------------------

    def init(self, views: TrainViews) -> dict:
        sc = self.config.surfel
        # the Gaussian path's seeding reads its settings from config.splat
        seeding = dataclasses.replace(self.config, splat=SplatConfig(gaussians=sc.gaussians, min_views=sc.min_views))
        points, colors = seed_points(seeding, views)
        params, alive = make_params(points, colors, gs.capacity_for(len(points)), sc.gaussians.init_opacity,
                                    self.config.seed)
        return state_from(params, alive)

    def stage(self, step: int) -> int:
        """The crop factor: 2 (twice as wide at half resolution) in the coarse phase, else 1."""
        return 2 if step < self.config.surfel.coarse * self.config.steps else 1

    def make_step(self, factor: int):
        if not self._steps and self.skipped:
            print(f"surfel: {', '.join('reg.' + n for n in self.skipped)} act on ray samples or field tables; not used")
        return make_train_step(self.config, self.bbox, self.terms, factor)

    def after_step(self, state: dict, done: int, views: TrainViews) -> dict:
        """Densify when due; else, with ``hull_cull``, cull outside the visual hull every
        ``densify.every`` steps and at the end; after the last step, `prune_unseen`."""
        sc = self.config.surfel
        outside = (lambda means: outside_hull(means, views, sc.min_views)) if sc.hull_cull else None
        if self.strategy.due(done):
            return densify_scene(self, sc, state, done, outside)
        if outside is not None and (done % sc.densify.every == 0 or done == self.config.steps):
            state = cull(state, outside)
        return self.prune_unseen(state, views) if done == self.config.steps and sc.prune_unseen > 0 else state

    def prune_unseen(self, state: dict, views: TrainViews) -> dict:
        """Drop the surfels whose summed blending weight over the training views is below
        ``--surfel.prune-unseen`` (pixels)."""
        cams = jax.tree_util.tree_map(jnp.asarray, views.cameras)
        total = sum(np.asarray(blend_weights(state["params"], state["alive"], cams[k], self.config.surfel.raster))
                    for k in range(len(views.ids)))
        alive = np.asarray(state["alive"])
        keep = alive & (total >= self.config.surfel.prune_unseen)
        print(f"surfel: {int(alive.sum() - keep.sum()):,} of {int(alive.sum()):,} surfels unseen in the training views;"
              " pruned")
        return {**state, "alive": jnp.asarray(keep)}

    def num_params(self, state: dict) -> int:
        return int(np.sum(np.asarray(state["alive"]))) * PARAMS_PER_SURFEL

    # ---- using a trained state -----------------------------------------------------------

    def render(self, state: dict, camera, background) -> dict[str, np.ndarray]:
        """``rgb``, ``depth`` (``sum_i w_i z_i``, view depth), ``opacity``, ``normal``
        (``sum_i w_i n_i``, world) and ``distortion`` maps."""
        camera = jax.tree_util.tree_map(jnp.asarray, camera)
        degree = gs.active_degree(self.config.surfel.gaussians, state["step"])
        out = jax.device_get(_render(state["params"], state["alive"], camera, jnp.asarray(background, jnp.float32),
                                     self.config.surfel.raster, degree))
        keys = ("depth", "opacity", "normal", "distortion")
        return {"rgb": np.clip(out["rgb"], 0.0, 1.0)} | {k: out[k] for k in keys}

    def pixel_renderer(self, state: dict):
        """The whole image rasterized, then the pixels picked (all ``valid``)."""
        degree, raster = gs.active_degree(self.config.surfel.gaussians, state["step"]), self.config.surfel.raster
        return picked_pixels(lambda s, camera, bg: _render(s["params"], s["alive"], camera, bg, raster, degree)["rgb"])

    def surface(self, state: dict) -> SurfaceField:
        """The summed opacity of the disks (`opacity_field`), iso-level 0.5, coloured by
        the nearest disk's base colour."""
        params, alive = jax.device_get(state["params"]), np.asarray(state["alive"])
        base = np.clip(0.5 + gs.SH_C0 * params["sh_dc"][alive], 0.0, 1.0)
        tree = cKDTree(params["means"][alive])
        thickness = self.config.surfel.thickness * float(np.linalg.norm(self.bbox[1] - self.bbox[0]))
        return SurfaceField(opacity_field(params, alive, thickness), lambda x, d: base[tree.query(x)[1]], 0.5,
                            self.bbox)

    def export(self, state: dict, out: Path) -> Path | None:
        """``*.surfel.ply``: the live surfels in 2DGS's PLY layout (`surfel_ply`)."""
        if not str(out).lower().endswith(".surfel.ply"):
            return None
        n = surfel_ply.write_ply(out, jax.device_get(state["params"]), np.asarray(state["alive"]))
        print(f"surfels: {n:,} disks -> {out}")
        return Path(out)

    # ---- checkpoints ---------------------------------------------------------------------

    def template(self, arrays: dict) -> dict:
        """Empty surfels at the capacity the arrays hold."""
        capacity = arrays["params/means"].shape[0]
        params, alive = make_params(np.array([[0.0, 0, 0], [1, 1, 1]]), np.zeros((2, 3)), capacity, 0.1, 0)
        return state_from(params, alive)


@functools.partial(jax.jit, static_argnames=("raster",))
def _render(params, alive, camera, background, raster: SurfelRenderConfig, degree):
    colors = gs.gaussian_colors(params, camera.c2w[:3, 3], degree)
    return rasterize(*gs.activated(params), colors, camera, background, raster, alive)


@functools.partial(jax.jit, static_argnames=("raster",))
def blend_weights(params, alive, camera, raster: SurfelRenderConfig):
    """``[N]``: each surfel's blending weights summed over the pixels of ``camera``,
    ``sum_x w_i(x)``: the gradient of the rendered red channel's sum with respect to the
    surfels' red colour."""
    means, scales, quats, opacities = gs.activated(params)
    red = lambda colors: jnp.sum(  # noqa: E731
        rasterize(means, scales, quats, opacities, colors, camera, jnp.zeros(3), raster, alive)["rgb"][..., 0])
    return jax.grad(red)(jnp.zeros_like(means))[:, 0]


def opacity_field(params: dict, alive, thickness: float, neighbours: int = 16):
    """World-space opacity field of the disks given a thickness ``tau`` across them,
    ``sum_k o_k exp(-(u_k^2 + v_k^2 + (w_k / tau)^2) / 2)`` with ``(u_k, v_k)`` the
    point's tangent coordinates in scales and ``w_k = t_w . (x - p_k)`` its distance from
    the disk's plane, over each point's ``neighbours`` nearest live centres, for meshing."""
    keep = np.asarray(alive)
    means = np.asarray(params["means"])[keep]
    opac = np.asarray(jax.nn.sigmoid(params["logit_opacities"]))[keep]
    rot = np.asarray(quat_to_rotmat(jnp.asarray(params["quats"])))[keep]
    inv = 1.0 / np.concatenate([np.exp(np.asarray(params["log_scales"]))[keep], np.full((len(means), 1), thickness)], -1)
    frames = np.swapaxes(rot, -1, -2) * inv[:, :, None]  # rows t_u / s_u, t_v / s_v, t_w / tau
    tree = cKDTree(means)

    def fn(x):
        x = np.asarray(x)
        _, idx = tree.query(x, k=min(neighbours, len(means)))
        idx = idx.reshape(len(x), -1)  # k = 1 drops the neighbour axis
        local = np.einsum("nkij,nkj->nki", frames[idx], x[:, None, :] - means[idx])
        return np.sum(opac[idx] * np.exp(-0.5 * np.sum(local * local, -1)), -1).astype(np.float32)

    return fn
