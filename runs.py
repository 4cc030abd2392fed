"""Run configuration, presets, model building and the run folder (config, checkpoints).

A run folder holds everything `render`, `eval` and `export` need: ``config.json`` (the
resolved `RunConfig`), ``checkpoints/`` (written atomically) and, after training,
``metrics.json``, ``renders/`` and ``report.html``.

This module sits beside ``train.py`` rather than inside it because the other commands
need `build` and the checkpoint reader too, and nothing may import ``train.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import tempfile
import types
import typing
from pathlib import Path
from typing import Annotated, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

from sparsefield.fields.encoding import ALL_ENCODINGS
from sparsefield.fields.field import FieldConfig, RadianceField
from sparsefield.fields.frequency import CoarseToFine
from sparsefield.fields.modulation import CAM
from sparsefield.fields.occupancy_net import OccupancyNetConfig, OccupancyNetState
from sparsefield.fields import pruning
from sparsefield.fields.pruning import ADMMPruner, ADMMState, SaliencyMask
from sparsefield.fields.sh import SphericalHarmonics
from sparsefield.parallel import DistributedConfig
from sparsefield.renderers.occupancy_grid import (
    OccupancyGridConfig,
    OccupancyGridState,
    init_occupancy,
)
from sparsefield.renderers.regularizers import (
    DepthSmoothness,
    Distortion,
    MaskLoss,
    Occlusion,
    OpacityPrior,
    RayEntropy,
    Regularizers,
    TotalVariation,
    UnseenPatches,
)
from sparsefield.renderers.render import RenderConfig
from sparsefield.renderers.samplers import SampleAnnealing
from sparsefield.splat import CONFIG_CLASSES as SPLAT_CONFIG_CLASSES, SplatConfig
from sparsefield.renderers.spaces import NDC, Contraction


class UsageError(ValueError):
    """A command-line mistake (bad run folder, unsupported file type): one-line message."""


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam with linear warm-up and exponential decay (Instant-NGP's optimiser)."""

    lr: float = 1e-2
    """Peak learning rate."""
    warmup_steps: int = 100
    """Linear warm-up from 0 to ``lr`` over these steps."""
    final_lr_factor: float = 0.03
    """The learning rate decays exponentially to ``lr * final_lr_factor`` at the last step."""
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-15
    """Adam's epsilon; tiny, as Instant-NGP uses, so rarely-touched hash entries still move."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. Saved as ``config.json`` in the run folder."""

    method: Literal["nerf", "splat"] = "nerf"
    """What holds the scene: a radiance field (``nerf``) or 3D Gaussians (``splat``)."""
    init_from: Path | None = None
    """``--method splat``: seed the Gaussians where this NeRF run's density is high."""
    splat: SplatConfig = SplatConfig()
    """Gaussian-splatting settings (``--method splat``)."""
    data: Path | None = None
    """Dataset folder; None means the built-in demo scene."""
    views: int | None = 8
    """Train on N views of the train split (standard 8-view list or farthest-point)."""
    view_ids: tuple[int, ...] | None = None
    """Explicit train view ids (positions in the train split); overrides --views."""
    protocol: str | None = None
    """A published few-shot setting (``blender8``, ``llff3|6|9``, ``dtu3|6|9``): fixes the
    image scale, the training and test views and masked metrics (DTU); replaces --scale
    and --views."""
    scale: float = 1.0
    """Image down-scaling factor (0.5 halves the resolution)."""
    steps: int = 1000
    """Training steps."""
    out: Path = Path("runs/demo")
    """Run folder."""
    seed: int = 0
    """Seed of the run's base key (per-step keys are fold_in(base, step))."""
    rays_per_batch: int = 2**13
    """Rays drawn per step R; rays whose samples exceed the budget are skipped."""
    random_background: bool = True
    """Random background colour per ray when the data has alpha masks."""
    eval_every: int = 500
    """Render ``eval_views`` test views every this many steps (PSNR curve)."""
    eval_views: int = 2
    """Test views rendered at each periodic evaluation."""
    checkpoint_every: int = 500
    """Steps between checkpoints."""
    field: FieldConfig = FieldConfig()
    render: RenderConfig = RenderConfig()
    occupancy: (
        Annotated[OccupancyGridConfig, tyro.conf.subcommand("grid")]
        | Annotated[OccupancyNetConfig, tyro.conf.subcommand("net")]
        | Annotated[None, tyro.conf.subcommand("none")]
    ) = OccupancyGridConfig()
    """Empty-space skipping: ``occupancy:grid`` (default), ``occupancy:net`` (LeC2O's
    learned occupancy network; ``--sampler occupancy-net``) or ``occupancy:none``."""
    optim: OptimConfig = OptimConfig()
    reg: Regularizers = Regularizers(distortion=Distortion())
    """Loss terms besides the colour loss (sparse-view regularizers); the distortion loss
    is on by default (it removes semi-transparent floaters: +0.1 dB on the demo scene)."""
    pruner: ADMMPruner | None = None
    """HollowNeRF's ADMM pruning of the field's saliency mask, then compaction of the
    tables (needs ``field.saliency``); off if None."""
    dist: DistributedConfig = DistributedConfig()
    """Multi-host launch (``jax.distributed``); single-process when unset."""


