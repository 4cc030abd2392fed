"""Loader for the Blender / NeRF-synthetic format (``transforms_{train,val,test}.json``).

Owns reading the JSON files, validating poses, intrinsics and image paths, decoding the
images (RGBA composited on a background, alpha kept as masks), optional area-averaged
down-scaling, and assembling one `SceneData`. Every bad input raises `DatasetError` naming
the file and the problem.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from ..cameras import Cameras
from .images import (
    IMAGE_SUFFIXES,
    check_file_name,
    check_inside,
    load_images,
    one_line,
    read_file,
)
from .poses import pinhole_cameras
from .scene import (
    DatasetError,
    SceneData,
    check_load_args,
    check_scene,
    check_splits,
    describe,
    real_array,
)

SPLITS = ("train", "val", "test")
DEFAULT_BBOX = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))
DEFAULT_NEAR, DEFAULT_FAR = 2.0, 6.0
_INTRINSIC_KEYS = ("camera_angle_x", "fl_x", "fl_y", "cx", "cy", "w", "h")
# NeRF-synthetic writes `file_path` without an extension; these are tried in order.
_IMAGE_SUFFIXES = IMAGE_SUFFIXES
_TOL = 1e-3
_WANTED = {
    "camera_angle_x": "an angle in (0, pi) radians",
    "w": "a whole number of pixels",
    "h": "a whole number of pixels",
}


@dataclasses.dataclass(frozen=True)
class _Frame:
    """One parsed frame: where its image is and how it was posed."""

    image: Path
    name: str
    c2w: np.ndarray  # [4, 4] float64
    intrinsics: dict  # the intrinsic keys that apply to this frame
    source: Path  # the JSON file that listed it


def is_blender(path) -> bool:
    """True if ``path`` is a folder holding ``transforms_train.json``."""
    return (Path(path) / "transforms_train.json").is_file()


def load_blender(root, scale: float = 1.0, background=(1.0, 1.0, 1.0)) -> SceneData:
    """Load a Blender / NeRF-synthetic dataset.

    Args:
        root: folder holding ``transforms_train.json`` (required) and optionally
            ``transforms_val.json`` / ``transforms_test.json``.
        scale: image resize factor in (0, 1]; e.g. 0.5 halves the resolution with area
            averaging and scales the intrinsics by the same factor.
        background: ``[3]`` RGB in [0, 1] that RGBA images are composited on:
            ``rgb * alpha + background * (1 - alpha)``.

    Returns:
        `SceneData` with the splits' images concatenated in file order (train, val, test)
        and ``splits`` indexing into them. ``masks`` is the alpha channel, or None when no
        image has one. Top-level ``bbox``, ``near`` and ``far`` in the train JSON override
        the defaults (``[[-1.5]*3, [1.5]*3]``, 2, 6).

    Raises:
        DatasetError: for any missing, malformed or inconsistent input.
    """
    root, background = check_load_args(root, scale, background)
    if not root.is_dir():
        raise DatasetError(root, "not a folder")
    train_json = root / "transforms_train.json"
    if not train_json.is_file():
        raise DatasetError(train_json, "missing transforms_train.json")

    frames, splits, train_meta = [], {}, None
    for split in SPLITS:
        path = root / f"transforms_{split}.json"
        if not path.is_file():  # only train is required; a missing split is empty
            splits[split] = np.zeros(0, np.int64)
            continue
        meta = _read_json(path, root)
        train_meta = meta if split == "train" else train_meta
        parsed = _parse_frames(meta, path, root)
        splits[split] = np.arange(len(frames), len(frames) + len(parsed), dtype=np.int64)
        frames += parsed
    check_splits(splits, train_json)

    bbox, near, far = _scene_bounds(train_meta, train_json)  # before the slow decoding
    images, masks, (width, height) = _load_images(frames, scale, background, root)
    cameras = _make_cameras(frames, width, height).scaled(scale)
    scene = SceneData(
        images=images,
        masks=masks,
        cameras=cameras,
        splits=splits,
        bbox=bbox,
        near=near,
        far=far,
        background=background,
        root=root,
        names=[f.name for f in frames],
    )
    return check_scene(scene, train_json)


def _read_json(path: Path, root: Path) -> dict:
    """The top-level object of a JSON file inside ``root`` (UTF-8, a byte-order mark allowed)."""
    try:
        text = read_file(path, root).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(path, f"not UTF-8 text ({one_line(e)})") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(
            path, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except RecursionError:
        raise DatasetError(path, "malformed JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise DatasetError(path, f"malformed JSON ({one_line(e)})") from None
    if not isinstance(meta, dict):
        raise DatasetError(path, f"expected a JSON object at the top level, got {_kind(meta)}")
    return meta


def _kind(value) -> str:
    """The JSON name of a value's type (``"a list"``, ``"a string"``, ...)."""
    names = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _parse_frames(meta: dict, path: Path, root: Path) -> list[_Frame]:
    """Validate the ``frames`` list of one split file and resolve its image paths."""
    if "frames" not in meta:
        raise DatasetError(path, "missing key 'frames'")
    if not isinstance(meta["frames"], list):
        raise DatasetError(path, "'frames' must be a list")
    top = _check_intrinsics({k: meta[k] for k in _INTRINSIC_KEYS if k in meta}, path, "")
    frames, seen = [], {}
    for k, raw in enumerate(meta["frames"]):
        if not isinstance(raw, dict):
            raise DatasetError(path, f"frame {k} is not a JSON object")
        for key in ("file_path", "transform_matrix"):
            if key not in raw:
                raise DatasetError(path, f"frame {k} is missing key '{key}'")
        # Per-frame intrinsics (nerfstudio style) override the file's top-level ones.
        own = {key: raw[key] for key in _INTRINSIC_KEYS if key in raw}
        intrinsics = {**top, **_check_intrinsics(own, path, f"frame {k}: ")}
        if "fl_x" not in intrinsics and "camera_angle_x" not in intrinsics:
            raise DatasetError(
                path,
                f"frame {k} has no intrinsics (expected 'camera_angle_x' or 'fl_x', 'fl_y', "
                "'cx', 'cy')",
            )
        image, name = _resolve_image(raw["file_path"], root, path, k)
        first = seen.setdefault(image.resolve(), k)
        if first != k:
            raise DatasetError(
                path, f"frame {k}: file_path {describe(raw['file_path'])} is frame {first}'s image"
            )
        c2w = _check_pose(raw["transform_matrix"], path, k)
        frames.append(_Frame(image, name, c2w, intrinsics, path))
    return frames


