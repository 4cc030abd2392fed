"""Training: one loop for every method. It owns what is the same for all of them: the
scene and the training views, resuming, checkpoints (with the history inside them),
the progress bar, the history, the evaluation cadence, signals (Ctrl-C and SIGTERM save
a checkpoint and stop), the divergence guard and the final evaluation. What differs
lives in the method (`sparsefield.methods`).

``python train.py [flags]`` is the same as ``sparsefield train [flags]``.
"""

if __name__ == "__main__" and not __package__:  # `python train.py`: run as `sparsefield train`
    import runpy
    import sys

    sys.argv[1:1] = ["train"]
    runpy.run_module("sparsefield.launch", run_name="__main__")
    raise SystemExit(0)

import dataclasses
import math
import signal
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from . import checkpoints, parallel
from .alignment import PoseAlignment
from .config import RunConfig, check_config, get_path
from .datasets import SceneData, apply_protocol, get_protocol, load_scene, select_views, with_box
from .datasets.synthetic import demo_scene_path
from .errors import UsageError
from .evaluate import evaluate_run, quick_eval, test_views
from .files import remove_stale_temps
from .methods import Method, TrainViews
from .renderers.spaces import NDC
from .runs import (LoadedRun, build_method, check_out_folder, is_run, load_config, load_history, load_run,
                   save_config, save_history)

RESUMABLE = ("steps", "dist")
"""Settings a resumed run takes from the command line; the rest come from its config.json."""


class Diverged(RuntimeError):
    """Training produced a non-finite loss or parameters (one-line message)."""


# ---- what a run trains on ----------------------------------------------------------------


def resolve_protocol(config: RunConfig) -> RunConfig:
    """With ``--protocol``: the protocol's image scale and number of views replace
    ``--scale`` and ``--views`` (the training and test ids are chosen in `prepare`)."""
    if config.protocol is None:
        return config
    try:
        protocol = get_protocol(config.protocol)
    except ValueError as err:
        raise UsageError(f"--protocol: {err}") from None
    if config.view_ids is not None:
        raise UsageError(f"--protocol {protocol.name} fixes the training views; drop --view-ids")
    return dataclasses.replace(config, scale=protocol.scale, views=protocol.num_views)


def resolve_space(config: RunConfig, scene: SceneData) -> RunConfig:
    """NDC for a protocol that uses it (LLFF), with the reference focal lengths ``f / W``,
    ``f / H`` of NDC taken from the scene's first camera when the config leaves them 0."""
    space = config.render.space
    if space is None and scene.outer_bbox is not None:
        print(f"{config.data}: the file says the scene reaches beyond its box (instant-ngp's aabb_scale); "
              f"what lies outside is rendered as the background colour")
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
        raise UsageError(f"{where}: the mask loss (reg.mask) needs alpha masks; this dataset has none")
    print(f"{where}: no alpha masks; the mask loss (reg.mask) is off")
    return dataclasses.replace(config, reg=dataclasses.replace(config.reg, mask=None))


def prepare(config: RunConfig) -> tuple[RunConfig, TrainViews, np.ndarray]:
    """Load the scene and choose the training views (raises DatasetError on bad input).

    Returns:
        The config resolved against the scene (absolute ``data`` path, scene space, mask
        loss), the training views, and the ids to log: positions in the train split, or
        the protocol's scene indices.
    """
    config = resolve_protocol(config)
    data = Path(config.data) if config.data is not None else demo_scene_path()
    scene = load_scene(data, scale=config.scale)
    if config.bbox is not None:
        scene = with_box(scene, config.bbox)
    config = dataclasses.replace(config, data=data.resolve())
    config = resolve_masks(resolve_space(config, scene), scene)
    if config.protocol is not None:
        ids, _ = apply_protocol(config.protocol, scene)
        return config, TrainViews(scene, ids, triangulation=config.points), ids
    train_ids = scene.split("train")
    picked = select_views(np.asarray(scene.cameras.centers)[train_ids], n=None if config.view_ids else config.views,
                          ids=config.view_ids, source=f"{config.data} (train split)")
    return config, TrainViews(scene, train_ids[picked], triangulation=config.points), picked


def resume_config(config: RunConfig, run: Path, given: frozenset[str]) -> RunConfig:
    """The config of the run in ``run`` with the `RESUMABLE` settings of ``config``; the
    other settings the user gave (``given``: flag paths) are named as ignored when they
    differ from the saved ones."""
    saved, _ = load_config(run)
    ignored = sorted(p for p in given if p.split(".")[0] not in RESUMABLE and p != "out"
                     and get_path(config, p) != get_path(saved, p))
    if ignored:
        print(f"resuming {run}: its config.json wins; ignored: {', '.join('--' + p for p in ignored)}")
    return dataclasses.replace(saved, **{name: getattr(config, name) for name in RESUMABLE})