PRESETS: dict[str, RunConfig] = {
    "default": RunConfig(),
    # A few hundred steps: a quick look at a scene.
    "fast": RunConfig(steps=500, eval_every=250, checkpoint_every=250),
    # The same model trained four times longer.
    "long": RunConfig(steps=8000, eval_every=1000, checkpoint_every=1000),
}
# The recommended few-shot recipe (3 to 8 views): FreeNeRF's frequency mask on the grid
# levels and occlusion penalty, mip-NeRF 360's distortion loss, RegNeRF's sample-space
# annealing; occupancy-grid cells that fewer than 3 training views see stay empty; where
# the data has alpha masks, mask supervision of the opacity. Demo scene, 8 views: 27.00 dB
# against 25.18 unregularized (3 views: 16.42 against 13.40); RegNeRF's depth smoothness,
# left out, changed PSNR by -0.03 dB at 3 and 8 views for a fifth more time.
PRESETS["fewshot"] = dataclasses.replace(
    PRESETS["default"],
    occupancy=dataclasses.replace(PRESETS["default"].occupancy, min_views=3),
    field=dataclasses.replace(PRESETS["default"].field, coarse_to_fine=CoarseToFine()),
    render=dataclasses.replace(PRESETS["default"].render, anneal=SampleAnnealing()),
    reg=dataclasses.replace(
        PRESETS["default"].reg,
        occlusion=Occlusion(), distortion=Distortion(), mask=MaskLoss(weight=0.1, if_masks=True),
    ),
)
# HollowNeRF: a 64^3 saliency mask pruned by ADMM, then compacted tables.
PRESETS["pruned"] = dataclasses.replace(
    PRESETS["default"],
    field=dataclasses.replace(PRESETS["default"].field, saliency=SaliencyMask()),
    pruner=ADMMPruner(),
)


CONFIG_CLASSES = {
    cls.__name__: cls
    for cls in (RunConfig, FieldConfig, *ALL_ENCODINGS, SphericalHarmonics, RenderConfig,
                OccupancyGridConfig, OptimConfig, Regularizers, Distortion, TotalVariation, CoarseToFine, CAM,
                Occlusion, RayEntropy, OpacityPrior, MaskLoss, DepthSmoothness, UnseenPatches,
                SampleAnnealing, SaliencyMask, ADMMPruner, DistributedConfig, NDC, Contraction, OccupancyNetConfig)
}
"""Every config class a saved run may name (the JSON codec's registry)."""
CONFIG_CLASSES.update({cls.__name__: cls for cls in SPLAT_CONFIG_CLASSES})


# ---- component flags on the command line -------------------------------------------------


def _strip_annotated(tp):
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


def _choice_name(member) -> tuple[type | None, str]:
    """``(class or None, subcommand name)`` of one member of a component union."""
    cls = _strip_annotated(member)
    cls = None if cls is type(None) else cls
    for meta in getattr(member, "__metadata__", ()):
        if getattr(meta, "name", None):
            return cls, meta.name
    if cls is None:
        return None, "none"
    return cls, re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", cls.__name__).lower()