def _check_intrinsics(intr: dict, path: Path, where: str) -> dict:
    """``intr`` with every value a float in range: ``camera_angle_x`` in (0, pi), the
    others positive, ``w`` and ``h`` whole pixels. ``where`` prefixes the message."""
    out = {}
    for key, value in intr.items():
        number = float(real_array(value, path, f"{where}'{key}'", ()))
        upper = math.pi if key == "camera_angle_x" else math.inf
        whole = key not in ("w", "h") or number == round(number)
        if not (0 < number < upper and whole):
            wanted = _WANTED.get(key, "a positive number")
            raise DatasetError(path, f"{where}'{key}' must be {wanted}, got {describe(value)}")
        out[key] = number
    return out


def _resolve_image(file_path, root: Path, path: Path, k: int) -> tuple[Path, str]:
    """Image path for a frame's ``file_path`` (with or without extension) inside ``root``."""
    check_file_name(file_path, path, f"frame {k}: 'file_path'")
    name = os.path.normpath(file_path.removeprefix("./"))
    base = root / name
    candidates = [base] + [base.with_name(base.name + s) for s in _IMAGE_SUFFIXES]
    image = next((c for c in candidates if c.is_file()), base)
    # resolve() follows `..` and symlinks, so a link pointing elsewhere is caught here,
    # where the message can name the frame; `read_file` checks again when it reads.
    try:
        check_inside(image, root)
    except DatasetError as e:
        problem = f"frame {k}: file_path {describe(file_path)} {e.problem}"
        raise DatasetError(path, problem) from None
    if not image.is_file():
        tried = "" if base.suffix else f", also tried {', '.join(_IMAGE_SUFFIXES)}"
        raise DatasetError(base, f"image file not found (frame {k} of {path.name}{tried})")
    try:
        name = image.relative_to(root).as_posix()
    except ValueError:  # an absolute file_path that still lies inside root
        name = image.resolve().relative_to(root.resolve()).as_posix()
    return image, name


