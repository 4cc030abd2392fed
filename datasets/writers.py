"""Writers for the formats sparsefield reads: LLFF, DTU (IDR), nerfstudio, instant-ngp
and COLMAP.

They take `Cameras` (OpenGL) and images and write each format in its own convention, so
the synthetic generator can produce every layout and the loader tests can round-trip
known cameras; they also hand a sparsefield scene to other tools, laid out as those tools'
own converters do (nerfstudio's ``colmap_to_json``: ``applied_transform``, an ASCII
``sparse_pc.ply``; instant-ngp's ``colmap2nerf.py``: its levelled, "NeRF sized" frame and
``aabb_scale``). Images are written as 8-bit PNGs.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from ..cameras import Cameras
from .colmap import MODEL_IDS
from .poses import (
    opencv_to_opengl,
    opengl_to_llff,
    rotation_between,
    rotation_to_quaternion,
    transform_poses,
)


def save_png(path: Path, pixels: np.ndarray) -> None:
    """Write ``[H, W]`` / ``[H, W, C]`` floats in [0, 1] (or uint8) as an 8-bit PNG."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        pixels = np.round(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_llff(root, cameras: Cameras, images, bounds, folder: str = "images") -> Path:
    """Write ``poses_bounds.npy`` and ``<folder>/image_<k>.png``.

    Each row is the 3x5 ``[R | t | hwf]`` (columns [down, right, back], centre,
    ``(H, W, f)``) flattened row-major, then the image's near and far depth bounds.
    LLFF has one focal length and a centred principal point, so ``fx`` is written.

    Args:
        cameras: ``N`` cameras (OpenGL).
        images: ``[N, H, W, C]`` pixels.
        bounds: ``[N, 2]`` near and far depth of the content seen by each image.
    """
    root = Path(root)
    c2w = opengl_to_llff(np.asarray(cameras.c2w, np.float64))
    hwf = np.stack(
        [
            np.full(len(c2w), cameras.height),
            np.full(len(c2w), cameras.width),
            np.asarray(cameras.fx),
        ],
        -1,
    )
    rows = np.concatenate([c2w, hwf[:, :, None]], axis=2).reshape(len(c2w), 15)
    root.mkdir(parents=True, exist_ok=True)
    np.save(
        root / "poses_bounds.npy", np.concatenate([rows, np.asarray(bounds, np.float64)], axis=1)
    )
    for k, pixels in enumerate(images):
        save_png(root / folder / f"image_{k:03d}.png", pixels)
    return root


def projection_matrices(cameras: Cameras) -> np.ndarray:
    """``[N, 3, 4]`` OpenCV projections ``K [R | t]`` (world-to-pixel) of OpenGL cameras."""
    c2w = opencv_to_opengl(np.asarray(cameras.c2w, np.float64))
    out = []
    for k in range(len(c2w)):
        rot = c2w[k, :, :3].T
        intr = np.array(
            [
                [cameras.fx[k], 0.0, cameras.cx[k]],
                [0.0, cameras.fy[k], cameras.cy[k]],
                [0.0, 0.0, 1.0],
            ],
            np.float64,
        )
        out.append(intr @ np.concatenate([rot, (-rot @ c2w[k, :, 3])[:, None]], axis=1))
    return np.stack(out)


def write_dtu(root, cameras: Cameras, images, masks=None, scale_mat=None) -> Path:
    """Write an IDR-layout scan: ``cameras.npz``, ``image/<k:06d>.png``, ``mask/<k:03d>.png``.

    ``world_mat_k = P_k scale_mat^{-1}`` (4x4), so that IDR's ``world_mat @ scale_mat``
    gives back the projection ``P_k`` of the cameras' own (normalised) world.

    Args:
        cameras: ``N`` cameras (OpenGL) in the normalised world.
        images: ``[N, H, W, C]`` pixels; masks: ``[N, H, W]`` (1 = object) or None.
        scale_mat: ``[4, 4]`` normalisation (identity when None).
    """
    root = Path(root)
    scale_mat = np.eye(4) if scale_mat is None else np.asarray(scale_mat, np.float64)
    arrays = {}
    for k, proj in enumerate(projection_matrices(cameras)):
        arrays[f"world_mat_{k}"] = np.vstack([proj, [0.0, 0.0, 0.0, 1.0]]) @ np.linalg.inv(
            scale_mat
        )
        arrays[f"scale_mat_{k}"] = scale_mat
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "cameras.npz", **arrays)
    for k, pixels in enumerate(images):
        save_png(root / "image" / f"{k:06d}.png", pixels)
    for k, mask in enumerate([] if masks is None else masks):
        save_png(root / "mask" / f"{k:03d}.png", np.repeat(np.asarray(mask)[..., None], 3, -1))
    return root


