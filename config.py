"""Run configuration: `RunConfig`, the presets, the component choices it holds, and its
JSON form (``config.json``).

Every choice between components is a union field (``field.encoding: HashGrid |
SimplexGrid | ...``); `component_paths` finds them all from the type tree, and
`config_classes` derives the codec's class registry from the same tree, so a new
component needs no list kept by hand. Presets are short `dataclasses.replace` deltas from
the default (`PRESETS`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Annotated

import tyro

from .datasets.protocols import PROTOCOLS
from .datasets.triangulation import TriangulationConfig
from .errors import UsageError
from .fields.field import FieldConfig
from .fields.frequency import CoarseToFine
from .fields.pruning import ADMMPruner, SaliencyMask
from .fields.sh import SphericalHarmonics
from .losses.distortion import Distortion
from .losses.keypoints import KeypointDepth
from .losses.occlusion import Occlusion
from .losses.opacity import MaskLoss
from .losses.regularizers import Regularizers
from .losses.weight_decay import GridWeightDecay
from .methods.optim import OptimConfig
from .methods.pose_refinement import PoseRefinement
from .methods.splat import SplatConfig
from .methods.splat_step import CoTraining, DropGaussian, OpacityDecay
from .methods.surfel import SurfelConfig
from .parallel import DistributedConfig
from .renderers.render import RenderConfig
from .renderers.samplers import SampleAnnealing
from .samplers.grid import OccupancyGridConfig
from .samplers.network import OccupancyNetConfig

CONFIG_FORMAT = 2
"""Version of ``config.json``'s layout this code writes."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. Saved as ``config.json`` in the run folder."""

    method: str = "nerf"
    """What holds the scene: ``nerf`` (a radiance field), ``splat`` (3D Gaussians), or a
    registered method (`sparsefield.methods`)."""
    init_from: Path | None = None
    """``--method splat``: seed the Gaussians where this trained run's density is high."""
    splat: SplatConfig = SplatConfig()
    """Gaussian-splatting settings (``--method splat``)."""
    surfel: SurfelConfig = SurfelConfig()
    """2D Gaussian surfel settings (``--method surfel``)."""
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
    bbox: tuple[float, float, float, float, float, float] | None = None
    """The scene box ``xmin ymin zmin xmax ymax zmax`` in the scene's coordinates (as
    ``config.json`` records it, after a loader levelled the capture), instead of the one
    the dataset gives: the field and the samplers cover it."""
    scale: float = 1.0
    """Image down-scaling factor in (0, 1] (0.5 halves the resolution)."""
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
    """The sampler (empty-space skipping): ``grid`` (default), ``net`` (LeC2O's learned
    occupancy network) or ``none``; ``--sampler`` is the same choice."""
    optim: OptimConfig = OptimConfig()
    reg: Regularizers = Regularizers(distortion=Distortion())
    """Loss terms besides the colour loss (sparse-view regularizers); the distortion loss
    is on by default (it removes semi-transparent floaters: +0.1 dB on the demo scene)."""
    pose_refine: PoseRefinement | None = None
    """Refine the training cameras' poses with the scene (``--method nerf``), for poses
    from structure from motion (`sparsefield poses`); off if None."""
    pruner: ADMMPruner | None = None
    """HollowNeRF's ADMM pruning of the field's saliency mask, then compaction of the
    tables (needs ``field.saliency``); off if None."""
    points: TriangulationConfig = TriangulationConfig()
    """How the training views' SIFT features are triangulated with the known poses, for
    the components that read them (``reg.keypoint-depth``, ``--splat.gaussians.init points``)."""
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
#
# For --method splat, Binocular3DGS's opacity decay at lambda = 0.98 per step: Gaussians
# that the views do not keep paying for fade and are pruned, and in front of novel views
# those are the floaters. Demo and 5 suite scenes at 200 px, 700 steps: 3 views 19.24 dB
# mean test PSNR against 18.13 without (better on 6 of 6) and 18.49 for the radiance
# field's recipe; 8 views 27.98 against 26.65 without (6 of 6). lambda 0.995 (the paper's)
# gave half the gain on the demo scene. One exception seen: the demo scene at 400 px from
# 8 views, 26.82 dB against 27.22 without.
PRESETS["fewshot"] = dataclasses.replace(
    PRESETS["default"],
    splat=dataclasses.replace(PRESETS["default"].splat, opacity_decay=OpacityDecay(factor=0.98)),
    occupancy=dataclasses.replace(PRESETS["default"].occupancy, min_views=3),
    field=dataclasses.replace(PRESETS["default"].field, coarse_to_fine=CoarseToFine()),
    render=dataclasses.replace(PRESETS["default"].render, anneal=SampleAnnealing()),
    reg=dataclasses.replace(
        PRESETS["default"].reg,
        occlusion=Occlusion(), distortion=Distortion(), mask=MaskLoss(weight=0.1, if_masks=True),
    ),
)
# The few-shot recipe picks its method by the number of training views: over the
# generated suite of 8 scenes (docs/fewshot.md), Gaussians with opacity decay led the
# radiance field from 3 views (+0.64 dB, better in 16 of 22 runs over 3 seeds, in half
# the time) and from 4 (+0.73 dB, 5 of 8 scenes, SSIM and LPIPS better too); from 6 the
# radiance field led (+0.15 dB, 5 of 8, LPIPS 0.048 against 0.062) and from 8 (+0.46 dB).
# --method overrides the pick.
#
# The splat form trains 700 steps, as those runs did. The radiance field's form adds
# DS-NeRF's depth loss at the training views' SIFT points that 3 or more views
# triangulate, for its first 300 steps: the points carve what the photos leave ambiguous
# (the lid a field grows over a bowl's cavity) while the field is coarse, and the colour
# has the rest of training; where the views give no such points (3-4 views of most
# scenes, textureless ones) the term is off. Its mesh and image figures are in
# docs/meshes.md; with splats the same term cost 0.20 dB, so their form has none.
FEWSHOT_SPLAT_VIEWS = 4
"""``--preset fewshot`` trains Gaussians (``splat``) from this many training views or
fewer, the radiance field from more (or from all the views)."""

