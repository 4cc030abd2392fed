"""The radiance field as a method (``--method nerf``): a grid encoding and tiny MLPs
(`sparsefield.fields.field.RadianceField`), volume rendering with a sampler for
empty-space skipping, the sparse-view regularizers, HollowNeRF's pruner.

State: ``step``, ``params`` (the field's, plus the sampler's when it trains, e.g. the
occupancy network's under ``params["occupancy"]``), ``optimizer``, ``occupancy`` (the
sampler's own state, e.g. the occupancy grid) and ``pruner`` (ADMM's; None without a
pruner); after compaction also ``rows`` (the table rows kept, `finish`).

A progressive grid (DVGO's voxel grid) trains in stages: the field, its train step and
its tables' shapes follow the stage of the step (`at_step`, `grow`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import checkpoints, parallel
from ..cameras import pixel_rays
from ..datasets.batches import make_ray_data
from ..errors import UsageError
from ..fields import pruning
from ..fields.field import RadianceField
from ..fields.grid import GridTables
from ..losses.base import active_terms, usable_terms
from ..renderers.mesh import DEFAULT_THRESHOLD
from ..renderers.render import render_image, render_rays
from ..renderers.spaces import NDC
from ..samplers.base import EverySample
from .base import Method, SurfaceField, TrainViews
from .nerf_step import make_train_step
from .optim import adam
from .pose_refinement import correction_summary


def at_step(config, step: int):
    """The config as trained at ``step``: a progressive grid (DVGO) at that step's stage."""
    enc = config.field.encoding
    if not hasattr(enc, "stage_at"):
        return config
    staged = enc.at_stage(enc.stage_at(step))
    return dataclasses.replace(config, field=dataclasses.replace(config.field, encoding=staged))


def make_field(config, bbox: np.ndarray) -> RadianceField:
    """The radiance field of a run inside the scene box ``bbox [2, 3]``, or in the
    parameter space of its ``render.space`` (NDC, contracted space)."""
    space = config.render.space
    bbox = bbox if space is None else space.param_box(bbox)
    box = tuple(tuple(float(v) for v in row) for row in np.asarray(bbox))
    return RadianceField(config.field, box)


def make_optimizer(config) -> optax.GradientTransformation:
    """Adam (eps 1e-15) with linear warm-up then exponential decay over the run's steps.
    An encoding may ask for a larger step through ``lr_multiplier`` (DVGO trains its
    voxel grids at 10x the MLP's learning rate); the training cameras' corrections
    (``--pose-refine``) step at their own rate."""
    base = adam(config.optim, config.steps)
    multipliers = {"encoding": getattr(config.field.encoding, "lr_multiplier", 1.0)}
    if config.pose_refine is not None:
        multipliers["poses"] = config.pose_refine.lr / config.optim.lr
    multipliers = {k: m for k, m in multipliers.items() if m != 1.0}
    if not multipliers:
        return base
    scale = optax.stateless(lambda updates, params=None: {
        **updates, **{k: jax.tree_util.tree_map(lambda u: u * m, updates[k])
                      for k, m in multipliers.items() if k in updates}
    })
    return optax.chain(base, scale)


