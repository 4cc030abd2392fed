"""Writing generated data in the Blender / NeRF-synthetic layout: the camera splits (a
sphere band for train / val, an orbit for test), one split's RGBA PNGs and
``transforms_<split>.json``, and `staged_folder`, which makes a whole dataset appear at
once (written to a temporary sibling folder, then renamed into place)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ...cameras import look_at, orbit_poses
from ..views import BLENDER_8_VIEWS, fps_views
from .raycast import render_views
from .scenes import Rig, Scene


@contextlib.contextmanager
def staged_folder(out_dir: Path):
    """Yield an empty temporary sibling folder of ``out_dir`` and rename it to ``out_dir``
    when the block ends, replacing an existing ``out_dir``; on an error it is removed, so
    an interrupted run never leaves a partial dataset."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        yield tmp
        move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def split_poses(rig: Rig, n_train: int, n_val: int, n_test: int, seed: int) -> dict:
    """``{"train", "val", "test"}`` -> ``[n, 3, 4]`` cameras of ``rig``: train and val
    area-uniform on its band (independent streams of ``seed``; 100 train cameras put
    well-spread ones at the standard 8-view ids), test an even orbit."""
    train_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    test = orbit_poses((0, 0, 0), rig.radius, rig.test_elevation, n_test) if n_test else np.zeros((0, 3, 4))
    train = _spread_standard_views(_band_poses(rig, n_train, train_rng))
    return {"train": train, "val": _band_poses(rig, n_val, val_rng), "test": test}


def _spread_standard_views(poses: np.ndarray) -> np.ndarray:
    """Reorder 100 train cameras so the standard 8-view ids get well-spread cameras.

    The few-shot Blender protocol trains on frames 26 86 2 55 75 93 16 73, a list picked
    by hand for the Blender scenes' camera layout; on our random layout those frames
    would be an arbitrary, often clustered, draw. We put the farthest-point-sampled
    cameras at those ids instead, so the protocol means here what it means there.
    """

    if len(poses) != 100:
        return poses
    spread = list(fps_views(poses[:, :3, 3], len(BLENDER_8_VIEWS)))
    rest = [i for i in range(len(poses)) if i not in spread]
    order = [None] * len(poses)
    for slot, src in zip(BLENDER_8_VIEWS, spread):
        order[slot] = src
    free = iter(rest)
    order = [o if o is not None else next(free) for o in order]
    return poses[order]


def _band_poses(rig: Rig, n: int, rng) -> np.ndarray:
    """``[n, 3, 4]`` cameras at ``rig.radius`` looking at the origin, uniform in azimuth
    and ``sin(elevation)`` (area-uniform on the band)."""
    lo, hi = np.sin(np.radians(rig.elevation_range))
    az, el = rng.uniform(0, 2 * np.pi, n), np.arcsin(rng.uniform(lo, hi, n))
    eyes = rig.radius * np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1)
    return np.array([look_at(eye, (0.0, 0.0, 0.0)) for eye in eyes]).reshape(n, 3, 4)


def near_far(scene: Scene) -> tuple[float, float]:
    """Ray range holding the whole box seen from ``rig.radius``, rounded outwards to 0.01."""
    half_diagonal = float(np.linalg.norm(np.abs(np.asarray(scene.bbox)).max(0)))
    near = math.floor(100 * max(scene.rig.radius - half_diagonal, 0.01)) / 100
    return near, math.ceil(100 * (scene.rig.radius + half_diagonal)) / 100


def write_split(root: Path, split: str, scene: Scene, poses, resolution: int, supersample: int):
    """Render ``poses`` at ``resolution`` squared into ``root/<split>/r_<k>.png`` (RGBA,
    straight alpha) and write ``root/transforms_<split>.json``."""
    (root / split).mkdir()
    frames = []
    for k, pose in enumerate(poses):  # one view at a time keeps memory bounded
        rgb, alpha, _ = render_views(scene, pose[None], scene.rig.fov_x, resolution, resolution, supersample)
        rgba = np.round(255 * np.concatenate([rgb[0], alpha[0, ..., None]], -1)).astype(np.uint8)
        Image.fromarray(rgba).save(root / split / f"r_{k}.png", compress_level=3)
        matrix = np.vstack([np.asarray(pose, np.float64), [0, 0, 0, 1]]) + 0.0  # + 0.0: no "-0.0"
        frames.append({"file_path": f"./{split}/r_{k}", "transform_matrix": matrix.tolist()})
    near, far = near_far(scene)
    meta = {"camera_angle_x": scene.rig.fov_x, "bbox": [list(b) for b in scene.bbox], "near": near, "far": far,
            "frames": frames}
    (root / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))


def move_into_place(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; an existing ``dest`` is first set aside, then removed."""
    try:
        os.replace(tmp, dest)  # atomic; succeeds when dest is missing (or an empty folder)
    except OSError:
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.replace(dest, old / "previous")
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