PRESET_METHODS: dict[str, typing.Callable[[int | None], str]] = {
    "fewshot": lambda views: "splat" if views is not None and views <= FEWSHOT_SPLAT_VIEWS else "nerf",
}
"""Presets that pick their method by the number of training views (None: all)."""

# From 3 views the splat form co-trains two scenes (CoR-GS) for the first half of the run
# (the twin then leaves; co-pruning keeps a Gaussian that lies within 3 standard
# deviations of one of the other scene's): over the suite's 8 scenes, +0.5 dB over one
# scene (better on 7 of 8; SSIM 0.84 -> 0.85), +1.0 dB over the radiance field. From 4
# views it gained +0.25 dB on average for twice the time, losing 2 dB on the thin wires,
# so there, and from more views, the form trains one scene. From 3 views the opacities
# also decay faster, by 0.96 per step instead of 0.98: +0.49 dB over 16 runs (8 scenes x
# 2 seeds, better in 15), SSIM 0.852 -> 0.856, in less time (fewer Gaussians survive).
# From 4 views (one scene) 0.96 too: +0.27 dB over 2 seeds (better in 9 of 16 runs, no
# loss above 0.19 dB), SSIM 0.893 -> 0.895, LPIPS 0.093 -> 0.092, slightly faster.
# From 3 views the splat form also drops Gaussians (DropGaussian: a share growing to 10%
# of each training render, the rest's opacity scaled up to match): +0.16 dB over 24 runs
# (8 scenes x 3 seeds, better in 19, no loss above 0.15 dB), SSIM 0.857 -> 0.861, LPIPS
# 0.139 -> 0.138, in the same time. From 4 views (one scene) +0.01 dB with the thin
# wires -0.57, so there it is off.
FEWSHOT_CO_TRAINING_VIEWS = 3
"""The splat form of ``--preset fewshot`` co-trains two scenes from this many training
views or fewer."""