def write_nerfstudio(
    root,
    cameras: Cameras,
    images,
    per_frame: bool = False,
    distortion: dict | None = None,
    splits: dict[str, list[int]] | None = None,
    extra: dict | None = None,
    names: list[str] | None = None,
    points=None,
    masks=None,
) -> Path:
    """Write ``transforms.json`` and ``images/<name>`` (nerfstudio layout).

    Args:
        cameras: ``N`` cameras (OpenGL, written unchanged as ``transform_matrix``).
        images: ``[N, H, W, C]`` pixels.
        per_frame: write ``fl_x, fl_y, cx, cy, w, h`` in every frame instead of once.
        distortion: e.g. ``{"k1": 0.1}``, written at the top level.
        splits: split name -> frame indices, written as ``<split>_filenames``.
        extra: more top-level keys (``aabb_scale``, ``applied_transform``, ...).
        names: image file names (default ``frame_<k:05d>.png``).
        points: ``[P, 3]`` sparse points in the cameras' world, written as
            ``ns-process-data`` does: an ASCII ``sparse_pc.ply`` named by ``ply_file_path``.
        masks: ``[N, H, W]`` in [0, 1] (0 = ignore the pixel), written to ``masks/<name>``
            and named by each frame's ``mask_path``.
    """
    root = Path(root)
    names = [f"images/{n}" for n in (names or [f"frame_{k:05d}.png" for k in range(len(images))])]
    frames = []
    for k, name in enumerate(names):
        matrix = np.vstack([np.asarray(cameras.c2w[k], np.float64), [0.0, 0.0, 0.0, 1.0]])
        frame = {"file_path": name, "transform_matrix": matrix.tolist()}
        if per_frame:
            frame.update(_intrinsics(cameras, k))
        if masks is not None:
            frame["mask_path"] = "masks/" + name.removeprefix("images/")
            save_png(root / frame["mask_path"], masks[k])
        frames.append(frame)
    meta = {"camera_model": "OPENCV", **({} if per_frame else _intrinsics(cameras, 0))}
    meta.update(distortion or {})
    meta.update(extra or {})
    meta["frames"] = frames
    for split, ids in (splits or {}).items():
        meta[f"{split}_filenames"] = [names[i] for i in ids]
    if points is not None:
        meta["ply_file_path"] = "sparse_pc.ply"
        write_points_ply(root / "sparse_pc.ply", points)
    root.mkdir(parents=True, exist_ok=True)
    (root / "transforms.json").write_text(json.dumps(meta, indent=2))
    for name, pixels in zip(names, images):
        save_png(root / name, pixels)
    return root