# ---- the run -----------------------------------------------------------------------------


def train(config: RunConfig, given: frozenset[str] = frozenset(), watch=None) -> Path:
    """Train a run (resuming it if ``config.out`` holds one) and evaluate it.

    Args:
        config: the run config as the user gave it.
        given: the flag paths the user set (to name the ignored ones on a resume).
        watch: called once training is about to start with the run as it stands (a
            `LoadedRun`) and the scene; returns a callable that receives the state every
            `WATCH_EVERY` steps and at the end (``train --view``'s live viewer).
    """
    with Interrupts() as stop:
        parallel.initialize(config.dist)
        run = Path(config.out)
        check_out_folder(run)
        resumed = is_run(run)
        config = check_devices(check_config(resume_config(config, run, given) if resumed else config),
                               jax.device_count())
        config, views, logged = prepare(config)
        where = f"protocol {config.protocol}, scene indices" if config.protocol else "train split"
        print(f"training views ({len(views.ids)}, {where}): {' '.join(str(i) for i in logged)}")
        if config.init_from is not None:
            seed = load_run(config.init_from)
            views = dataclasses.replace(views, seed=seed.method.surface(seed.state))
        method = build_method(config, views.scene.bbox)
        state, history = start_state(method, run, views) if resumed else (None, None)
        if state is None:
            state, history = method.init(views), {"train": [], "eval": []}
        stop.check()
        writer = parallel.is_writer()
        if writer:  # the first write: temporary files of a killed write go first
            remove_stale_temps(run)
            save_config(config, run, {
                "train_view_ids": [int(i) for i in logged], "bbox": views.scene.bbox.tolist(),
                "test_ids": [int(i) for i in test_views(config, views.scene)],
                "num_params": method.num_params(state), "devices": jax.device_count()})
        facts = load_config(run)[1] if writer else {}
        live = watch(LoadedRun(run, config, facts, method, parallel.to_host(state)), views.scene) if watch else None
        state, seconds = fit(method, state, views, run, history, stop, live)
    if writer:
        finish(method, state, run, history)
        # Refined training cameras no longer agree with the unrefined test cameras: score
        # each test camera aligned to its image (`sparsefield.alignment`).
        align = PoseAlignment() if config.pose_refine is not None else None
        evaluate_run(run, scene=views.scene, train_seconds=seconds, align=align)
    return run


def check_devices(config: RunConfig, devices: int) -> RunConfig:
    """The training rays are split evenly over the devices.

    Raises:
        UsageError: ``--rays-per-batch`` is not a multiple of ``devices``.
    """
    if config.rays_per_batch % devices:
        raise UsageError(f"--rays-per-batch {config.rays_per_batch}: must be a multiple of the {devices} devices "
                         f"the rays are split over")
    return config


def start_state(method: Method, run: Path, views: TrainViews) -> tuple[dict | None, dict | None]:
    """The state and history of the newest readable checkpoint of ``run`` (None, None
    when it has none yet).

    Raises:
        CheckpointError: no checkpoint reads, or the newest is another method's.
    """
    found = checkpoints.read_latest(run, method=method.name)
    if found is None:
        return None, None
    path, version, arrays, history = found
    state = method.from_arrays(arrays, version, path)
    print(f"resuming {run} from step {int(np.asarray(state['step']))}")
    history = history if history is not None else load_history(run)
    step = int(np.asarray(state["step"]))
    history["train"] = [h for h in history["train"] if h["step"] <= step]
    history["eval"] = [h for h in history["eval"] if h["step"] <= step]
    return state, history


def finish(method: Method, state: dict, run: Path, history: dict) -> None:
    """After the last step: the method's finish (e.g. compaction), the final parameter
    count in ``config.json`` and the final checkpoint."""
    host, facts = method.finish(parallel.to_host(state))
    saved, old = load_config(run)
    save_config(saved, run, old | {"num_params": method.num_params(host)} | facts)
    save(method, host, run, history)


WATCH_EVERY = 50
"""Steps between the states a live viewer receives during training."""