# The radiance field's form trains 1400 steps, not the default 1000: from 8 views over the
# suite's 8 scenes, +0.24 dB at seed 0 (28.93 against 28.69, better on 5 of 8, the other
# three within 0.05 dB) and +0.13 at seed 1 (3 of 3 scenes), SSIM 0.959 -> 0.962, LPIPS
# 0.031 -> 0.028; alone on the machine it trains in 1.38 times the 1000 steps' time.
# With the grid's weight decay (below; 4% more time per step) it trains 1300: from 8
# views over the 8 scenes and two seeds, within 0.03 dB of 1400 with the decay and
# +0.10 dB over 1400 without it (better in 13 of 16); alone, 1.49 times the time of
# the preset before (1000 steps, four SH bands, no decay).
FEWSHOT_NERF_STEPS = 1300
"""Training steps of the radiance field's form of ``--preset fewshot``."""

# Its view-dependent colour has two SH bands (4 coefficients), not the default four (16):
# from 8 views, few directions per point; with 16 coefficients the field explains
# disagreements between views as view dependence. Over the suite's 8 scenes at seed 0:
# +0.46 dB (29.38 against 28.93, better or equal on all 8; textureless +1.99), SSIM
# 0.962 -> 0.964, LPIPS 0.028 -> 0.024. No view dependence at all (one band) gained
# +0.16 on average but lost up to 0.75 dB on three scenes. At seed 1, two bands gained
# +0.38 dB (better on 6 of 8, the other two -0.09). From 6 views, 1400 steps with two
# bands are +0.71 dB over 1000 steps with four (seed 0, better on all 8 scenes).
FEWSHOT_NERF_SH_BANDS = 2
"""SH bands of the view-dependent colour of the radiance field's form of ``--preset fewshot``."""

# Its grid tables decay towards 0 (Zip-NeRF's weight decay, 0.1, `GridWeightDecay`):
# entries the training rays seldom read (hash collisions at the fine levels, space few
# views see) keep no stray features. Over the suite's 8 scenes from 8 views, +0.14 dB
# at seed 0 and +0.12 at seed 1 (better in 12 of 16 runs; fine texture +0.23 and
# +0.19), SSIM 0.9639 -> 0.9665, LPIPS 0.0240 -> 0.0242; from 6 views (seed 0) +0.23
# (better on 6 of 8), SSIM 0.943 -> 0.947, LPIPS 0.037 -> 0.035 (both at 1400 steps).

_FEWSHOT_SPLAT = dataclasses.replace(PRESETS["fewshot"], method="splat", steps=700)
_FEWSHOT_SPLAT_DECAY = dataclasses.replace(
    _FEWSHOT_SPLAT, splat=dataclasses.replace(_FEWSHOT_SPLAT.splat, opacity_decay=OpacityDecay(factor=0.96)))
_FEWSHOT_SPLAT_CO = dataclasses.replace(
    _FEWSHOT_SPLAT_DECAY, splat=dataclasses.replace(_FEWSHOT_SPLAT_DECAY.splat, co_training=CoTraining(until=0.5),
                                                    drop=DropGaussian()))
_FEWSHOT_NERF = dataclasses.replace(
    PRESETS["fewshot"], steps=FEWSHOT_NERF_STEPS,
    field=dataclasses.replace(PRESETS["fewshot"].field,
                              direction_encoding=SphericalHarmonics(degree=FEWSHOT_NERF_SH_BANDS)),
    reg=dataclasses.replace(PRESETS["fewshot"].reg, keypoint_depth=KeypointDepth(until=300),
                            weight_decay=GridWeightDecay()),
    points=dataclasses.replace(PRESETS["fewshot"].points, min_track=3),
)