def _check_pose(matrix, path: Path, k: int) -> np.ndarray:
    """``[4, 4]`` rigid camera-to-world matrix, or `DatasetError`."""
    m = real_array(matrix, path, f"frame {k}: transform_matrix", (4, 4))
    if np.max(np.abs(m[3] - (0.0, 0.0, 0.0, 1.0))) > _TOL:
        raise DatasetError(path, f"frame {k}: transform_matrix last row must be [0, 0, 0, 1]")
    rot = m[:3, :3]
    orth_err = np.max(np.abs(rot.T @ rot - np.eye(3)))
    det = np.linalg.det(rot)
    if orth_err > _TOL or abs(det - 1.0) > _TOL:
        raise DatasetError(
            path,
            f"frame {k}: transform_matrix rotation is not rigid "
            f"(max |R^T R - I| = {orth_err:.3g}, det R = {det:.4g})",
        )
    return m


def _load_images(frames, scale, background, root: Path):
    """Decode every frame's image (see `load_images`), checking its size against the
    frame's intrinsics; returns ``images``, ``masks`` and the full-resolution ``(W, H)``."""
    return load_images(
        [f.image for f in frames],
        scale,
        background,
        check=lambda i, width, height: _check_size(frames[i], width, height),
        root=root,
    )


def _check_size(frame: _Frame, width: int, height: int) -> None:
    """The image size must agree with the frame's intrinsics (``w``/``h`` or ``cx``/``cy``)."""
    intr = frame.intrinsics
    if "w" in intr or "h" in intr:
        want_w, want_h = intr.get("w", width), intr.get("h", height)
        if (want_w, want_h) != (width, height):
            raise DatasetError(
                frame.image,
                f"image is {width}x{height} but {frame.source.name} gives "
                f"w={want_w:g}, h={want_h:g}",
            )
    elif "fl_x" in intr:
        # Without w/h the principal point implies the size; real principal points sit
        # within a few percent of the centre, so 10% of the size separates "off-centre"
        # from "intrinsics of a different resolution".
        for key, size in (("cx", width), ("cy", height)):
            if key in intr and abs(2.0 * intr[key] - size) > 0.2 * size:
                raise DatasetError(
                    frame.image,
                    f"image is {width}x{height} but {key}={intr[key]:g} in "
                    f"{frame.source.name} implies a size of about {2 * intr[key]:g} px",
                )


def _make_cameras(frames, width: int, height: int) -> Cameras:
    """Full-resolution cameras from each frame's intrinsics and pose."""
    fx, fy, cx, cy = np.array([_pinhole(f.intrinsics, width, height) for f in frames]).T
    return pinhole_cameras(np.stack([f.c2w for f in frames]), fx, fy, cx, cy, width, height)


def _pinhole(intr: dict, width: int, height: int) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)``; from ``camera_angle_x``: ``fx = fy = W / (2 tan(fov_x / 2))``."""
    if "fl_x" in intr:
        fx = float(intr["fl_x"])
        return (
            fx,
            float(intr.get("fl_y", fx)),
            intr.get("cx", width / 2),
            intr.get("cy", height / 2),
        )
    focal = 0.5 * width / math.tan(0.5 * intr["camera_angle_x"])
    return focal, focal, width / 2, height / 2


def _scene_bounds(meta: dict, path: Path) -> tuple[np.ndarray, float, float]:
    """``bbox``, ``near``, ``far`` from the train JSON's optional extension keys."""
    bbox = real_array(meta.get("bbox", DEFAULT_BBOX), path, "'bbox'", (2, 3))
    if not np.all(bbox[0] < bbox[1]):
        raise DatasetError(
            path,
            f"'bbox' must be [[min x, y, z], [max x, y, z]] with min < max, got {bbox.tolist()}",
        )
    near = float(real_array(meta.get("near", DEFAULT_NEAR), path, "'near'", ()))
    far = float(real_array(meta.get("far", DEFAULT_FAR), path, "'far'", ()))
    if not 0.0 <= near < far:
        raise DatasetError(
            path, f"'near' and 'far' must satisfy 0 <= near < far, got {near:g}, {far:g}"
        )
    return bbox.astype(np.float32), near, far
