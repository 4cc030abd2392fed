"""Loader for nerfstudio / instant-ngp captures (one ``transforms.json``), and what each
tool's keys mean.

Owns what differs from the Blender format: a single file for all frames, global or
per-frame pinhole intrinsics (``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``, or
``camera_angle_x``), lens distortion ignored with one warning, nerfstudio's
``train_filenames`` / ``val_filenames`` / ``test_filenames`` split lists or its default
90% fraction split, and where the scene is:

- nerfstudio (``ns-process-data``): poses in the capture's world, which nerfstudio's
  dataparser levels, centres and rescales; so does this loader (`scene_frame`, kept off
  by ``orientation_override: none``). ``applied_transform`` (and ``applied_scale``) say how
  that world came from the COLMAP model's, ``ply_file_path`` holds the sparse points
  the box is fitted to, ``mask_path`` marks pixels to ignore (0) and loads as
  ``object_masks``.
- instant-ngp (``colmap2nerf.py``; any of ``aabb_scale``, ``scale``, ``offset``,
  ``aabb``): poses as written; ngp maps a point ``p`` to ``p * scale + offset`` and holds
  the scene in the unit cube there, which is the box (scaled to ngp's default size when
  ``scale`` differs). Where the COLMAP model colmap2nerf converted lies beside the file
  (``colmap_text/``), the box is that of its points inside the cube, levelled as a COLMAP
  model's. ``aabb_scale`` only says how far the background reaches (``outer_bbox``).

Frames are parsed and checked by the Blender loader.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
import trimesh

from .blender import _load_images, _make_cameras, _parse_frames, _read_json, _scene_bounds
from .colmap import image_pose, read_model
from .images import check_file_name, one_line, read_file, read_image, resize
from .poses import (
    CameraModelWarning,
    box_bounds,
    check_rotation,
    fit_bounds,
    points_box,
    scene_frame,
    similarity_between,
    transform_points,
    transform_poses,
)
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
NGP_KEYS = ("aabb_scale", "scale", "offset", "aabb")
"""Keys only instant-ngp files carry: with any of them the file means ngp's unit cube."""
NGP_SCALE, NGP_OFFSET = 0.33, (0.5, 0.5, 0.5)
"""instant-ngp's defaults for ``scale`` and ``offset`` (NeRF -> ngp unit-cube coordinates)."""
NGP_MAX_AABB_SCALE = 128
"""instant-ngp's largest ``aabb_scale`` (``1 << (NERF_CASCADES() - 1)``)."""
NGP_TEXT = "colmap_text"
"""Where ``colmap2nerf.py`` reads the COLMAP model it converts (``--text``), beside the
``transforms.json`` it writes."""
MASK_KEEP = 0.999
"""A resized mask pixel counts only if (nearly) all of its footprint counts."""


def is_nerfstudio(path) -> bool:
    """True if ``path`` is a ``.json`` file or a folder holding ``transforms.json``."""
    path = Path(path)
    return (path.suffix == ".json" and path.is_file()) or (path / "transforms.json").is_file()