def _fewshot_splat(views: int | None) -> RunConfig:
    """The splat form of ``--preset fewshot`` for ``views`` training views (None: all):
    two co-trained scenes and DropGaussian up to `FEWSHOT_CO_TRAINING_VIEWS`, opacity
    decay 0.96 up to `FEWSHOT_SPLAT_VIEWS` (where the preset picks Gaussians), 0.98 from
    more."""
    if views is None or views > FEWSHOT_SPLAT_VIEWS:
        return _FEWSHOT_SPLAT
    return _FEWSHOT_SPLAT_CO if views <= FEWSHOT_CO_TRAINING_VIEWS else _FEWSHOT_SPLAT_DECAY


METHOD_PRESETS: dict[tuple[str, str], typing.Callable[[int | None], RunConfig]] = {
    ("fewshot", "nerf"): lambda views: _FEWSHOT_NERF,
    ("fewshot", "splat"): _fewshot_splat,
}
"""A preset's form for one method, where it differs from the shared one: ``(preset,
method) -> (views -> config)`` for that many training views (None: all; `preset_config`)."""


def preset_config(name: str, method: str | None = None, views: int | None = 8) -> RunConfig:
    """Preset ``name`` as a run starts from for ``views`` training views: for ``method``,
    else the method the preset picks for them (`PRESET_METHODS`), else the preset's own;
    in that method's form for them (`METHOD_PRESETS`) where it has one."""
    shared = PRESETS[name]
    if method is None:
        method = PRESET_METHODS[name](views) if name in PRESET_METHODS else shared.method
    form = METHOD_PRESETS.get((name, method))
    return dataclasses.replace(form(views) if form else shared, method=method)


def train_view_count(config: RunConfig) -> int | None:
    """How many views a run trains on: its ``view_ids``, its protocol's, else ``views``
    (None: all of them)."""
    if config.view_ids is not None:
        return len(config.view_ids)
    if config.protocol is not None and config.protocol in PROTOCOLS:
        return PROTOCOLS[config.protocol].num_views
    return config.views


# HollowNeRF: a 64^3 saliency mask pruned by ADMM, then compacted tables.
PRESETS["pruned"] = dataclasses.replace(
    PRESETS["default"],
    field=dataclasses.replace(PRESETS["default"].field, saliency=SaliencyMask()),
    pruner=ADMMPruner(),
)


# ---- the type tree -----------------------------------------------------------------------


def strip_annotated(tp):
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