def component_paths(cls: type = RunConfig, prefix: str = "") -> dict[str, list[tuple[type | None, str]]]:
    """Every choice between components in ``cls`` (``"reg.entropy" -> [(RayEntropy,
    "ray-entropy"), (None, "none")]``), in the order of the fields: the tokens
    ``path:name`` of ``sparsefield train``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = {}
    for f in dataclasses.fields(cls):
        tp, path = _strip_annotated(hints[f.name]), prefix + f.name.replace("_", "-")
        members = typing.get_args(tp) if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union else ()
        if any(dataclasses.is_dataclass(_strip_annotated(m)) for m in members):
            out[path] = [_choice_name(m) for m in members]
        elif dataclasses.is_dataclass(tp):
            out |= component_paths(tp, path + ".")
    return out


def component_args(args: list[str], default: RunConfig) -> list[str]:
    """Put ``sparsefield train`` arguments in the order tyro needs, so users need not:
    plain flags first, then each component token (``occupancy:grid``) followed by its
    own flags (``--occupancy.min-views 3``). A component's flags without its token get
    the token of the component ``default`` has there; where that is None (the
    component is off) they are an error that names the token to turn it on."""
    paths = component_paths()
    owner = lambda flag: max((p for p in paths if flag.startswith(f"--{p}.")), key=len, default=None)  # noqa: E731
    tokens = {f"{p}:{name}": p for p, choices in paths.items() for _, name in choices}
    plain, chosen, flags, help_ = [], {}, {p: [] for p in paths}, []
    current = plain
    for arg in args:
        if arg in ("-h", "--help"):
            help_.append(arg)
        elif arg in tokens:
            chosen[tokens[arg]] = arg
            current = flags[tokens[arg]]
        elif arg.startswith("--") and arg[2:] in tokens:
            raise UsageError(f"{arg}: a component token takes no dashes; write {arg[2:]}")
        elif arg.startswith("--"):
            path = owner(arg.split("=", 1)[0])
            current = plain if path is None else flags[path]
            current.append(arg)
        else:
            current.append(arg)
    out = list(plain)
    for path, choices in paths.items():
        if path not in chosen and not flags[path]:
            continue
        if path not in chosen:
            value = functools.reduce(getattr, path.replace("-", "_").split("."), default)
            name = next(n for c, n in choices if (value is None and c is None) or (c is not None and type(value) is c))
            if value is None:
                on = " or ".join(f"{path}:{n}" for c, n in choices if c is not None)
                raise UsageError(f"{flags[path][0]}: {path} is off here; turn it on with {on}")
            chosen[path] = f"{path}:{name}"
        out += [chosen[path], *flags[path]]
    return out + help_


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything the train step updates."""

    step: jax.Array
    params: dict
    opt_state: optax.OptState
    grid: OccupancyGridState | None
    pruner: ADMMState | None = None


def occupancy_test(config: RunConfig, params: dict, step, grid: OccupancyGridState | None):
    """What the renderer skips empty space with: the ``grid``, or the occupancy network
    (`OccupancyNetState` of ``params["occupancy"]`` at training ``step``), or None."""
    if isinstance(config.occupancy, OccupancyNetConfig):
        occ = config.occupancy
        return OccupancyNetState(params["occupancy"], step < occ.warmup_steps, occ)
    return grid


def at_step(config: RunConfig, step: int) -> RunConfig:
    """The config as trained at ``step``: a progressive grid (DVGO) at that step's stage."""
    enc = config.field.encoding
    if not hasattr(enc, "stage_at"):
        return config
    staged = enc.at_stage(enc.stage_at(step))
    return dataclasses.replace(config, field=dataclasses.replace(config.field, encoding=staged))


def make_field(config: RunConfig, bbox: np.ndarray) -> RadianceField:
    """The radiance field of a run inside the scene box ``bbox [2, 3]``, or in the
    parameter space of its ``render.space`` (NDC, contracted space)."""
    space = config.render.space
    bbox = bbox if space is None else space.param_box(bbox)
    box = tuple(tuple(float(v) for v in row) for row in np.asarray(bbox))
    return RadianceField(config.field, box)


def make_optimizer(run: RunConfig) -> optax.GradientTransformation:
    """Adam (eps 1e-15) with linear warm-up then exponential decay over ``run.steps``.

    An encoding may ask for a larger step through ``lr_multiplier`` (DVGO trains its
    voxel grids at 10x the MLP's learning rate).
    """
    config, steps = run.optim, run.steps
    decay_steps = max(1, steps - config.warmup_steps)
    schedule = optax.join_schedules(
        [
            optax.linear_schedule(0.0, config.lr, max(1, config.warmup_steps)),
            optax.exponential_decay(config.lr, decay_steps, config.final_lr_factor),
        ],
        [config.warmup_steps],
    )
    adam = optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps)
    multiplier = getattr(run.field.encoding, "lr_multiplier", 1.0)
    if multiplier == 1.0:
        return adam
    scale = optax.stateless(lambda updates, params=None: {
        **updates, "encoding": jax.tree_util.tree_map(lambda u: u * multiplier, updates["encoding"])
    })
    return optax.chain(adam, scale)


def init_state(config: RunConfig, field: RadianceField) -> TrainState:
    """Fresh parameters, optimiser state and occupancy grid for a run."""
    if config.pruner is not None and config.field.saliency is None:
        raise UsageError("--pruner prunes the saliency mask: add field.saliency:saliency-mask")
    params = field.init(jax.random.PRNGKey(config.seed))
    net = isinstance(config.occupancy, OccupancyNetConfig)
    if net:  # trained with the field, by the same optimiser
        params["occupancy"] = config.occupancy.init(jax.random.PRNGKey(config.seed + 2))
    opt_state = make_optimizer(config).init(params)
    grid = init_occupancy(config.occupancy) if config.occupancy is not None and not net else None
    admm = config.pruner.init(params["saliency"]) if config.pruner is not None else None
    return TrainState(jnp.zeros((), jnp.int32), params, opt_state, grid, admm)


