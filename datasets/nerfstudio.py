"""Loader for nerfstudio / instant-ngp captures (one ``transforms.json``).

Owns what differs from the Blender format: a single file for all frames, global or
per-frame pinhole intrinsics (``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``, or
``camera_angle_x``), lens distortion ignored with one warning, nerfstudio's
``train_filenames`` / ``val_filenames`` / ``test_filenames`` split lists or its default
90% fraction split, and the scene box (explicit keys, instant-ngp's ``aabb_scale``, or
nerfstudio's box around the cameras). Frames are parsed and checked by the Blender loader.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from .blender import (
    _load_images,
    _make_cameras,
    _parse_frames,
    _read_json,
    _scene_bounds,
)
from .poses import CameraModelWarning, box_bounds, camera_box
from .scene import (
    DatasetError,
    SceneData,
    check_load_args,
    check_scene,
    check_splits,
    describe,
    real_array,
)

TRAIN_FRACTION = 0.9
"""nerfstudio's default ``train_split_fraction`` when the file lists no split."""
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
"""``camera_model`` values that are a pinhole camera once distortion is dropped."""
NGP_SCALE, NGP_OFFSET = 0.33, (0.5, 0.5, 0.5)
"""instant-ngp's defaults for ``scale`` and ``offset`` (NeRF -> ngp unit-cube coordinates)."""


def is_nerfstudio(path) -> bool:
    """True if ``path`` is a ``.json`` file or a folder holding ``transforms.json``."""
    path = Path(path)
    return (path.suffix == ".json" and path.is_file()) or (path / "transforms.json").is_file()


def load_nerfstudio(root, scale: float = 1.0, background=(1.0, 1.0, 1.0)) -> SceneData:
    """Load a nerfstudio / instant-ngp ``transforms.json`` dataset.

    Poses are the file's OpenGL camera-to-world ``transform_matrix`` unchanged (no
    re-orientation or rescaling); frames are sorted by image path, as nerfstudio does.

    Args:
        root: the folder holding ``transforms.json``, or the JSON file itself; image
            paths are relative to the file's folder.
        scale: image resize factor in (0, 1] (area averaging, intrinsics scaled alike).
        background: ``[3]`` RGB that RGBA images are composited on.

    Returns:
        `SceneData`. Splits: the file's ``train_filenames`` / ``val_filenames`` /
        ``test_filenames`` (test falls back to val); without them nerfstudio's default,
        ``train = linspace(0, N - 1, ceil(0.9 N))`` truncated to integers and test the rest.
        Box: ``bbox`` / ``near`` / ``far`` keys if present; else instant-ngp's
        ``aabb_scale`` cube ``(0.5 +- aabb_scale / 2 - offset) / scale`` when the file has
        ``aabb_scale``; else nerfstudio's cube around the cameras (`camera_box`).

    Raises:
        DatasetError: for a missing, malformed or inconsistent input, or a camera model
            that is not a pinhole camera with distortion (e.g. fisheye).
    """
    root, background = check_load_args(root, scale, background)
    path = root if root.is_file() else root / "transforms.json"
    root = path.parent
    if not path.is_file():
        raise DatasetError(path, "missing transforms.json")
    meta = _read_json(path, root)
    if not isinstance(meta.get("frames", []), list):
        raise DatasetError(path, f"'frames' must be a list, got {describe(meta['frames'])}")
    _check_camera_models(meta, path)
    frames = sorted(_parse_frames(meta, path, root), key=lambda f: f.name)
    if not frames:
        raise DatasetError(path, "'frames' is empty")
    splits = _splits(meta, path, [f.name for f in frames])
    check_splits(splits, path)
    centers = np.stack([f.c2w[:3, 3] for f in frames])
    bbox, near, far = _bounds(meta, path, centers)
    images, masks, (width, height) = _load_images(frames, scale, background, root)
    scene = SceneData(
        images=images,
        masks=masks,
        cameras=_make_cameras(frames, width, height).scaled(scale),
        splits=splits,
        bbox=bbox,
        near=near,
        far=far,
        background=background,
        root=root,
        names=[f.name for f in frames],
    )
    return check_scene(scene, path)