def union_members(tp) -> tuple:
    """The members of a union type (``X | Y``, ``Optional``), else ()."""
    tp = strip_annotated(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return typing.get_args(tp)
    return ()


def config_classes(root: type = RunConfig) -> dict[str, type]:
    """Every config dataclass reachable from ``root``'s type hints (fields, union members,
    tuple items), by class name: the registry `config_from_json` decodes with."""
    found: dict[str, type] = {}

    def visit(tp):
        tp = strip_annotated(tp)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp not in found.values():
            if tp.__name__ in found:
                raise TypeError(f"two config classes named {tp.__name__}")
            found[tp.__name__] = tp
            for hint in typing.get_type_hints(tp, include_extras=True).values():
                visit(hint)
        for arg in typing.get_args(tp):
            visit(arg)

    visit(root)
    return found


def _choice_name(member) -> tuple[type | None, str]:
    """``(class or None, token name)`` of one member of a component union."""
    cls = strip_annotated(member)
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
        tp, path = strip_annotated(hints[f.name]), prefix + f.name.replace("_", "-")
        members = union_members(tp)
        if any(dataclasses.is_dataclass(strip_annotated(m)) for m in members):
            out[path] = [_choice_name(m) for m in members]
        elif dataclasses.is_dataclass(tp):
            out |= component_paths(tp, path + ".")
    return out


def get_path(config, path: str):
    """The value at a dotted flag path (``field.encoding``) of a config tree."""
    value = config
    for part in path.replace("-", "_").split("."):
        value = getattr(value, part)
    return value


def replace_path(config, path: str, value):
    """``config`` with the value at a dotted flag path replaced."""
    head, _, rest = path.replace("-", "_").partition(".")
    if not rest:
        return dataclasses.replace(config, **{head: value})
    return dataclasses.replace(config, **{head: replace_path(getattr(config, head), rest, value)})


def inherit(current, cls: type | None):
    """The component ``cls`` as a preset would have it: its defaults, with every setting
    ``current`` (the preset's component at that place) changed from its own class's
    defaults carried over where ``cls`` has a field of the same name. Choosing
    ``field.encoding:simplex`` in a preset whose hash grid has 2^17 rows gives a simplex
    grid of 2^17 rows."""
    if cls is None:
        return None
    if current is None or type(current) is cls:
        return current if current is not None else cls()
    base = type(current)()
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    changed = {f.name: getattr(current, f.name) for f in dataclasses.fields(current)
               if f.name in names and getattr(current, f.name) != getattr(base, f.name)}
    return cls(**changed)


# ---- config.json -------------------------------------------------------------------------


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


def config_from_json(value, classes: dict[str, type] | None = None):
    """Inverse of `config_to_json` (lists come back as tuples, configs are frozen).

    Raises:
        ValueError: an unknown class or field (the message names it).
    """
    classes = config_classes() if classes is None else classes
    if isinstance(value, dict) and "__path__" in value:
        return Path(value["__path__"])
    if isinstance(value, dict) and "__class__" in value:
        name = value["__class__"]
        if name not in classes:
            raise ValueError(f"unknown config class {name!r}")
        cls = classes[name]
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(value) - known - {"__class__"})
        if extra:
            raise ValueError(f"{name} has no setting {', '.join(extra)}")
        return cls(**{k: config_from_json(v, classes) for k, v in value.items() if k != "__class__"})
    if isinstance(value, list):
        return tuple(config_from_json(v, classes) for v in value)
    return value


# ---- checks before anything is written ---------------------------------------------------

POSITIVE = ("steps", "rays_per_batch", "eval_every", "checkpoint_every")
"""Run settings that must be at least 1."""

SIZES = re.compile(r"num_.*|levels|features|hidden|chunk|size|.*resolution|.*_res|.*_budget|.*_capacity"
                   r"|tile_.*|every|.*_every|log2_.*")
"""Names of component settings that count or size something, or are a period in steps:
at least 1 when their default is (a 0 would allocate nothing or divide by zero)."""


def check_config(config: RunConfig) -> RunConfig:
    """Reject values that make no sense, before anything is written. The whole tree is
    walked, so a new component is checked without a list kept here: every setting of the
    type its field declares (`check_types`; ``config.json`` can hold anything); every
    number finite; the run's own settings (`check_run`); the components' numbers by their
    defaults (`check_component`); then each config's own ``check()``, where it has one.

    Raises:
        UsageError: one line naming the flag and the value.
    """
    check_types(config)
    for path, value in _numbers(config):
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--{path} {value}: must be a finite number")
    check_run(config)
    for path, node in _configs(config):
        if path:
            check_component(node, path)
    return config


def check_run(config: RunConfig) -> None:
    """The run's own settings: `POSITIVE` at least 1, ``scale`` in (0, 1], ``views`` at
    least 1, ``eval_views`` not negative, and a sample budget of at least one sample per
    training ray."""
    for name in POSITIVE:
        if getattr(config, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(config, name)}: must be at least 1")
    if 1 <= config.render.sample_budget < config.rays_per_batch:
        raise UsageError(f"--render.sample-budget {config.render.sample_budget}: must be at least --rays-per-batch "
                         f"{config.rays_per_batch} (one sample per ray)")
    if not 0.0 < config.scale <= 1.0:
        raise UsageError(f"--scale {config.scale}: must be in (0, 1] (0.5 halves the resolution)")
    if config.views is not None and config.views < 1:
        raise UsageError(f"--views {config.views}: must be at least 1")
    if config.eval_views < 0:
        raise UsageError(f"--eval-views {config.eval_views}: must not be negative (0: no periodic evaluation)")