def load_nerfstudio(root, scale: float = 1.0, background=(1.0, 1.0, 1.0)) -> SceneData:
    """Load a nerfstudio / instant-ngp ``transforms.json`` dataset.

    Frames are sorted by image path, as nerfstudio does; ``transform_matrix`` is OpenGL
    camera-to-world.

    Args:
        root: the folder holding ``transforms.json``, or the JSON file itself; image
            paths are relative to the file's folder.
        scale: image resize factor in (0, 1] (area averaging, intrinsics scaled alike).
        background: ``[3]`` RGB that RGBA images are composited on.

    Returns:
        `SceneData`. Splits: the file's ``train_filenames`` / ``val_filenames`` /
        ``test_filenames`` (test falls back to val); without them nerfstudio's default,
        ``train = linspace(0, N - 1, ceil(0.9 N))`` truncated to integers and test the rest.
        Where the scene is (see the module): ``bbox`` / ``near`` / ``far`` keys win, poses
        unchanged; an instant-ngp file gives ngp's unit cube (`ngp_boxes`), poses
        unchanged but for a ``scale`` other than 0.33, or the box of the converted model's
        points in it (`_ngp_placement`); a nerfstudio file is levelled,
        centred and scaled where its frame does not fit (`scene_frame`) and its box fitted to
        the ``ply_file_path`` points, or to the cameras without them (`fit_bounds`).

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
    pairs = sorted(zip(_parse_frames(meta, path, root), meta["frames"]), key=lambda p: p[0].name)
    if not pairs:
        raise DatasetError(path, "'frames' is empty")
    frames, raw = [p[0] for p in pairs], [p[1] for p in pairs]
    splits = _splits(meta, path, [f.name for f in frames])
    check_splits(splits, path)
    c2w = np.stack([f.c2w for f in frames])
    frame, bbox, near, far, outer = _placement(meta, path, c2w, [f.name for f in frames])
    moved = transform_poses(frame, c2w)
    frames = [dataclasses.replace(f, c2w=pose) for f, pose in zip(frames, moved)]
    images, masks, (width, height) = _load_images(frames, scale, background, root)
    _warn_unused(raw, path)
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
        object_masks=_object_masks(raw, path, root, (width, height), images.shape[1:3]),
        transform=frame @ _source_transform(meta, path),
        outer_bbox=outer,
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
        if entry.get("is_fisheye", False) not in (False, None):  # instant-ngp's flag
            raise DatasetError(
                path, "'is_fisheye' is set: fisheye cameras are not supported (sparsefield "
                "uses pinhole cameras; undistort the images first)",
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


# ---- where the scene is ----------------------------------------------------------------


def _placement(meta: dict, path: Path, c2w: np.ndarray, names: list[str]):
    """``(frame [4, 4], bbox, near, far, outer_bbox)``: the transform into the scene's
    frame, then the bounds in it (see `load_nerfstudio`)."""
    frame, outer = np.eye(4), None
    if "bbox" in meta:
        bbox = _scene_bounds({"bbox": meta["bbox"]}, path)[0]
        near, far = box_bounds(c2w[:, :3, 3], bbox)
    elif any(key in meta for key in NGP_KEYS):
        frame, bbox, near, far, outer = _ngp_placement(meta, path, c2w, names)
    else:
        points = _read_points(meta, path)
        if meta.get("orientation_override", "up") != "none":
            frame = scene_frame(c2w[:, :3], points)
        moved = None if points is None else transform_points(frame, points)
        bbox, near, far = fit_bounds(transform_poses(frame, c2w), moved)
    if "near" in meta or "far" in meta:
        _, near, far = _scene_bounds({"near": near, "far": far, **meta}, path)
    return frame, bbox, near, far, outer


def ngp_boxes(meta: dict, path: Path) -> tuple[np.ndarray, np.ndarray | None, float]:
    """instant-ngp's scene box and background box in the file's (NeRF) coordinates, and
    the factor that brings them to ngp's default size.

    ngp maps a NeRF point ``p`` to ``p * scale + offset`` (then cycles the axes, which
    leaves its cubes unchanged; ``aabb`` instead sets ``scale = 1 / longest side`` and
    centres that box at 0.5). The scene is the unit cube ``[0, 1]^3`` there (ngp's finest
    density cascade); ``aabb_scale`` (a power of two up to 128) grows its training box to
    ``0.5 +- aabb_scale / 2`` for the background (``nerf_loader.cu``, ``testbed_nerf.cu``).

    Returns:
        ``bbox`` ``(0 - offset) / scale .. (1 - offset) / scale``, the ``aabb_scale`` box
        the same way (None when ``aabb_scale`` is 1), both ``[2, 3]``, and
        ``scale / 0.33``: scaling the file by it gives the unit cube ngp's default side
        ``1 / 0.33``, the size colmap2nerf writes and the defaults are tuned for.
    """
    aabb_scale = float(real_array(meta.get("aabb_scale", 1), path, "'aabb_scale'", ()))
    if not (1 <= aabb_scale <= NGP_MAX_AABB_SCALE and math.log2(aabb_scale).is_integer()):
        raise DatasetError(
            path, f"'aabb_scale' must be a power of two from 1 to 128, got {aabb_scale:g}"
        )
    if "aabb" in meta:
        box = real_array(meta["aabb"], path, "'aabb'", (2, 3))
        s = 1.0 / max(float(np.max(np.abs(box[1] - box[0]))), 1e-6)
        offset = 0.5 - s * box.mean(0)
    else:
        s = float(real_array(meta.get("scale", NGP_SCALE), path, "'scale'", ()))
        value = meta.get("offset", NGP_OFFSET)
        scalar = isinstance(value, (int, float)) and not isinstance(value, bool)
        offset = real_array(value, path, "'offset'", () if scalar else (3,)) * np.ones(3)
    if not s > 0:
        raise DatasetError(path, f"'scale' must be positive, got {s:g}")
    half = np.array([[-0.5], [0.5]])
    inner = ((0.5 + half - offset) / s).astype(np.float32)
    outer = (0.5 + aabb_scale * half - offset) / s if aabb_scale > 1 else None
    return inner, None if outer is None else outer.astype(np.float32), s / NGP_SCALE


def _ngp_placement(meta: dict, path: Path, c2w: np.ndarray, names: list[str]):
    """`_placement` of an instant-ngp file: ngp's unit cube at ngp's default size, poses
    kept; or, with the converted model's points (`_ngp_points`), the box of those inside
    the cube, levelled like a COLMAP model's where ngp's frame does not fit it."""
    cube, outer, size = ngp_boxes(meta, path)
    points = _ngp_points(path, names, c2w)
    if points is not None:
        points = points[np.all((points > cube[0]) & (points < cube[1]), axis=1)]
    if points is None or points_box(points) is None:
        frame = np.diag([size] * 3 + [1.0])
        near, far = box_bounds(transform_poses(frame, c2w)[:, :, 3], cube * size)
        return frame, cube * size, near, far, None if outer is None else outer * size
    frame = scene_frame(c2w[:, :3], points)
    bbox, near, far = fit_bounds(transform_poses(frame, c2w), transform_points(frame, points))
    if outer is not None:  # the box around the moved background box
        corners = transform_points(frame, np.stack(np.meshgrid(*outer.T, indexing="ij"), -1).reshape(-1, 3))
        outer = np.stack([corners.min(0), corners.max(0)]).astype(np.float32)
    return frame, bbox, near, far, outer


def _ngp_points(path: Path, names: list[str], c2w: np.ndarray) -> np.ndarray | None:
    """``[P, 3]`` points of the COLMAP model colmap2nerf converted (`NGP_TEXT` beside the
    file) in the file's frame, or None without it. colmap2nerf levels and rescales the
    model's world; the similarity between the model's camera centres and the file's
    (images matched by file name) undoes that. A model that does not fit the file's
    cameras is named in one warning and not used."""
    folder = path.parent / NGP_TEXT
    if not (folder / "points3D.txt").is_file():
        return None
    try:
        _, images, points = read_model(folder, path.parent)
    except DatasetError as e:
        return _unused(folder, f"unreadable ({e.problem})")
    by_name = {os.path.basename(im.name): image_pose(im)[:, 3] for im in images}
    pairs = [(by_name[os.path.basename(n)], c[:3, 3]) for n, c in zip(names, c2w)
             if os.path.basename(n) in by_name]
    if points is None or len(points) == 0 or len(pairs) < 3:
        return _unused(folder, f"has {len(pairs)} of the file's images and no points to use"
                       if len(pairs) < 3 else "has no points")
    src, dst = (np.stack(side) for side in zip(*pairs))
    to_file = similarity_between(src, dst)
    miss = np.linalg.norm(transform_points(to_file, src) - dst, axis=1).max()
    if not miss <= 1e-3 * max(float(np.ptp(dst, axis=0).max()), 1e-12):
        return _unused(folder, "its cameras are not the file's cameras moved by one similarity")
    return transform_points(to_file, points)


def _unused(folder: Path, why: str) -> None:
    warnings.warn(f"{folder}: {why}; the box is instant-ngp's unit cube", UserWarning, stacklevel=5)
    return None


def _source_transform(meta: dict, path: Path) -> np.ndarray:
    """``[4, 4]`` from the capture's original world to the file's: ``applied_scale``
    times ``applied_transform`` (nerfstudio's ``colmap_to_json`` swaps y and z and flips
    z: ``[[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0]]``), identity without them."""
    out = np.eye(4)
    if "applied_transform" in meta:
        given = real_array(meta["applied_transform"], path, "'applied_transform'", (None, 4))
        if given.shape[0] not in (3, 4):
            raise DatasetError(path, f"'applied_transform' must be 3x4 or 4x4, got {given.shape}")
        check_rotation(given[:3, :3], path, "'applied_transform'")
        out[:3] = given[:3]
    if "applied_scale" in meta:
        factor = float(real_array(meta["applied_scale"], path, "'applied_scale'", ()))
        if not factor > 0:
            raise DatasetError(path, f"'applied_scale' must be positive, got {factor:g}")
        out[:3] *= factor
    return out


def _read_points(meta: dict, path: Path) -> np.ndarray | None:
    """``[P, 3]`` points of ``ply_file_path`` (nerfstudio writes them in the file's world,
    ``applied_transform`` already applied), or None without the key or points."""
    if "ply_file_path" not in meta:
        return None
    name = check_file_name(meta["ply_file_path"], path, "'ply_file_path'")
    ply = path.parent / os.path.normpath(name)
    try:
        cloud = trimesh.load(io.BytesIO(read_file(ply, path.parent)), file_type="ply")
    except DatasetError:
        raise
    except Exception as e:  # trimesh's parsers raise many types; all mean "unreadable"
        raise DatasetError(ply, f"cannot read the point cloud ({one_line(e)})") from None
    vertices = getattr(cloud, "vertices", None)
    if vertices is None or len(vertices) == 0:
        return None
    return real_array(np.asarray(vertices), ply, "vertex x y z", (None, 3))


# ---- pixels beside the images ----------------------------------------------------------


def _object_masks(raw: list, path: Path, root: Path, size, shape) -> np.ndarray | None:
    """``[C, h, w]`` {0, 1} masks of every frame's ``mask_path`` (nerfstudio: 0 = ignore
    the pixel), resized to the images (`MASK_KEEP`), or None when no frame has one."""
    given = [isinstance(f, dict) and "mask_path" in f for f in raw]
    if not any(given):
        return None
    if not all(given):
        k = given.index(False)
        raise DatasetError(path, f"frame {k} has no 'mask_path' but others do (one per frame)")
    out = np.empty((len(raw), *shape), np.float32)
    for k, frame in enumerate(raw):
        name = check_file_name(frame["mask_path"], path, f"frame {k}: 'mask_path'")
        mask_file = root / os.path.normpath(name.removeprefix("./"))
        pixels = read_image(mask_file, root)
        if pixels.shape[1::-1] != tuple(size):
            raise DatasetError(
                mask_file, f"mask is {pixels.shape[1]}x{pixels.shape[0]} but the image is "
                f"{size[0]}x{size[1]}",
            )
        out[k] = resize(pixels[..., 0], shape[1], shape[0]) >= MASK_KEEP
    warnings.warn(
        f"{path}: mask_path masks loaded as object masks (0 = ignore) for masked metrics; "
        "training still sees every pixel",
        UserWarning,
        stacklevel=3,
    )
    return out


def _warn_unused(raw: list, path: Path) -> None:
    """One line for per-frame data that sparsefield does not use (depth maps)."""
    depth = [k for k in ("depth_file_path", "depth_path") if any(k in f for f in raw)]
    if depth:
        warnings.warn(
            f"{path}: {', '.join(depth)} ignored (sparsefield trains on colour only)",
            UserWarning,
            stacklevel=3,
        )
