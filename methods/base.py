"""What a method is: one way to hold a scene (a radiance field, 3D Gaussians, ...) behind
one small protocol. `sparsefield.train` runs every method with one loop; evaluation,
rendering and export call the same protocol. A method is built from the run config and
the scene box, ``Method(config, bbox)``, and its state is a dict of named components
(always with ``step``), checkpointed by name (`sparsefield.checkpoints`).

    init(views) -> state                       fresh state from the training views
    data(views) -> data                        the training views as the train step takes them
    place(state) -> state                      state on the device(s) the step runs on
    make_step(stage) -> fn(state, data, key) -> (state, metrics)
                                               jitted, built once per stage(step) (default:
                                               one stage; e.g. coarse / fine crops)
    after_step(state, done, views) -> state    host-side updates after ``done`` steps
                                               (densification, growing a grid)
    finish(state) -> (state, facts)            after the last step (e.g. compaction); facts
                                               update the run's config.json
    render(state, camera, background) -> {"rgb", "depth", "opacity", ...} (numpy)
    surface(state) -> SurfaceField             density and colour for marching cubes
    export(state, out) -> Path | None          the method's own file formats (None: not one)
    pixel_renderer(state) -> fn(state, camera, ix, iy, background) -> (rgb, valid)
                                               pixels, differentiable in the camera (aligning
                                               test poses, `sparsefield.alignment`); optional
    num_params(state) -> int
    to_arrays(state) / from_arrays(arrays)     checkpoint packing by name

`Method` gives the defaults; a new method subclasses it, sets ``name`` and implements
``init``, ``template``, ``make_step``, ``render`` and ``surface``, then registers itself
(`sparsefield.methods.register_method`). Metrics a step returns: ``loss`` and ``psnr``
always, ``loss_NAME`` per loss term, anything else the method wants logged; the ones in
``progress`` show in the progress bar.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable, ClassVar, Hashable

import jax
import numpy as np

from .. import checkpoints
from ..cameras import Cameras
from ..datasets.batches import make_ray_data
from ..datasets.scene import SceneData
from ..datasets.triangulation import SparsePoints, TriangulationConfig, triangulate
from ..errors import UsageError


@dataclasses.dataclass(frozen=True)
class TrainViews:
    """The scene and the views a run trains on.

    Attributes:
        scene: the loaded dataset.
        ids: indices into ``scene.images`` of the training views.
        seed: a trained run's surface to start from (``--init-from RUN``), or None.
        triangulation: how `points` are found.
    """

    scene: SceneData
    ids: np.ndarray
    seed: "SurfaceField | None" = None
    triangulation: TriangulationConfig = TriangulationConfig()

    @functools.cached_property
    def points(self) -> SparsePoints:
        """SIFT features of the training views triangulated with their known poses
        (computed on first use, cached on disk); empty where matching finds too few."""
        return triangulate(self.scene, self.ids, self.triangulation)

    @property
    def cameras(self) -> Cameras:
        return self.scene.cameras[self.ids]

    @property
    def masks(self) -> np.ndarray | None:
        return None if self.scene.masks is None else np.asarray(self.scene.masks[self.ids])


@dataclasses.dataclass(frozen=True)
class SurfaceField:
    """A trained scene as fields for meshing: ``density(x [N, 3]) -> [N]`` (any field
    whose level set at ``threshold`` is the surface) and ``color(x [N, 3], d [N, 3]) ->
    [N, 3]``, in world coordinates inside ``bbox [2, 3]``."""

    density: Callable
    color: Callable
    threshold: float
    bbox: np.ndarray


class Method:
    """Defaults for the method protocol (see the module docstring)."""

    name: ClassVar[str] = ""
    progress: ClassVar[tuple[str, ...]] = ()
    """Metric names the progress bar shows besides loss and PSNR."""
    native_formats: ClassVar[tuple[str, ...]] = ()
    """File name endings `export` writes in the method's own formats (e.g. ``.spz``)."""
    refines_poses: ClassVar[bool] = False
    """Whether the method trains corrections of the training poses (``--pose-refine``)."""

    def __init__(self, config, bbox: np.ndarray):
        if getattr(config, "pose_refine", None) is not None and not self.refines_poses:
            raise UsageError(f"--pose-refine: --method {self.name} does not refine poses (--method nerf does)")
        self.config = config
        self.bbox = np.asarray(bbox, np.float64)
        self._steps: dict = {}

    # ---- training ------------------------------------------------------------------------

    def init(self, views: TrainViews) -> dict:
        raise NotImplementedError

    def needs_points(self) -> bool:
        """Whether training reads the views' triangulated points (`TrainViews.points`)."""
        return False

    def data(self, views: TrainViews):
        """The training views on the device (`sparsefield.datasets.batches.RayData`), with
        their keypoints when the method `needs_points`."""
        return make_ray_data(views.scene, views.ids, views.points if self.needs_points() else None)

    def place(self, state: dict) -> dict:
        return jax.tree_util.tree_map(jax.numpy.asarray, state)

    def stage(self, step: int) -> Hashable:
        """What the train step depends on besides the state (e.g. coarse or fine crops, a
        grid's resolution); steps of one stage share one compiled step."""
        return None

    def make_step(self, stage) -> Callable:
        """``fn(state, data, key) -> (state, metrics)`` for ``stage``, jitted."""
        raise NotImplementedError

    def train_step(self, step: int) -> Callable:
        """The compiled step for ``step`` (`make_step` of its `stage`, built once)."""
        stage = self.stage(step)
        if stage not in self._steps:
            self._steps[stage] = self.make_step(stage)
        return self._steps[stage]

    def after_step(self, state: dict, done: int, views: TrainViews) -> dict:
        return state

    def finish(self, state: dict) -> tuple[dict, dict]:
        return state, {}

    # ---- using a trained state -----------------------------------------------------------

    def render(self, state: dict, camera: Cameras, background) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def surface(self, state: dict) -> SurfaceField:
        raise NotImplementedError

    def export(self, state: dict, out: Path) -> Path | None:
        return None

    def pixel_renderer(self, state: dict) -> Callable | None:
        """``fn(state, camera, ix [N], iy [N], background) -> (rgb [N, 3], valid [N])``:
        the colours of pixels (column ``ix``, row ``iy``) of one camera, jittable and
        differentiable in ``camera.c2w``; ``valid`` marks the pixels rendered in full.
        None (the default): the method has none, and test poses cannot be aligned."""
        return None

    def num_params(self, state: dict) -> int:
        """Scalar parameters of ``state["params"]``."""
        return int(sum(np.prod(np.shape(p)) for p in jax.tree_util.tree_leaves(state["params"])))

    # ---- checkpoints ---------------------------------------------------------------------

    def template(self, arrays: dict[str, np.ndarray]) -> dict:
        """A state shaped like the one ``arrays`` were saved from (values unused)."""
        raise NotImplementedError

    def legacy_layout(self) -> tuple[str, ...]:
        """The state's components in the order checkpoint format 1 stored their leaves."""
        raise NotImplementedError(f"method {self.name!r} has no format-1 checkpoints")

    def to_arrays(self, state: dict) -> dict[str, np.ndarray]:
        return checkpoints.named_arrays(state)

    def from_arrays(self, arrays: dict[str, np.ndarray], version: int, source) -> dict:
        """The state a checkpoint holds (`sparsefield.checkpoints.read`'s output)."""
        template = self.template(arrays)
        if version == 1:
            arrays = legacy_named(arrays, template, self.legacy_layout(), source)
        state, missing = checkpoints.fill(template, arrays, source)
        if missing:
            print(f"note: {source} has no {', '.join(missing)}; starting them afresh")
        return state


def legacy_named(arrays: dict[str, np.ndarray], template: dict, layout: tuple[str, ...], source) -> dict[str, np.ndarray]:
    """Format-1 arrays (``arr_i``: the leaves of ``template``'s components in the order
    ``layout`` names them) under the names of the current state."""
    names = []
    for component in layout:
        names += [f"{component}/{n}" if n else component for n in checkpoints.leaf_names(template[component])]
    if sum(k.startswith("arr_") for k in arrays) != len(names):
        raise checkpoints.CheckpointError(f"{source}: format-1 checkpoint does not match the run's config")
    return {name: arrays[f"arr_{i}"] for i, name in enumerate(names)}