def _check_camera_models(meta: dict, path: Path) -> None:
    """Reject non-pinhole models; warn once per file about ignored distortion."""
    entries = [meta] + [f for f in meta.get("frames", []) if isinstance(f, dict)]
    for entry in entries:
        model = entry.get("camera_model", "OPENCV")
        if not isinstance(model, str) or model not in PINHOLE_MODELS:
            raise DatasetError(
                path,
                f"camera_model {describe(model)} is not supported (sparsefield uses pinhole "
                f"cameras; expected one of {', '.join(PINHOLE_MODELS)})",
            )
    used = sorted({k for e in entries for k in DISTORTION_KEYS if _nonzero(e.get(k))})
    if used:
        warnings.warn(
            f"{path}: lens distortion ({', '.join(used)}) ignored; "
            "sparsefield uses pinhole cameras "
            "(undistort the images for exact rays)",
            CameraModelWarning,
            stacklevel=3,
        )


def _nonzero(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value != 0


def _splits(meta: dict, path: Path, names: list[str]) -> dict[str, np.ndarray]:
    lists = {s: meta.get(f"{s}_filenames") for s in ("train", "val", "test")}
    if all(v is None for v in lists.values()):
        n = len(names)
        train = np.linspace(0, n - 1, math.ceil(n * TRAIN_FRACTION), dtype=int)
        test = np.setdiff1d(np.arange(n), train)
        return {
            "train": train.astype(np.int64),
            "val": np.zeros(0, np.int64),
            "test": test.astype(np.int64),
        }
    index = {}
    for i, name in enumerate(names):
        index[name] = index[os.path.splitext(name)[0]] = i
    splits = {}
    for split, entries in lists.items():
        key = f"{split}_filenames"
        if entries is None:
            splits[split] = np.zeros(0, np.int64)
            continue
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise DatasetError(path, f"'{key}' must be a list of file paths")
        ids = []
        for entry in entries:
            found = index.get(os.path.normpath(entry.removeprefix("./")))
            if found is None:
                raise DatasetError(path, f"'{key}' lists {describe(entry)}, which no frame has")
            if found in ids:
                raise DatasetError(path, f"'{key}' lists {describe(entry)} twice")
            ids.append(found)
        splits[split] = np.asarray(ids, np.int64)
    if len(splits["test"]) == 0:
        splits["test"] = splits["val"]
    return splits


def _bounds(meta: dict, path: Path, centers: np.ndarray) -> tuple[np.ndarray, float, float]:
    if "bbox" in meta:
        bbox = _scene_bounds({"bbox": meta["bbox"]}, path)[0]
    elif "aabb_scale" in meta:
        bbox = _ngp_box(meta, path)
    else:
        bbox = camera_box(centers)
    near, far = box_bounds(centers, bbox)
    if "near" in meta or "far" in meta:
        _, near, far = _scene_bounds({"near": near, "far": far, **meta}, path)
    return bbox, near, far


def _ngp_box(meta: dict, path: Path) -> np.ndarray:
    """instant-ngp's scene box in the file's (NeRF) coordinates.

    ngp maps a NeRF point ``p`` to ``p * scale + offset`` (then cycles the axes, which
    leaves its cube unchanged) and bounds the scene by the cube ``0.5 +- aabb_scale / 2``.
    """
    aabb = float(real_array(meta["aabb_scale"], path, "'aabb_scale'", ()))
    s = float(real_array(meta.get("scale", NGP_SCALE), path, "'scale'", ()))
    offset = real_array(meta.get("offset", NGP_OFFSET), path, "'offset'", (3,))
    if not (aabb > 0 and s > 0):
        raise DatasetError(
            path, f"'aabb_scale' and 'scale' must be positive, got {aabb:g}, {s:g}"
        )
    return np.stack([(0.5 - aabb / 2 - offset) / s, (0.5 + aabb / 2 - offset) / s]).astype(
        np.float32
    )