def write_points_ply(path: Path, points, colors=None) -> Path:
    """``[P, 3]`` points as an ASCII PLY exactly as nerfstudio's ``create_ply_from_colmap``
    writes it: float ``x y z`` (``%8f``) and uint8 ``red green blue`` (grey by default)."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    colors = np.full((len(points), 3), 128, np.uint8) if colors is None else np.asarray(colors)
    header = ["ply", "format ascii 1.0", f"element vertex {len(points)}"]
    header += [f"property float {a}" for a in "xyz"]
    header += [f"property uint8 {c}" for c in ("red", "green", "blue")] + ["end_header"]
    rows = [f"{x:8f} {y:8f} {z:8f} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(points, colors)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header + rows) + "\n")
    return path


def colmap2nerf_transform(c2w) -> np.ndarray:
    """``[4, 4]`` similarity that instant-ngp's ``colmap2nerf.py`` applies to a COLMAP
    model's world: swap x and y and flip z, turn the summed camera up vector to +z, move
    the point the cameras look at most closely (weighted closest points of every pair of
    optical axes) to the origin, and scale the mean camera distance to 4.

    Args:
        c2w: ``[C, 3, 4]`` OpenGL camera-to-world in the model's world.
    """
    world = np.eye(4)[[1, 0, 2, 3]]
    world[2] *= -1.0
    moved = transform_poses(world, c2w)
    rot = np.eye(4)
    rot[:3, :3] = rotation_between(moved[:, :, 1].sum(0), (0.0, 0.0, 1.0))
    moved = transform_poses(rot, moved)
    total, weight = np.zeros(3), 0.0
    for a in moved:
        for b in moved:
            point, w = _closest_point(a[:, 3], a[:, 2], b[:, 3], b[:, 2])
            if w > 1e-5:
                total, weight = total + point * w, weight + w
    centre = total / weight if weight > 0 else np.zeros(3)
    shift = np.eye(4)
    shift[:3, 3] = -centre
    length = float(np.mean(np.linalg.norm(moved[:, :, 3] - centre, axis=-1)))
    return np.diag([4.0 / length] * 3 + [1.0]) @ shift @ rot @ world


def _closest_point(oa, da, ob, db) -> tuple[np.ndarray, float]:
    """colmap2nerf's ``closest_point_2_lines``: the midpoint of the closest points of two
    lines (each kept behind its camera, ``t <= 0`` along +z) and the weight ``|da x db|^2``."""
    da, db = da / np.linalg.norm(da), db / np.linalg.norm(db)
    c = np.cross(da, db)
    denom = float(np.linalg.norm(c) ** 2)
    t = ob - oa
    ta = min(np.linalg.det([t, db, c]) / (denom + 1e-10), 0.0)
    tb = min(np.linalg.det([t, da, c]) / (denom + 1e-10), 0.0)
    return (oa + ta * da + ob + tb * db) * 0.5, denom


def write_ngp(root, cameras: Cameras, images, names: list[str] | None = None,
              aabb_scale: int = 32) -> Path:
    """Write ``transforms.json`` and ``images/<name>`` as instant-ngp's ``colmap2nerf.py``
    does for a one-camera COLMAP model in the cameras' world: poses moved by
    `colmap2nerf_transform`, one shared pinhole (``camera_angle_x/y``, ``fl_x`` ... ``h``,
    zero distortion, ``is_fisheye``), ``aabb_scale``, frames with ``./images/<name>``,
    ``sharpness`` and ``transform_matrix``.
    """
    root = Path(root)
    names = names or [f"frame_{k:05d}.png" for k in range(len(images))]
    c2w = np.asarray(cameras.c2w, np.float64)
    moved = transform_poses(colmap2nerf_transform(c2w), c2w)
    w, h, fx, fy = cameras.width, cameras.height, float(cameras.fx[0]), float(cameras.fy[0])
    meta = {
        "camera_angle_x": 2 * math.atan(w / (2 * fx)), "camera_angle_y": 2 * math.atan(h / (2 * fy)),
        "fl_x": fx, "fl_y": fy, "k1": 0.0, "k2": 0.0, "k3": 0.0, "k4": 0.0, "p1": 0.0, "p2": 0.0,
        "is_fisheye": False, "cx": float(cameras.cx[0]), "cy": float(cameras.cy[0]), "w": w, "h": h,
        "aabb_scale": aabb_scale, "frames": [],
    }
    for name, pose in zip(names, moved):
        matrix = np.vstack([pose, [0.0, 0.0, 0.0, 1.0]])
        meta["frames"].append(
            {"file_path": f"./images/{name}", "sharpness": 100.0, "transform_matrix": matrix.tolist()}
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / "transforms.json").write_text(json.dumps(meta, indent=2))
    for name, pixels in zip(names, images):
        save_png(root / "images" / name, pixels)
    return root


def _intrinsics(cameras: Cameras, k: int) -> dict:
    return {
        "fl_x": float(cameras.fx[k]),
        "fl_y": float(cameras.fy[k]),
        "cx": float(cameras.cx[k]),
        "cy": float(cameras.cy[k]),
        "w": cameras.width,
        "h": cameras.height,
    }


def write_colmap(
    root,
    cameras: Cameras,
    images,
    binary: bool = False,
    model: str = "PINHOLE",
    distortion: tuple[float, ...] = (),
    points=None,
    names: list[str] | None = None,
    share_cameras: bool = True,
) -> Path:
    """Write a COLMAP model to ``sparse/0/`` (text or binary) and ``images/<name>``.

    Images with the same intrinsics share one COLMAP camera (ids from 1 in order of first
    use), as COLMAP's single-camera mode writes them; nerfstudio's ``colmap_to_json``
    reads one camera as a shared pinhole and dumps every camera as a warning otherwise.
    Poses are world-to-camera ``(q, t)`` in OpenCV axes: ``R = R_c2w^T``, ``t = -R C``,
    ``q = (w, x, y, z)`` of ``R``.

    Args:
        cameras: ``N`` cameras (OpenGL).
        images: ``[N, H, W, C]`` pixels.
        model: ``SIMPLE_PINHOLE`` (uses ``fx``), ``PINHOLE``, ``SIMPLE_RADIAL``, ``RADIAL``
            or ``OPENCV``; ``distortion`` fills the model's remaining parameters (zeros
            when short).
        points: ``[P, 3]`` world points written to ``points3D`` (grey, empty tracks); None
            writes none, in an empty ``points3D`` as COLMAP does.
        names: image file names, kept as given (default ``image_<k:03d>.png``).
        share_cameras: False writes one camera per image.
    """
    root = Path(root)
    folder = root / "sparse" / "0"
    folder.mkdir(parents=True, exist_ok=True)
    c2w = opencv_to_opengl(np.asarray(cameras.c2w, np.float64))
    names = names or [f"image_{k:03d}.png" for k in range(len(c2w))]
    cams, ims, ids = [], [], {}
    for k in range(len(c2w)):
        fx, fy, cx, cy = (float(a[k]) for a in (cameras.fx, cameras.fy, cameras.cx, cameras.cy))
        lead = (fx, fy, cx, cy) if model in ("PINHOLE", "OPENCV") else (fx, cx, cy)
        n = MODEL_IDS[model][1]
        params = (lead + tuple(distortion) + (0.0,) * n)[:n]
        key = params if share_cameras else k
        if key not in ids:
            ids[key] = len(ids) + 1
            cams.append((ids[key], model, cameras.width, cameras.height, params))
        rot = c2w[k, :, :3].T
        ims.append((k + 1, rotation_to_quaternion(rot), -rot @ c2w[k, :, 3], ids[key], names[k]))
    points = np.zeros((0, 3)) if points is None else np.asarray(points, np.float64)
    (_write_colmap_binary if binary else _write_colmap_text)(folder, cams, ims, points)
    for (_, _, _, _, name), pixels in zip(ims, images):
        save_png(root / "images" / name, pixels)
    return root


def _write_colmap_text(folder: Path, cams, ims, points) -> None:
    lines = ["# Camera list with one line of data per camera:"]
    lines += [" ".join(map(str, [i, m, w, h, *p])) for i, m, w, h, p in cams]
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:"]
    for i, q, t, c, name in ims:
        lines += [" ".join(map(str, [i, *q.tolist(), *t.tolist(), c, name])), ""]
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    rows = [
        " ".join(map(str, [k + 1, *p.tolist(), 128, 128, 128, 0.5])) for k, p in enumerate(points)
    ]
    (folder / "points3D.txt").write_text("# 3D point list\n" + "\n".join(rows) + "\n")


def _write_colmap_binary(folder: Path, cams, ims, points) -> None:
    out = [struct.pack("<Q", len(cams))]
    for i, m, w, h, p in cams:
        out.append(struct.pack("<iiQQ", i, MODEL_IDS[m][0], w, h) + struct.pack(f"<{len(p)}d", *p))
    (folder / "cameras.bin").write_bytes(b"".join(out))
    out = [struct.pack("<Q", len(ims))]
    for i, q, t, c, name in ims:
        out.append(
            struct.pack("<idddddddi", i, *q, *t, c) + name.encode() + b"\x00" + struct.pack("<Q", 0)
        )
    (folder / "images.bin").write_bytes(b"".join(out))
    out = [struct.pack("<Q", len(points))]
    for k, p in enumerate(points):
        out.append(struct.pack("<QdddBBBd", k + 1, *p, 128, 128, 128, 0.5) + struct.pack("<Q", 0))
    (folder / "points3D.bin").write_bytes(b"".join(out))
