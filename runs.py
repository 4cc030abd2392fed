"""The run folder: what a trained run is on disk, and reading it back.

A run folder holds everything ``render``, ``eval``, ``export`` and ``view`` need:

    config.json     the resolved `RunConfig` and run facts (view ids, bbox, test ids, ...)
    checkpoints/    training state by name (`sparsefield.checkpoints`), newest two kept
    history.json    loss and PSNR curves (also inside each checkpoint)
    metrics.json    after evaluation: PSNR, SSIM, LPIPS, per-frame scores, train time
    renders/, report.html

`load_run` builds the run's method (`sparsefield.methods`) and restores its state.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from . import checkpoints
from .cameras import Cameras, corrected_poses
from .config import CONFIG_FORMAT, RunConfig, check_config, config_from_json, config_to_json
from .errors import UsageError
from .files import atomic_write_json, file_in_the_way, only_stale_temps
from .methods import Method, find_method
from .methods.pose_refinement import without_common_motion

CONFIG = "config.json"
HISTORY = "history.json"


def is_run(folder: Path) -> bool:
    return (Path(folder) / CONFIG).is_file()


def check_out_folder(out: Path) -> None:
    """A run may be written to ``out`` if it is absent, an empty folder (or one holding
    only the temporary file of a run killed while writing its first file), or a run folder
    (then training resumes it). Anything else is the user's and is refused.

    Raises:
        UsageError: ``out`` or a folder above it is a file, or ``out`` is a non-empty
            folder that is not a run.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a run folder")
    if file_in_the_way(out) is not None:
        raise UsageError(f"--out {out}: {file_in_the_way(out)} is a file, not a folder")
    if out.is_dir() and not is_run(out) and not only_stale_temps(out):
        raise UsageError(f"--out {out}: folder is not empty and is not a sparsefield run; choose a new folder")


def save_config(config: RunConfig, run: Path, facts: dict) -> None:
    """Write ``config.json``: the resolved config plus run facts (view ids, bbox, ...)."""
    payload = {"format": CONFIG_FORMAT, "config": config_to_json(config), **facts}
    atomic_write_json(Path(run) / CONFIG, payload, indent=2)


def load_config(run: Path) -> tuple[RunConfig, dict]:
    """Read back ``config.json``: the config, checked as a new one is (`check_config`),
    and the run facts.

    Raises:
        UsageError: naming the file, if it is absent, unreadable or holds a value that
            makes no sense.
    """
    path = Path(run) / CONFIG
    if not Path(run).is_dir():
        raise UsageError(f"{run}: no such run folder")
    if not path.is_file():
        raise UsageError(f"{run}: not a sparsefield run (it has no config.json)")
    try:
        payload = json.loads(path.read_text())
        payload.pop("format", None)
        config = config_from_json(payload.pop("config"))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise UsageError(f"{path}: unreadable run config ({err})") from None
    if not isinstance(config, RunConfig):
        raise UsageError(f"{path}: unreadable run config (no RunConfig)")
    try:
        check_config(config)
    except UsageError as err:
        raise UsageError(f"{path}: {err}") from None
    return config, payload


def load_history(run: Path) -> dict:
    """``{"train": [...], "eval": [...], "train_seconds": s}`` of ``history.json`` (empty
    lists when absent)."""
    path = Path(run) / HISTORY
    if not path.exists():
        return {"train": [], "eval": []}
    try:
        history = json.loads(path.read_text())
    except (ValueError, RecursionError):
        raise UsageError(f"{path}: unreadable training history (not JSON)") from None
    if not isinstance(history, dict) or not isinstance(history.get("train"), list):
        raise UsageError(f"{path}: unreadable training history (no 'train' list)")
    return history


def save_history(run: Path, history: dict) -> None:
    """Write ``history.json`` (strict JSON: a non-finite value is written as null)."""
    atomic_write_json(Path(run) / HISTORY, history)


@dataclasses.dataclass
class LoadedRun:
    """A run read back from its folder: config, run facts, its method and trained state
    (and the training history its checkpoint holds, if any)."""

    run: Path
    config: RunConfig
    facts: dict
    method: Method
    state: dict
    history: dict | None = None

    @property
    def step(self) -> int:
        return int(np.asarray(self.state["step"]))

    def train_view_ids(self, scene) -> np.ndarray:
        """Scene indices of the views the run trained on, read from its facts:
        ``train_view_ids`` are positions in the train split (scene indices under a
        ``--protocol``); a run without them (written before they were logged) counts the
        whole train split."""
        logged = np.asarray(self.facts.get("train_view_ids", []), np.int64)
        if not len(logged):
            return np.asarray(scene.split("train"), np.int64)
        return logged if self.config.protocol is not None else np.asarray(scene.split("train"))[logged]

    def train_cameras(self, scene) -> Cameras:
        """The cameras of the views the run trained on (`train_view_ids`), where the run
        refined them (``--pose-refine``) as refined: each moved by its correction with
        the corrections' common motion left out, as training moved its rays, so the
        cameras meet the scene the run learnt."""
        cams = scene.cameras[self.train_view_ids(scene)]
        deltas = self.state.get("params", {}).get("poses")
        if deltas is None:
            return cams
        deltas = np.asarray(deltas, np.float32)
        if deltas.shape != (len(cams), 6):
            raise UsageError(f"{self.run}: the checkpoint holds {len(deltas)} pose corrections "
                             f"for {len(cams)} training views")
        bbox = np.asarray(self.method.bbox, np.float64)
        diagonal = float(np.linalg.norm(bbox[1] - bbox[0]))
        c2w = jnp.asarray(cams.c2w, jnp.float32)
        moved = corrected_poses(c2w, without_common_motion(jnp.asarray(deltas), c2w, diagonal), diagonal)
        return dataclasses.replace(cams, c2w=np.asarray(moved))

    def render(self, camera: Cameras, background) -> dict[str, np.ndarray]:
        """``rgb [H, W, 3]``, ``depth [H, W]``, ``opacity [H, W]`` (and what else the
        method gives) of one camera, as numpy arrays."""
        return self.method.render(self.state, camera, background)


def build_method(config: RunConfig, bbox) -> Method:
    """The run's method, built from its config and scene box."""
    return find_method(config.method)(config, np.asarray(bbox, np.float64))


def load_run(run: Path) -> LoadedRun:
    """Read a run folder: config, facts and the newest readable checkpoint.

    Raises:
        UsageError: not a run, no checkpoint yet, no readable checkpoint, or one of
            another method.
    """
    config, facts = load_config(run)
    method = build_method(config, scene_box(run, facts))
    found = checkpoints.read_latest(run, method=method.name)
    if found is None:
        raise UsageError(f"{Path(run) / checkpoints.FOLDER}: the run has no checkpoint yet (train it first)")
    path, version, arrays, history = found
    return LoadedRun(Path(run), config, facts, method, method.from_arrays(arrays, version, path), history)


def scene_box(run: Path, facts: dict) -> np.ndarray:
    """The ``[2, 3]`` scene box ``config.json`` records.

    Raises:
        UsageError: it is absent or not six finite numbers.
    """
    box = facts.get("bbox")
    try:
        box = np.asarray(box, np.float64)
    except (TypeError, ValueError):
        box = None
    if box is None or box.shape != (2, 3) or not all(math.isfinite(v) for v in box.ravel()):
        raise UsageError(f"{Path(run) / CONFIG}: no scene box ('bbox': [[x, y, z], [x, y, z]])")
    return box
