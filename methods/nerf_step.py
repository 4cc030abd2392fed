"""The radiance field's jitted train step (`TrainStep`), as named stages:

    refresh the sampler  ->  draw and render every ray set  ->  losses  ->  optimiser
    ->  pruner

Ray sets are the training rays plus whatever the loss terms declare they need (``patch``:
unseen-view patches for terms that need ``patches``). The loss is a dict of named terms
(``rgb``: the MSE over the rays that fit in the sample budget; each regularizer
``weight_at(step) * term(inputs)``; the pruner's and the sampler's own terms); their sum
is minimised and each is logged as ``loss_NAME``.

Data parallel over ``mesh`` (default: every device, `sparsefield.parallel.data_mesh`):
each device draws, marches and renders its ``R / n`` rays with a ``K / n`` sample budget
(`jax.shard_map`); the loss terms, gradients and the update see the whole batch. Every
ray (and patch) draws from its own key ``fold_in(key, global id)``, so one device and
many give the same batch and, up to summation order, the same step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from .. import parallel
from ..datasets.batches import sample_keypoints, sample_patches, sample_rays
from ..fields import pruning
from ..losses.base import LossInputs
from ..losses.keypoints import KeypointTargets
from ..losses.smoothness import unseen_patches
from ..renderers.render import RenderConfig, RenderedRays, render_rays
from .pose_refinement import refined_rays, without_common_motion


class RaySet(NamedTuple):
    """One set of rays a step draws and renders: ``draw(data, key) -> batch entries``
    (``[1, ...]`` per key), how many keys per step, and how it is rendered."""

    draw: Callable
    count: int
    render: RenderConfig
    prefix: str


def ray_sets(config, terms: dict, box: np.ndarray, diagonal: float) -> dict[str, RaySet]:
    """The training rays, the unseen-view patches when a term needs ``patches``, and rays
    through keypoints when a term needs ``keypoints``."""
    sets = {"rays": RaySet(lambda d, k: sample_rays(d, k, 1, config.random_background),
                           config.rays_per_batch, config.render, "")}
    spec = unseen_patches(terms)
    if spec is not None:
        draw = functools.partial(
            sample_patches, center=jnp.asarray(box).mean(axis=0), scale=diagonal, num_patches=1,
            size=spec.size, stride=spec.stride, angle_jitter=spec.angle_jitter,
            radius_jitter=spec.radius_jitter, target_jitter=spec.target_jitter,
        )
        budget = dataclasses.replace(config.render, sample_budget=spec.sample_budget)
        sets["patch"] = RaySet(draw, spec.num_patches, budget, "patch_")
    keypoints = next((t for t in terms.values() if "keypoints" in t.needs), None)
    if keypoints is not None:
        budget = dataclasses.replace(config.render, sample_budget=keypoints.sample_budget)
        sets["keypoint"] = RaySet(lambda d, k: sample_keypoints(d, k, 1), keypoints.rays, budget, "keypoint_")
    return sets


def make_train_step(config, field, bbox: np.ndarray, sampler, optimizer, terms: dict, mesh=None):
    """``train_step(state, data, key) -> (state, metrics)``, jitted with the state donated.

    Args:
        config: the run config (`sparsefield.config.RunConfig`).
        field: the `RadianceField` at this stage of training.
        bbox: ``[2, 3]`` scene box.
        sampler: the run's `sparsefield.samplers.base.Sampler`.
        optimizer: the optax transformation of the parameters.
        terms: ``name -> loss term`` this step evaluates.
        mesh: devices to shard the rays over (default: all).
    """
    step = TrainStep(config, field, np.asarray(bbox, np.float64), sampler, optimizer, terms,
                     parallel.data_mesh() if mesh is None else mesh)
    return jax.jit(step, donate_argnums=0)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainStep:
    """One training step of the radiance field; calling it runs the stages in order
    (`__call__`). Built by `make_train_step`; its fields are fixed for a stage of
    training."""

    config: object
    field: object
    bbox: np.ndarray
    sampler: object
    optimizer: object
    terms: dict
    mesh: object

    def __post_init__(self):
        # Derived constants, computed here, outside any trace (cached on the instance).
        self.diagonal, self.box, self.sampler_box, self.step_size, self.patch_shape  # noqa: B018
        for name, s in self.ray_sets.items():
            if s.count % self.shards:
                raise ValueError(f"{name}: {s.count} per step do not split over {self.shards} devices")

    @functools.cached_property
    def ray_sets(self) -> dict[str, RaySet]:
        return ray_sets(self.config, self.terms, self.bbox, self.diagonal)

    @property
    def shards(self) -> int:
        return self.mesh.devices.size

    @functools.cached_property
    def diagonal(self) -> float:
        return float(np.linalg.norm(self.bbox[1] - self.bbox[0]))

    @functools.cached_property
    def box(self) -> jax.Array:
        return jnp.asarray(self.bbox, jnp.float32)

    @functools.cached_property
    def sampler_box(self) -> jax.Array:
        """The box the sampler covers: the scene box, or the scene space's parameter box."""
        space = self.config.render.space
        return self.box if space is None else space.param_box(self.box)

    @functools.cached_property
    def step_size(self) -> float:
        """The sampler's typical sample spacing: its box diagonal over the samples per ray."""
        return float(jnp.linalg.norm(self.sampler_box[1] - self.sampler_box[0])) / self.config.render.num_samples

    @functools.cached_property
    def patch_shape(self) -> tuple[int, int, int]:
        spec = unseen_patches(self.terms)
        return (0, 0, 0) if spec is None else (spec.num_patches, spec.size, spec.size)

    # ---- the stages ----------------------------------------------------------------------

    def __call__(self, state: dict, data, key: jax.Array):
        """Refresh the sampler, render and score the rays (`losses`), update the
        parameters, prune."""
        k_rays, k_sampler = jax.random.split(key)
        occupancy = self.sampler.update(state["occupancy"], self.density_for_sampler(state["params"]),
                                        self.sampler_box, self.step_size, k_sampler, state["step"])
        state = {**state, "occupancy": occupancy}
        (loss, (losses, metrics, rays, marched)), grads = jax.value_and_grad(self.losses, has_aux=True)(
            state["params"], data, state, k_rays)
        updates, opt_state = self.optimizer.update(grads, state["optimizer"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        if "poses" in params:  # kept free of a common motion of the world (Adam's scaling can bring one back)
            params = {**params, "poses": without_common_motion(params["poses"], data.cameras.c2w, self.diagonal)}
        params, occupancy, admm = pruning.admm_update(self.config.pruner, self.field.config.saliency, params, occupancy,
                                                      state["pruner"], state["step"], self.config.steps)
        metrics = {"loss": loss, "psnr": -10.0 * jnp.log10(losses["rgb"]), "rays": rays, "samples": marched,
                   **{f"loss_{k}": v for k, v in losses.items()}, **metrics}
        new = {"step": state["step"] + 1, "params": params, "optimizer": opt_state, "occupancy": occupancy,
               "pruner": admm}
        return new, metrics

    def losses(self, params, data, state: dict, key):
        """``(sum, (losses by name, sampler metrics, complete rays, samples marched))``:
        the colour loss, every term, the pruner's and the sampler's own terms."""
        step = state["step"]
        occupancy = self.sampler.occupancy(params.get("occupancy"), state["occupancy"], step)
        batch, rendered, marched = self.render_batch(params, data, occupancy, key, step)
        rays = rendered["rays"]
        views = data if data.images.ndim == 4 else None  # (several processes: each holds a share)
        keypoints = None
        if "keypoint" in rendered:
            keypoints = KeypointTargets(rendered["keypoint"], batch["keypoint_distance"], batch["keypoint_weight"])
        density = (self.density_for_sampler(params), self.sampler_box, self.step_size,
                   jax.random.fold_in(key, len(self.ray_sets) + 1))
        inputs = LossInputs(rays, batch, step, rendered.get("patch"), self.patch_shape,
                            self.field.config.encoding, params["encoding"], views, keypoints, density=density)
        losses = {"rgb": colour_loss(rays, batch)}
        losses |= {name: term.weight_at(step) * term(inputs) for name, term in self.terms.items()}
        losses |= pruning.admm_losses(self.config.pruner, params, state["pruner"], step, self.config.steps)
        extra, metrics = self.sampler.losses(params.get("occupancy"), self.density_for_sampler(params),
                                             self.sampler_box, self.step_size,
                                             jax.random.fold_in(key, len(self.ray_sets)), step)
        losses |= extra
        return sum(losses.values()), (losses, metrics, jnp.sum(rays.complete), marched)

    def render_batch(self, params, data, occupancy, key, step):
        """Every ray set, drawn and rendered over the devices."""
        if self.shards == 1:  # no shard_map: its gradient sum would copy every gradient (2% of a CPU step)
            return self.render_shard(params, data, occupancy, key, step, sharded=False)
        data_spec = P(parallel.AXIS) if data.images.ndim == 5 else P()
        return jax.shard_map(
            self.render_shard, mesh=self.mesh, in_specs=(P(), data_spec, P(), P(), P()),
            out_specs=(P(parallel.AXIS), P(parallel.AXIS), P()),
        )(params, data, occupancy, key, step)

    def render_shard(self, params, data, occupancy, key, step, sharded=True):
        """This device's share of every ray set: drawn, then rendered (with ``sharded``
        False: all of it, outside any `jax.shard_map`)."""
        if data.images.ndim == 5:  # several processes: this device's slice of the views
            data = jax.tree_util.tree_map(lambda a: a[0], data)
        # Varying copies of the replicated parameters: the transpose of this cast sums
        # the gradients over the devices (custom VJPs, like the grid's, need it explicit).
        if sharded:
            params = jax.tree_util.tree_map(lambda p: jax.lax.pcast(p, parallel.AXIS, to="varying"), params)
        shard = jax.lax.axis_index(parallel.AXIS) if sharded else 0
        progress = step / self.config.steps
        field_fn = lambda x, d: self.field(params, x, d, progress)  # noqa: E731
        batch, rendered, marched = {}, {}, None
        for i, (name, s) in enumerate(self.ray_sets.items()):
            drawn, march_keys = self.draw(s, data, jax.random.fold_in(key, i), shard)
            if name == "rays" and "poses" in params:  # --pose-refine: each ray moves with its camera
                deltas = without_common_motion(params["poses"], data.cameras.c2w, self.diagonal)
                drawn["origins"], drawn["directions"] = refined_rays(
                    deltas, drawn["view"], data.cameras.c2w, drawn["origins"], drawn["directions"], self.diagonal)
            batch |= drawn
            background = batch["background"] if name == "rays" else jnp.zeros(3)
            budget = dataclasses.replace(s.render, sample_budget=s.render.sample_budget // self.shards)
            out = render_rays(field_fn, drawn[f"{s.prefix}origins"], drawn[f"{s.prefix}directions"], background,
                              self.box, occupancy, budget, march_keys, step, self.diagonal)
            rendered[name] = globalise_ray_ids(out, shard, self.shards)
            marched = out.marched if name == "rays" else marched
        return batch, rendered, jax.lax.psum(marched, parallel.AXIS) if sharded else marched

    def draw(self, s: RaySet, data, key, shard):
        """This shard's share of a ray set, each draw from its own key ``fold_in(key, global
        id)``, and one marching key per ray."""
        ids = shard * (s.count // self.shards) + jnp.arange(s.count // self.shards)
        keys = jax.vmap(jax.random.fold_in, (None, 0))(key, ids)
        drawn = jax.vmap(lambda k: s.draw(data, k))(keys)
        drawn = {k: v.reshape(-1, *v.shape[2:]) for k, v in drawn.items()}
        rays_each = drawn[f"{s.prefix}origins"].shape[0] // keys.shape[0]
        march_keys = jax.vmap(jax.random.fold_in)(
            jnp.repeat(keys, rays_each, axis=0), jnp.tile(jnp.arange(rays_each), keys.shape[0]))
        return drawn, march_keys

    def density_for_sampler(self, params):
        """Densities per unit length of the sampler's space."""
        space = self.config.render.space
        if space is None:
            return lambda x: self.field.sigma(params, x)
        return lambda x: self.field.sigma(params, x) * space.density_scale(x, self.box)


def colour_loss(rays: RenderedRays, batch: dict) -> jax.Array:
    """Mean squared error of the rays that fit in the sample budget."""
    keep = rays.complete.astype(jnp.float32)
    sq_err = jnp.mean((rays.rgb - batch["rgb"]) ** 2, axis=-1)
    return jnp.sum(sq_err * keep) / jnp.maximum(jnp.sum(keep), 1.0)


def globalise_ray_ids(rays: RenderedRays, shard, shards: int) -> RenderedRays:
    """Global ray ids and sample indices in the packed samples, so the loss terms can sum
    packed samples per ray (and scatter them into ``[R, S]``) after the shards are
    gathered; unused slots get the ray id one past the last ray. The scalar ``marched``
    is dropped (it cannot be sharded along the ray axis)."""
    s, (local, num_samples) = rays.samples, rays.t.shape
    ray = jnp.where(s.valid, s.ray + shard * local, local * shards)
    index = s.index + shard * local * num_samples
    return dataclasses.replace(rays, samples=dataclasses.replace(s, ray=ray, index=index), marched=None)
