"""Training: the jitted train step, the loop with progress bar and checkpoints, and the
command line (`sparsefield train | render | eval | export | demo`).

``python train.py [flags]`` is the same as ``sparsefield train [flags]``.
"""

from __future__ import annotations

if __name__ == "__main__":  # before JAX is imported: restart with a fast allocator
    from sparsefield.launch import ensure_fast_malloc

    ensure_fast_malloc()

import dataclasses
import functools
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

from jax.sharding import PartitionSpec as P

from sparsefield import evaluate, parallel, runs
from sparsefield.datasets import (
    DatasetError, SceneData, apply_protocol, get_protocol, load_scene, select_views,
)
from sparsefield.datasets.batches import RayData, make_ray_data, sample_patches, sample_rays
from sparsefield.fields import pruning
from sparsefield.fields.field import RadianceField, count_params
from sparsefield.fields.occupancy_net import OccupancyNetConfig, occupancy_losses
from sparsefield.cache import use_compile_cache
from sparsefield.renderers.occupancy_grid import carve_visual_hull, update_occupancy
from sparsefield.renderers.regularizers import unseen_patches
from sparsefield.renderers.render import render_rays
from sparsefield.renderers.spaces import NDC
from sparsefield.runs import RunConfig, TrainState


def make_train_step(config: RunConfig, field: RadianceField, bbox: np.ndarray, mesh=None):
    """Build ``train_step(state, data, key) -> (state, metrics)``, jitted, state donated.

    The loss is a dict of named terms (``rgb`` is the MSE over the rays that fit in the
    sample budget); their sum is minimised and each is logged by name. Besides the
    training rays, the step draws and renders the extra ray sets the loss terms ask for
    (``patch``: unseen-view patches, `unseen_patches`), passed to the terms as
    ``outputs[name]``.

    Data parallel over ``mesh`` (default: every device, `parallel.data_mesh`): each
    device draws, marches and renders its ``R / n`` rays with a ``K / n`` sample budget
    (`jax.shard_map`); the loss terms, gradients and the update see the whole batch.
    Every ray (and patch) draws from its own key ``fold_in(key, global id)``, so one
    device and many give the same batch and, up to summation order, the same step.
    """
    mesh = parallel.data_mesh() if mesh is None else mesh
    shards = mesh.devices.size
    optimizer = runs.make_optimizer(config)
    box = jnp.asarray(bbox, jnp.float32)
    diagonal = float(np.linalg.norm(bbox[1] - bbox[0]))
    space = config.render.space  # the grid lives in its parameter space (`renderers.spaces`)
    grid_box = box if space is None else space.param_box(box)
    step_size = float(jnp.linalg.norm(grid_box[1] - grid_box[0])) / config.render.num_samples
    net = config.occupancy if isinstance(config.occupancy, OccupancyNetConfig) else None
    terms = config.reg.terms()
    ray_sets = {
        "rays": (lambda d, k: sample_rays(d, k, 1, config.random_background),
                 config.rays_per_batch, config.render),
        **extra_ray_sets(config, terms, box, diagonal),
    }
    for name, (_, count, _) in ray_sets.items():
        if count % shards:
            raise runs.UsageError(f"{name}: {count} per step do not split over {shards} devices")

    def render(params, origins, directions, background, grid, keys, step, render_config):
        progress = step / config.steps
        out = render_rays(
            lambda x, d: field(params, x, d, progress), origins, directions,
            background, box, grid, render_config, keys, step,
        )
        packed = out["packed"]
        if space is None:
            out["s"], out["ds"] = out["t"] / diagonal, out["deltas"] / diagonal
            packed["s"], packed["ds"] = packed["t"] / diagonal, packed["deltas"] / diagonal
        else:
            out["s"], out["ds"] = space.distortion_coords(out["t"], out["deltas"], diagonal)
            packed["s"], packed["ds"] = out["s"].ravel()[packed["index"]], out["ds"].ravel()[packed["index"]]
        return out

    def render_shard(params, data, grid, key, step, sharded=True):
        """This device's share of every ray set: drawn, then rendered (with ``sharded``
        False: all of it, outside any `jax.shard_map`)."""
        if data.images.ndim == 5:  # several processes: this device's slice of the views
            data = jax.tree_util.tree_map(lambda a: a[0], data)
        # Varying copies of the replicated parameters: the transpose of this cast sums
        # the gradients over the devices (custom VJPs, like the grid's, need it explicit).
        if sharded:
            params = jax.tree_util.tree_map(lambda p: jax.lax.pcast(p, parallel.AXIS, to="varying"), params)
        shard = jax.lax.axis_index(parallel.AXIS) if sharded else 0
        batch, out, samples = {}, {}, None
        for i, (name, (sample_one, count, render_config)) in enumerate(ray_sets.items()):
            ids = shard * (count // shards) + jnp.arange(count // shards)
            keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(key, i), ids)
            drawn = jax.vmap(lambda k: sample_one(data, k))(keys)
            drawn = {k: v.reshape(-1, *v.shape[2:]) for k, v in drawn.items()}
            batch |= drawn
            prefix = "" if name == "rays" else f"{name}_"
            rays_each = drawn[f"{prefix}origins"].shape[0] // keys.shape[0]
            march_keys = jax.vmap(jax.random.fold_in)(
                jnp.repeat(keys, rays_each, axis=0), jnp.tile(jnp.arange(rays_each), keys.shape[0]))
            background = batch["background"] if name == "rays" else jnp.zeros(3)
            budget = dataclasses.replace(render_config, sample_budget=render_config.sample_budget // shards)
            o = render(params, drawn[f"{prefix}origins"], drawn[f"{prefix}directions"], background,
                       grid, march_keys, step, budget)
            marched = o.pop("num_samples")
            # Global ray ids, so the loss terms can sum packed samples per ray after the
            # shards are gathered; unused slots get the id one past the last ray.
            packed, local = o["packed"], o["complete"].shape[0]
            packed["ray"] = jnp.where(packed["valid"], packed["ray"] + shard * local, local * shards)
            if name == "rays":
                out, samples = out | o, marched
            else:
                out[name] = o
        return batch, out, jax.lax.psum(samples, parallel.AXIS) if sharded else samples

    def loss_fn(params, data, grid, key, step, admm=None):
        data_spec = P(parallel.AXIS) if data.images.ndim == 5 else P()
        grid = runs.occupancy_test(config, params, step, grid)
        if shards == 1:  # no shard_map: its gradient sum would copy every gradient (2% of a CPU step)
            batch, out, samples = render_shard(params, data, grid, key, step, sharded=False)
        else:
            batch, out, samples = jax.shard_map(
                render_shard, mesh=mesh, in_specs=(P(), data_spec, P(), P(), P()),
                out_specs=(P(parallel.AXIS), P(parallel.AXIS), P()),
            )(params, data, grid, key, step)
        keep = out["complete"].astype(jnp.float32)
        rays = jnp.maximum(jnp.sum(keep), 1.0)
        sq_err = jnp.mean((out["rgb"] - batch["rgb"]) ** 2, axis=-1)
        losses = {"rgb": jnp.sum(sq_err * keep) / rays}
        out["encoding"], out["encoding_params"] = field.config.encoding, params["encoding"]
        for name, term in terms.items():
            losses[name] = term.weight_at(step) * term(out, batch, step)
        losses |= pruning.admm_losses(config.pruner, params, admm, step, config.steps)
        aux = {"losses": losses, "rays": jnp.sum(keep), "samples": samples}
        if net is not None:  # LeC2O: the occupancy network learns from the field, and back
            occ = occupancy_losses(net, params["occupancy"], grid_density(params), grid_box, step_size,
                                   jax.random.fold_in(key, len(ray_sets)))
            losses["occupancy"], losses["occupancy_density"] = occ["occupancy"], occ["density"]
            aux["occupied"] = occ["occupied_share"]
        return sum(losses.values()), aux

    def grid_density(params):
        """Densities for the occupancy test, per parameter-space length."""
        if space is None:
            return lambda x: field.sigma(params, x)
        return lambda x: field.sigma(params, x) * space.density_scale(x, box)

    def refresh_grid(state: TrainState, key):
        if state.grid is None:
            return None
        occ = config.occupancy
        density = grid_density(state.params)
        update = lambda g: update_occupancy(occ, g, density, grid_box, step_size, key, state.step)  # noqa: E731
        return jax.lax.cond(state.step % occ.update_every == 0, update, lambda g: g, state.grid)

    def train_step(state: TrainState, data: RayData, key: jax.Array):
        k_rays, k_grid = jax.random.split(key)
        grid = refresh_grid(state, k_grid)
        (loss, aux), grads = jax.value_and_grad(functools.partial(loss_fn, admm=state.pruner), has_aux=True)(
            state.params, data, grid, k_rays, state.step
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        params, grid, admm = pruning.admm_update(
            config.pruner, field.config.saliency, params, grid, state.pruner, state.step, config.steps)
        metrics = {
            "loss": loss,
            "psnr": -10.0 * jnp.log10(aux["losses"]["rgb"]),
            "rays": aux["rays"],
            "samples": aux["samples"],
            **{f"loss_{k}": v for k, v in aux["losses"].items()},
            **({"occupied": aux["occupied"]} if "occupied" in aux else {}),
        }
        return TrainState(state.step + 1, params, opt_state, grid, admm), metrics

    return jax.jit(train_step, donate_argnums=0)


def extra_ray_sets(config: RunConfig, terms: dict, box, diagonal: float) -> dict:
    """``name -> (sample_one(data, key) -> batch entries [1, ...], count, RenderConfig)``
    for the ray sets the loss terms need besides the training rays: ``patch`` (one
    unseen-view patch per key, ``count`` patches) when a term declares ``needs_patches``."""
    spec = unseen_patches(terms)
    if spec is None:
        return {}
    sample = functools.partial(
        sample_patches, center=box.mean(axis=0), scale=diagonal, num_patches=1,
        size=spec.size, stride=spec.stride, angle_jitter=spec.angle_jitter,
        radius_jitter=spec.radius_jitter, target_jitter=spec.target_jitter,
    )
    render_config = dataclasses.replace(config.render, sample_budget=spec.sample_budget)
    return {"patch": (sample, spec.num_patches, render_config)}


# ---- the train command -------------------------------------------------------------------


def resolve_protocol(config: RunConfig) -> RunConfig:
    """With ``--protocol``: the protocol's image scale and number of views replace
    ``--scale`` and ``--views`` (the training and test ids are chosen in `prepare`)."""
    if config.protocol is None:
        return config
    try:
        protocol = get_protocol(config.protocol)
    except ValueError as err:
        raise runs.UsageError(f"--protocol: {err}") from None
    if config.view_ids is not None:
        raise runs.UsageError(f"--protocol {protocol.name} fixes the training views; drop --view-ids")
    return dataclasses.replace(config, scale=protocol.scale, views=protocol.num_views)


def resolve_space(config: RunConfig, scene: SceneData) -> RunConfig:
    """NDC for a protocol that uses it (LLFF), with the reference focal lengths ``f / W``,
    ``f / H`` of NDC taken from the scene's first camera when the config leaves them 0."""
    space = config.render.space
    if space is None and config.protocol is not None and get_protocol(config.protocol).ndc:
        space = NDC()
    if isinstance(space, NDC) and space.focal_x == 0.0:
        cam = scene.cameras[0]
        space = dataclasses.replace(space, focal_x=float(cam.fx) / cam.width, focal_y=float(cam.fy) / cam.height)
    return dataclasses.replace(config, render=dataclasses.replace(config.render, space=space))


def resolve_masks(config: RunConfig, scene: SceneData) -> RunConfig:
    """The mask loss needs alpha masks: without them it is an error, or turned off where
    it asks for that (``if_masks``, the ``fewshot`` preset)."""
    if config.reg.mask is None or scene.masks is not None:
        return config
    where = config.data or scene.root
    if not config.reg.mask.if_masks:
        raise runs.UsageError(f"{where}: the mask loss (reg.mask) needs alpha masks; this dataset has none")
    print(f"{where}: no alpha masks; the mask loss (reg.mask) is off")
    return dataclasses.replace(config, reg=dataclasses.replace(config.reg, mask=None))


def prepare(config: RunConfig) -> tuple[SceneData, np.ndarray, np.ndarray]:
    """Load the scene and choose the training views (raises DatasetError on bad input).

    Returns:
        The scene, the training views as indices into ``scene.images``, and the ids to
        log: positions in the train split, or the protocol's scene indices.
    """
    if config.data is None:
        from sparsefield.datasets.synthetic import demo_scene_path

        config = dataclasses.replace(config, data=demo_scene_path())
    scene = load_scene(config.data, scale=config.scale)
    if config.protocol is not None:
        train_ids, _ = apply_protocol(config.protocol, scene)
        return scene, train_ids, train_ids
    train_ids = scene.split("train")
    picked = select_views(
        np.asarray(scene.cameras.centers)[train_ids],
        n=None if config.view_ids else config.views, ids=config.view_ids,
        source=f"{config.data} (train split)",
    )
    return scene, train_ids[picked], picked


def grow(config: RunConfig, state: TrainState, step: int) -> TrainState:
    """Move a progressive grid to the stage of ``step``: upsample its tables and restart
    the optimiser moments (as DVGO does), keeping the learning-rate schedule's position."""
    enc = config.field.encoding
    old = runs.at_step(config, step - 1).field.encoding
    params = dict(state.params)
    params["encoding"] = enc.upsample(params["encoding"], enc.stage_at(step - 1), enc.stage_at(step))
    opt_state = runs.make_optimizer(config).init(params)
    opt_state = jax.tree_util.tree_map(
        lambda x: jnp.full_like(x, step) if x.ndim == 0 and jnp.issubdtype(x.dtype, jnp.integer) else x,
        opt_state,
    )
    print(f"\nvoxel grid: {old.resolutions.tolist()} -> {runs.at_step(config, step).field.encoding.resolutions.tolist()}")
    return TrainState(state.step, params, opt_state, state.grid, state.pruner)


def train(config: RunConfig) -> Path:
    """Train a run (resuming it if ``config.out`` holds one) and evaluate it."""
    parallel.initialize(config.dist)
    run = Path(config.out)
    resumed = (run / "config.json").exists()
    if resumed:
        saved, _ = runs.load_config(run)
        config = dataclasses.replace(saved, steps=config.steps, dist=config.dist)
    config = resolve_protocol(config)
    scene, train_ids, logged = prepare(config)
    config = resolve_masks(resolve_space(config, scene), scene)
    data_dir = config.data or scene.root
    config = dataclasses.replace(config, data=Path(data_dir))
    where = f"protocol {config.protocol}, scene indices" if config.protocol else "train split"
    print(f"training views ({len(train_ids)}, {where}): {' '.join(str(i) for i in logged)}")
    if config.method == "splat":
        from sparsefield import splat

        return splat.train_splat(config, scene, train_ids, logged, run)

    ckpt = runs.latest_checkpoint(run) if resumed else None
    start = runs.checkpoint_step(ckpt) if ckpt is not None else 0
    field = runs.make_field(runs.at_step(config, start), scene.bbox)
    state = runs.init_state(runs.at_step(config, start), field)
    if ckpt is not None:
        state = runs.load_checkpoint(ckpt, state)
        print(f"resuming {run} from step {int(state.step)}")
    if parallel.is_writer():
        runs.save_config(
            config, run,
            {"train_view_ids": [int(i) for i in logged], "bbox": scene.bbox.tolist(),
             "test_ids": [int(i) for i in evaluate.test_views(config, scene)],
             "num_params": count_params(state.params), "devices": jax.device_count()},
        )
    if ckpt is None:
        state = carve_grid(config, scene, train_ids, state)
    mesh = parallel.data_mesh()
    data = parallel.put_ray_data(make_ray_data(scene, parallel.process_share(train_ids)), mesh)
    state, seconds = fit(config, field, scene, parallel.replicate(state, mesh), data, run, mesh)
    if parallel.is_writer():
        saved, facts = runs.load_config(run)
        if facts["num_params"] != (count := count_params(state.params)):
            runs.save_config(saved, run, facts | {"num_params": count})  # a progressive grid grew
        runs.compact_checkpoint(config, run, state)
        evaluate.evaluate_run(run, scene=scene, train_seconds=seconds)
    return run


def carve_grid(config: RunConfig, scene: SceneData, ids: np.ndarray, state: TrainState) -> TrainState:
    """Carving of the occupancy grid: the visual hull of the training views' alpha masks
    (``carve_with_masks``), and cells that fewer than ``min_views`` views see."""
    occ = config.occupancy
    if state.grid is None or config.render.space is not None:
        return state  # (carving projects world points: not the grid of a parameter space)
    masks = scene.masks[ids] if occ.carve_with_masks and scene.masks is not None else None
    if masks is None and occ.min_views <= 0:
        return state
    grid = carve_visual_hull(state.grid, scene.cameras[ids], masks, scene.bbox, min_seen=occ.min_views)
    what = "visual hull" if masks is not None else f"seen by {occ.min_views} views"
    print(f"{what}: {float(np.mean(np.asarray(grid.allowed))):.1%} of the grid may hold the scene")
    return dataclasses.replace(state, grid=grid)


def fit(config, field, scene, state, data, run: Path, mesh):
    """The training loop over the devices of ``mesh``: progress bar, periodic eval,
    checkpoints, Ctrl-C safety. Process 0 alone evaluates and writes the run folder."""
    from tqdm import tqdm

    staged = runs.at_step(config, int(parallel.to_host(state.step)))
    step_fn = make_train_step(staged, field, scene.bbox, mesh)
    writer = parallel.is_writer()
    base_key = jax.random.PRNGKey(config.seed + 1)
    history = evaluate.load_history(run)
    start = int(parallel.to_host(state.step))
    seconds = history.get("train_seconds", 0.0)
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    bar = tqdm(total=config.steps, initial=start, desc="train", dynamic_ncols=True, disable=not writer)
    t_last, rays_acc = time.perf_counter(), 0.0
    try:
        for step in range(start, config.steps):
            if runs.at_step(config, step) != staged:
                state = parallel.replicate(grow(config, parallel.to_host(state), step), mesh)
                staged = runs.at_step(config, step)
                field = runs.make_field(staged, scene.bbox)
                step_fn = make_train_step(staged, field, scene.bbox, mesh)
            state, metrics = step_fn(state, data, jax.random.fold_in(base_key, step))
            done = step + 1
            if done % 10 == 0 or done == config.steps:
                m = parallel.to_host(metrics)
                now = time.perf_counter()
                seconds += now - t_last
                rays_acc += float(m["rays"]) * 10
                bar.set_postfix(loss=f"{m['loss']:.4f}", psnr=f"{m['psnr']:.2f}",
                                rays_s=f"{rays_acc / max(now - t_last, 1e-9):,.0f}")
                bar.update(done - bar.n)
                t_last, rays_acc = now, 0.0
                history["train"].append({k: float(v) for k, v in m.items()} | {"step": done})
            if done % config.eval_every == 0 and done < config.steps and writer:
                history["eval"].append(evaluate.quick_eval(config, field, scene, parallel.to_host(state), done))
            if (done % config.checkpoint_every == 0 or interrupted) and writer:
                history["train_seconds"] = seconds
                runs.save_checkpoint(run, parallel.to_host(state))
                evaluate.save_history(run, history)
            if interrupted:
                bar.close()
                print(f"\ninterrupted at step {done}; resume with: sparsefield train --out {run}")
                sys.exit(130)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    history["train_seconds"] = seconds
    if writer:
        runs.save_checkpoint(run, parallel.to_host(state))
        evaluate.save_history(run, history)
    return state, seconds


# ---- command line ------------------------------------------------------------------------

COMMANDS = {
    "train": "train a scene (and evaluate it on the test split)",
    "render": "render test views or an orbit to PNG frames and a video",
    "eval": "render the test split and write RUN/metrics.json",
    "export": "export a mesh (.ply, .obj, .glb) from a trained run",
    "demo": "train on the built-in demo scene (--preset fewshot unless another is given), evaluate, "
            "render an orbit, export a mesh",
}


def parse_train_args(args: list[str], preset: str = "default") -> RunConfig:
    """``--preset NAME`` picks the base config (else ``preset``); every other flag
    overrides it."""
    if "--preset" in args:
        i = args.index("--preset")
        preset = args[i + 1] if i + 1 < len(args) else ""
        args = args[:i] + args[i + 2 :]
    if preset not in runs.PRESETS:
        raise runs.UsageError(f"--preset {preset}: unknown preset; choose from {', '.join(runs.PRESETS)}")
    if "--sampler" in args:  # --sampler grid | occupancy-net | none: the occupancy subcommand
        i = args.index("--sampler")
        choice = {"grid": "grid", "occupancy-net": "net", "none": "none"}.get((args + [""])[i + 1])
        if choice is None:
            raise runs.UsageError("--sampler: choose grid, occupancy-net or none")
        args = args[:i] + [f"occupancy:{choice}"] + args[i + 2 :]
    if "--view-ids" in args:  # accept "26,86,2" as well as "26 86 2"
        i = args.index("--view-ids") + 1
        if i < len(args) and "," in args[i]:
            args = args[:i] + [v for v in args[i].split(",") if v] + args[i + 1 :]
    args = runs.component_args(args, runs.PRESETS[preset])
    return tyro.cli(RunConfig, default=runs.PRESETS[preset], args=args, prog="sparsefield train")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        usage = "\n".join(f"  {k:8s} {v}" for k, v in COMMANDS.items())
        print(f"usage: sparsefield COMMAND [flags]   (COMMAND --help for flags)\n\n{usage}")
        raise SystemExit(0 if not argv or argv[0] in ("-h", "--help") else 2)
    command, args = argv[0], argv[1:]
    use_compile_cache()
    try:
        if command == "train":
            train(parse_train_args(args))
        elif command == "demo":
            evaluate.demo(lambda c: train(c), parse_train_args(args, preset="fewshot"))
        else:
            evaluate.run_command(command, args)
    except (DatasetError, runs.UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