class RadianceFieldMethod(Method):
    """``--method nerf`` (see the module docstring)."""

    name = "nerf"
    refines_poses = True
    supplies = frozenset({"samples", "patches", "alpha", "tables", "views", "keypoints", "density"})

    def __init__(self, config, bbox):
        super().__init__(config, bbox)
        if config.pruner is not None and config.field.saliency is None:
            raise UsageError("--pruner prunes the saliency mask: add field.saliency:saliency-mask")
        if config.pose_refine is not None and jax.process_count() > 1:
            raise UsageError("--pose-refine runs in one process (each process holds a share of the views)")
        self.sampler = config.occupancy if config.occupancy is not None else EverySample()
        missing = set()
        if isinstance(config.render.space, NDC):
            missing.add("views")  # warping through depth needs world distances (`renderers.spaces`)
        if not isinstance(config.field.encoding, GridTables):
            missing.add("tables")  # the frequency encoding has no tables to decay
        supplies = self.supplies - missing
        self.terms, self.skipped = usable_terms(config.reg.terms(), supplies)
        self.mesh = parallel.data_mesh()
        self._fields: dict = {}

    def field(self, step: int) -> RadianceField:
        """The field as trained at ``step``, one object per stage: its bound ``__call__`` is
        a static argument of the compiled renderer, so a new object would compile again."""
        encoding = self.encoding_at(step)
        if encoding not in self._fields:
            self._fields[encoding] = make_field(at_step(self.config, step), self.bbox)
        return self._fields[encoding]

    # ---- training ------------------------------------------------------------------------

    def fresh(self, step: int = 0, num_views: int = 0) -> dict:
        """New parameters, optimiser and sampler state for the config at ``step``; with
        ``--pose-refine``, zero corrections of ``num_views`` training cameras."""
        config = at_step(self.config, step)
        params = self.field(step).init(jax.random.PRNGKey(config.seed))
        if config.pose_refine is not None:
            params["poses"] = jnp.zeros((num_views, 6), jnp.float32)
        occ_params, occ_state = self.sampler.init(jax.random.PRNGKey(config.seed + 2))
        if occ_params is not None:  # trained with the field, by the same optimiser
            params["occupancy"] = occ_params
        admm = config.pruner.init(params["saliency"]) if config.pruner is not None else None
        return {"step": jnp.asarray(step, jnp.int32), "params": params, "optimizer": make_optimizer(config).init(params),
                "occupancy": occ_state, "pruner": admm}

    def init(self, views: TrainViews) -> dict:
        state = self.fresh(num_views=len(views.ids))
        if self.skipped:
            print(f"nerf: {', '.join('reg.' + n for n in self.skipped)} need grid tables or world-space rays, "
                  f"which this field does not have; not used")
        if self.config.render.space is None:  # carving projects world points, not a parameter space's
            occ, note = self.sampler.carve(state["occupancy"], views.cameras, views.masks, views.scene.bbox)
            state["occupancy"] = occ
            if note:
                print(note)
        return state

    def needs_points(self) -> bool:
        return any("keypoints" in term.needs for term in self.terms.values())

    def data(self, views: TrainViews):
        """The training rays on every device; with several processes, each holds its share
        of the views (and keypoint terms are off: the points are of all views)."""
        ids = parallel.process_share(views.ids)
        points = views.points if self.needs_points() and len(ids) == len(views.ids) else None
        if self.needs_points() and (points is None or len(points) == 0):
            self.terms = {n: t for n, t in self.terms.items() if "keypoints" not in t.needs}
            print("keypoint depth: no keypoints to supervise; the term is off")
        return parallel.put_ray_data(make_ray_data(views.scene, ids, points), self.mesh)

    def place(self, state: dict) -> dict:
        return parallel.replicate(state, self.mesh)

    def encoding_at(self, step: int):
        """The encoding as trained at ``step`` (a progressive grid changes with it)."""
        return at_step(self.config, step).field.encoding

    def stage(self, step: int):
        """The encoding at ``step`` and the names of the loss terms still on then
        (`active_terms`)."""
        return self.encoding_at(step), tuple(active_terms(self.terms, step))

    def make_step(self, stage):
        encoding, names = stage
        config = dataclasses.replace(self.config, field=dataclasses.replace(self.config.field, encoding=encoding))
        field = make_field(config, self.bbox)
        terms = {n: self.terms[n] for n in names}
        return make_train_step(config, field, self.bbox, self.sampler, make_optimizer(config), terms, self.mesh)

    def after_step(self, state: dict, done: int, views: TrainViews) -> dict:
        if done >= self.config.steps or self.encoding_at(done) == self.encoding_at(done - 1):
            return state
        return self.place(self.grow(parallel.to_host(state), done))

    def grow(self, state: dict, step: int) -> dict:
        """Move a progressive grid to the stage of ``step``: upsample its tables and restart
        the optimiser moments (as DVGO does), keeping the learning-rate schedule's position."""
        enc = self.config.field.encoding
        params = dict(state["params"])
        params["encoding"] = enc.upsample(params["encoding"], enc.stage_at(step - 1), enc.stage_at(step))
        opt_state = make_optimizer(at_step(self.config, step)).init(params)
        opt_state = jax.tree_util.tree_map(
            lambda x: jnp.full_like(x, step) if x.ndim == 0 and jnp.issubdtype(x.dtype, jnp.integer) else x,
            opt_state,
        )
        print(f"\nvoxel grid: {self.encoding_at(step - 1).resolutions.tolist()} -> {self.encoding_at(step).resolutions.tolist()}")
        return {**state, "params": params, "optimizer": opt_state}

    def finish(self, state: dict) -> tuple[dict, dict]:
        """After pruning: zero the table rows no point with ``m(x) > 0`` reaches (rendering
        is unchanged), keep them as ``rows`` (checkpoints then store the kept rows only)
        and report the pruned parameter count. Without a pruner (or a grid encoding),
        nothing changes."""
        facts = {}
        if "poses" in state["params"]:
            deltas = np.asarray(jax.device_get(state["params"]["poses"]))
            print(correction_summary(deltas))
            facts["pose_correction_deg"] = float(np.degrees(np.linalg.norm(deltas[:, :3], axis=-1)).mean())
        enc = self.config.field.encoding
        if self.config.pruner is None or not hasattr(enc, "spec"):
            return state, facts
        state = parallel.to_host(state)
        live = pruning.live_cells(self.config.field.saliency, state["params"]["saliency"]["mask"])
        keep = pruning.reachable_rows(enc.spec, live)
        state = pruning.compact_tree(state, keep)
        dense = self.num_params(state)
        pruned = pruning.count_pruned_params(state["params"], keep, enc.features)
        print(f"compaction: kept {keep.mean():.1%} of the table rows; {pruned:,} parameters (from {dense:,})")
        return {**state, "rows": keep}, {**facts, "num_params_dense": dense, "num_params": pruned}

    def num_params(self, state: dict) -> int:
        return super().num_params({"params": state["params"]})

    # ---- using a trained state -----------------------------------------------------------

    def occupancy(self, state: dict):
        return self.sampler.occupancy(state["params"].get("occupancy"), state["occupancy"], state["step"])

    def render(self, state: dict, camera, background) -> dict[str, np.ndarray]:
        field = self.field(int(state["step"]))
        return render_image(field.__call__, state["params"], camera, self.bbox, self.occupancy(state),
                            self.config.render, background, parallel.local_mesh())

    def pixel_renderer(self, state: dict):
        """Rays through the pixel centres, marched as in training (no jitter) with a
        budget of 16 field evaluations a ray (twice the default training batch's); rays
        past it are not ``valid``."""
        field, box, config = self.field(int(state["step"])), jnp.asarray(self.bbox, jnp.float32), self.config.render

        def render(state, camera, ix, iy, background):
            origins, directions = pixel_rays(camera, ix + 0.5, iy + 0.5)
            budget = dataclasses.replace(config, sample_budget=16 * ix.shape[0])
            out = render_rays(lambda x, d: field(state["params"], x, d), origins, directions,
                              jnp.broadcast_to(background, origins.shape), box, self.occupancy(state), budget, None)
            return out.rgb, out.complete

        return render

    def surface(self, state: dict) -> SurfaceField:
        params, field = state["params"], self.field(int(state["step"]))
        return SurfaceField(jax.jit(lambda x: field.sigma(params, x)), jax.jit(lambda x, d: field(params, x, d)[1]),
                            DEFAULT_THRESHOLD, self.bbox)

    # ---- checkpoints ---------------------------------------------------------------------

    def template(self, arrays: dict) -> dict:
        step = int(arrays["step"]) if "step" in arrays else int(arrays.get("arr_0", 0))
        return self.fresh(step, len(arrays.get("params/poses", ())))

    def legacy_layout(self) -> tuple[str, ...]:
        return ("step", "params", "optimizer", "occupancy", "pruner")

    def to_arrays(self, state: dict) -> dict:
        """Named arrays; after compaction the encoding tables (and their optimiser moments)
        keep only the rows in ``rows``."""
        arrays = checkpoints.named_arrays(state)
        if "rows" in arrays:
            keep = arrays["rows"]
            for name in filter(is_field_table, arrays):
                arrays[name] = arrays[name][keep]
        return arrays

    def from_arrays(self, arrays: dict, version: int, source) -> dict:
        arrays = dict(arrays)
        if version == 1 and "rows_keep" in arrays:
            count = sum(k.startswith("arr_") for k in arrays)
            arrays = {f"arr_{i}": a for i, a in enumerate(pruning.unpack_rows(arrays, count))}
        keep = arrays.pop("rows", None)
        state = super().from_arrays(scatter_rows(arrays, keep), version, source)
        return state if keep is None else {**state, "rows": keep}


def scatter_rows(arrays: dict, keep: np.ndarray | None) -> dict:
    """Inverse of the row packing of `RadianceFieldMethod.to_arrays`: the kept rows back
    into zero tables ``[L, T, F]``."""
    if keep is None:
        return arrays
    out = dict(arrays)
    for name in filter(is_field_table, arrays):
        full = np.zeros(keep.shape + arrays[name].shape[1:], arrays[name].dtype)
        full[keep] = arrays[name]
        out[name] = full
    return out


def is_field_table(name: str) -> bool:
    """Is a checkpoint array the field's encoding table, or one of its optimiser moments
    (not the occupancy network's)?"""
    return name.endswith("encoding/table") and not name.endswith("occupancy/encoding/table")