def fit(method: Method, state: dict, views: TrainViews, run: Path, history: dict, stop: "Interrupts", live=None):
    """The training loop: steps, host-side updates, progress, history, periodic
    evaluation and checkpoints. Process 0 alone evaluates and writes the run folder.

    Returns:
        The trained state (the final checkpoint is `finish`'s) and the training time in
        seconds (periodic evaluations and checkpoint writes excluded).
    """
    config = method.config
    writer = parallel.is_writer()
    data, state = method.data(views), method.place(state)
    base_key = jax.random.PRNGKey(config.seed + 1)
    start = int(parallel.to_host(state["step"]))
    seconds = history.get("train_seconds", 0.0)
    bar = tqdm(total=config.steps, initial=start, desc=f"train {method.name}", dynamic_ncols=True,
               disable=not writer)
    t_last, logged = time.perf_counter(), start
    with bar:
        for step in range(start, config.steps):
            state, metrics = method.train_step(step)(state, data, jax.random.fold_in(base_key, step))
            done = step + 1
            state = method.after_step(state, done, views)
            if live is not None and (done % WATCH_EVERY == 0 or done == config.steps):
                live(state)
            if done % 10 == 0 or done == config.steps or stop.requested:
                m = log_step(parallel.to_host(metrics), done)
                now = time.perf_counter()
                rays_per_second = m.get("rays", 0.0) * (done - logged) / max(now - t_last, 1e-9)
                seconds, t_last, logged = seconds + now - t_last, now, done
                show_progress(bar, method, m, rays_per_second, done)
                history["train"].append(m)
            if writer and done % config.eval_every == 0 and done < config.steps:
                host = parallel.to_host(state)
                history["eval"].append(quick_eval(LoadedRun(run, config, {}, method, host), views.scene, done))
                t_last, logged = time.perf_counter(), done
            if writer and (done % config.checkpoint_every == 0 or stop.requested):
                history["train_seconds"] = seconds
                save(method, state, run, history)
                t_last, logged = time.perf_counter(), done
            if stop.requested:
                bar.close()
                print(f"\n{stop.name} at step {done}; resume with: sparsefield train --out {run}")
                raise SystemExit(stop.exit_code)
    history["train_seconds"] = seconds
    return state, seconds


def log_step(metrics: dict, step: int) -> dict:
    """The step's metrics as floats (None where not finite), with the step; a
    non-finite loss stops training.

    Raises:
        Diverged: the loss is NaN or infinite.
    """
    m = {k: float(np.asarray(v)) for k, v in metrics.items()}
    if not math.isfinite(m["loss"]):
        raise Diverged(f"training diverged at step {step} (loss {m['loss']}); the newest checkpoint "
                       f"holds the last good state; lower --optim.lr or the loss weights")
    return {k: v if math.isfinite(v) else None for k, v in m.items()} | {"step": step}


def show_progress(bar, method: Method, m: dict, rays_per_second: float, done: int) -> None:
    post = {"loss": f"{m['loss']:.4f}", "psnr": f"{m['psnr'] or 0:.2f}"}
    if m.get("rays"):
        post["rays_s"] = f"{rays_per_second:,.0f}"
    post |= {k: f"{m[k]:,.0f}" for k in method.progress if k in m}
    bar.set_postfix(post)
    bar.update(done - bar.n)


def save(method: Method, state: dict, run: Path, history: dict) -> None:
    """A checkpoint (with the history inside it) and ``history.json``; a state with
    non-finite parameters is never saved.

    Raises:
        Diverged: the state holds NaN or infinite values.
    """
    host = parallel.to_host(state)
    arrays = method.to_arrays(host)
    bad = [name for name, a in arrays.items() if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a))]
    if bad:
        raise Diverged(f"training diverged before step {int(host['step'])} (non-finite {bad[0]}); "
                       f"the newest checkpoint holds the last good state; lower --optim.lr or the loss weights")
    checkpoints.write(run, int(host["step"]), arrays, method.name, history)
    save_history(run, history)


# ---- signals -----------------------------------------------------------------------------


class Interrupts:
    """Ctrl-C (SIGINT) and SIGTERM (what cluster schedulers send before they pre-empt a
    job) ask the loop to save a checkpoint and stop; before the loop starts they stop at
    once (`check`), and a second signal stops at once wherever it lands (an atomic write
    it interrupts leaves the file as it was). Exit codes 130 and 143, as a shell gives."""

    SIGNALS = {signal.SIGINT: ("interrupted", 130), signal.SIGTERM: ("terminated", 143)}

    def __init__(self):
        self.received: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> "Interrupts":
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        first, self.received = self.received is None, signum
        if not first:
            print(f"\n{self.name} again: stopping now, without a checkpoint")
            raise SystemExit(self.exit_code)

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def name(self) -> str:
        return self.SIGNALS[self.received][0]

    @property
    def exit_code(self) -> int:
        return self.SIGNALS[self.received][1]

    def check(self) -> None:
        """Before training starts: a signal received during start-up stops here, with
        nothing written."""
        if self.requested:
            print(f"\n{self.name} before training started")
            raise SystemExit(self.exit_code)