# ---- run folder: config ------------------------------------------------------------------


def config_to_json(value):
    """Encode a config tree: dataclasses carry their class name, paths are tagged."""
    if dataclasses.is_dataclass(value):
        fields = {f.name: config_to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__class__": type(value).__name__, **fields}
    if isinstance(value, Path):
        return {"__path__": str(value)}
    if isinstance(value, tuple):
        return [config_to_json(v) for v in value]
    return value


def config_from_json(value):
    """Inverse of `config_to_json` (lists come back as tuples, configs are frozen)."""
    if isinstance(value, dict) and "__path__" in value:
        return Path(value["__path__"])
    if isinstance(value, dict) and "__class__" in value:
        cls = CONFIG_CLASSES[value["__class__"]]
        return cls(**{k: config_from_json(v) for k, v in value.items() if k != "__class__"})
    if isinstance(value, list):
        return tuple(config_from_json(v) for v in value)
    return value


def save_config(config: RunConfig, run: Path, extra: dict) -> None:
    """Write ``config.json``: the resolved config plus run facts (view ids, bbox, ...)."""
    payload = {"config": config_to_json(config), **extra}
    atomic_write_text(Path(run) / "config.json", json.dumps(payload, indent=2))


def load_config(run: Path) -> tuple[RunConfig, dict]:
    """Read back ``config.json``; raises `UsageError` naming the file if it is absent."""
    path = Path(run) / "config.json"
    if not path.exists():
        raise UsageError(f"{path}: not a sparsefield run (config.json is missing)")
    try:
        payload = json.loads(path.read_text())
        config = config_from_json(payload.pop("config"))
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path}: unreadable run config ({err})") from None
    return config, payload


# ---- run folder: checkpoints -------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so readers see the old or the new content, never a mix."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(run: Path, state: TrainState, keep: int = 2, rows: np.ndarray | None = None) -> Path:
    """Write ``checkpoints/step_XXXXXXX.npz`` atomically and keep the newest ``keep``.

    With ``rows`` (``[L, T]`` bool, after pruning) the encoding tables and their optimiser
    moments are stored as their kept rows only (`sparsefield.fields.pruning.pack_rows`).
    """
    import io

    leaves = [np.asarray(x) for x in jax.device_get(jax.tree_util.tree_leaves(state))]
    arrays = {f"arr_{i}": x for i, x in enumerate(leaves)}
    if rows is not None:
        arrays = pruning.pack_rows(leaves, pruning.table_leaves(state), rows)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    step = int(jax.device_get(state.step))
    path = Path(run) / "checkpoints" / f"step_{step:07d}.npz"
    atomic_write_bytes(path, buf.getvalue())
    for old in sorted(path.parent.glob("step_*.npz"))[:-keep]:
        old.unlink()
    return path


def checkpoint_step(path: Path) -> int:
    """The training step a checkpoint was written at (from its name)."""
    return int(Path(path).stem.split("_")[-1])


def latest_checkpoint(run: Path) -> Path | None:
    found = sorted((Path(run) / "checkpoints").glob("step_*.npz"))
    return found[-1] if found else None


def load_checkpoint(path: Path, template: TrainState) -> TrainState:
    """Restore a checkpoint into the structure of ``template`` (shapes are checked)."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    with np.load(path) as f:
        stored = pruning.unpack_rows({k: f[k] for k in f.files}, len(leaves))
    shapes = [np.shape(x) for x in leaves]
    if len(stored) != len(leaves) or any(s.shape != t for s, t in zip(stored, shapes)):
        raise ValueError(f"{path}: checkpoint does not match the run's config")
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in stored])


def compact_checkpoint(config: RunConfig, run: Path, state: TrainState) -> TrainState:
    """After pruning: zero the table rows no point with ``m(x) > 0`` reaches (rendering is
    unchanged), rewrite the last checkpoint with the kept rows only and record the pruned
    parameter count as ``num_params`` in ``config.json``. Without a pruner (or a grid
    encoding), the state is returned as it is."""
    if config.pruner is None or not hasattr(config.field.encoding, "spec"):
        return state
    enc = config.field.encoding
    live = pruning.live_cells(config.field.saliency, state.params["saliency"]["mask"])
    keep = pruning.reachable_rows(enc.spec, live)
    state = pruning.compact_tree(state, keep)
    save_checkpoint(run, state, rows=keep)
    saved, facts = load_config(run)
    facts["num_params_dense"] = facts["num_params"]
    facts["num_params"] = pruning.count_pruned_params(state.params, keep, enc.features)
    save_config(saved, run, facts)
    print(f"compaction: kept {keep.mean():.1%} of the table rows; {facts['num_params']:,} parameters "
          f"(from {facts['num_params_dense']:,})")
    return state