def check_component(node, path: str) -> None:
    """One component's numbers, judged by their defaults: a number whose default is not
    negative (a weight, rate, threshold, scale, step count, fraction, size) must not be,
    and a count or size `SIZES` names whose default is at least 1 must stay at least 1.
    A default of None (unset) counts as 1; a default below zero is a sentinel
    (``num_threads = -1``: all cores) and sets no limit; a setting that may be negative
    although its default is not is named in the class's ``signed`` (a ClassVar). Then
    the component's own ``check()``, where it has one (it raises ValueError).

    Raises:
        UsageError: naming the flag and the value.
    """
    signed = getattr(node, "signed", ())
    for f in dataclasses.fields(node):
        value, flag = getattr(node, f.name), f"--{path}.{f.name.replace('_', '-')}"
        default = 1 if f.default is None else f.default  # unset by default: a count when set
        if f.name in signed or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                       for v in (value, default)):
            continue
        if SIZES.fullmatch(f.name) and default >= 1 and value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")
        if default >= 0 and value < 0:
            raise UsageError(f"{flag} {value}: must not be negative")
    check = getattr(node, "check", None)
    if callable(check):
        try:
            check()
        except ValueError as err:
            raise UsageError(f"--{path}: {err}") from None


def check_types(config) -> None:
    """Every setting of ``config``'s tree holds the type its field declares (tyro makes
    sure of it for flags; a hand-edited ``config.json`` may not).

    Raises:
        UsageError: naming the setting, its value and the type expected.
    """
    for path, node in _configs(config):
        hints = typing.get_type_hints(type(node), include_extras=True)
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if not fits(value, hints[f.name]):
                flag = f"--{path + '.' if path else ''}{f.name.replace('_', '-')}"
                raise UsageError(f"{flag} {value!r}: must be {expected(hints[f.name])}")


def fits(value, hint) -> bool:
    """Whether ``value`` is of the type ``hint`` (a config field's annotation)."""
    tp = strip_annotated(hint)
    if union_members(tp):
        return any(fits(value, m) for m in union_members(tp))
    if tp is type(None) or tp is None:
        return value is None
    if typing.get_origin(tp) is typing.Literal:
        return value in typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return isinstance(value, tuple) and all(fits(v, args[0] if args else typing.Any) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return not isinstance(tp, type) or isinstance(value, tp)


def expected(hint) -> str:
    """What a setting of type ``hint`` holds, in words (error messages)."""
    tp = strip_annotated(hint)
    if union_members(tp):
        return " or ".join(dict.fromkeys(expected(m) for m in union_members(tp)))
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list of " + expected(typing.get_args(tp)[0]).replace("a ", "").replace("an ", "") + "s"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "text", Path: "a path",
             type(None): "None"}
    return words.get(tp, f"a {getattr(tp, '__name__', tp)}")


def _configs(value, prefix: str = ""):
    """``(flag path, config)`` for every dataclass in a config tree, the root's path ''."""
    if dataclasses.is_dataclass(value):
        yield prefix.rstrip("."), value
        for f in dataclasses.fields(value):
            yield from _configs(getattr(value, f.name), f"{prefix}{f.name.replace('_', '-')}.")


def _numbers(value, prefix: str = ""):
    """``(flag path, number)`` for every int or float in a config tree."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _numbers(getattr(value, f.name), f"{prefix}{f.name.replace('_', '-')}.")
    elif isinstance(value, tuple):
        for v in value:
            yield from _numbers(v, prefix)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield prefix.rstrip("."), value
