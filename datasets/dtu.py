"""Loader for DTU scans in the IDR layout (``cameras.npz`` + ``image/`` + ``mask/``).

Owns reading the projection matrices (``world_mat_i``, ``scale_mat_i``), their
decomposition into pinhole intrinsics and an OpenGL pose, the object masks (kept for
masked metrics, never composited), and the standard few-shot DTU split ids.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from .images import find_images, load_images, one_line, read_file, read_image
from .poses import (
    CameraModelWarning,
    box_bounds,
    decompose_projection,
    opencv_to_opengl,
    pinhole_cameras,
)
from .scene import (
    DatasetError,
    SceneData,
    check_load_args,
    check_scene,
    check_splits,
    real_array,
)

# The PixelNeRF split of the 49-view DTU scans used by RegNeRF, FreeNeRF and later
# few-shot papers (RegNeRF, google-research/regnerf/internal/datasets.py,
# dtu_split_type="pixelnerf"): 3 / 6 / 9 views take the first 3 / 6 / 9 train ids;
# the test ids are range(49) minus the train and the excluded ids.
DTU_TRAIN_IDS = (25, 22, 28, 40, 44, 48, 0, 8, 13)
DTU_EXCLUDED_IDS = (3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 36, 37, 38, 39)
DTU_TEST_IDS = (
    1,
    2,
    9,
    10,
    11,
    12,
    14,
    15,
    23,
    24,
    26,
    27,
    29,
    30,
    31,
    32,
    33,
    34,
    35,
    41,
    42,
    43,
    45,
    46,
    47,
)
DTU_NUM_VIEWS = 49
CAMERA_FILES = ("cameras.npz", "cameras_sphere.npz")
"""IDR's name, then NeuS's; both hold the same keys."""
DTU_BBOX = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))
"""``scale_mat`` maps the object's bounding sphere to the unit sphere; the box adds half a
radius for the table top around it (the masked metrics only see the object)."""
_SKEW_TOL = 1e-3  # |K01| / K00 above which the ignored skew is worth a warning


def is_dtu(path) -> bool:
    """True if ``path`` holds ``image/`` and ``cameras.npz`` (or ``cameras_sphere.npz``)."""
    path = Path(path)
    return (path / "image").is_dir() and any((path / name).is_file() for name in CAMERA_FILES)


def load_dtu(root, scale: float = 1.0, background=(1.0, 1.0, 1.0)) -> SceneData:
    """Load a DTU scan in the IDR layout.

    Image ``i`` (``image/`` sorted by name) has the projection
    ``P_i = world_mat_i @ scale_mat_i`` (``scale_mat`` defaults to the identity) from world
    coordinates normalised so the object lies in the unit sphere. ``P = K [R | t]`` is
    decomposed (`decompose_projection`); the OpenCV pose is flipped to OpenGL. The principal
    point is used as stored, with pixel centres at ``i + 0.5`` (as RegNeRF casts DTU rays).

    Args:
        root: scan folder with ``cameras.npz``, ``image/`` and optionally ``mask/`` (one
            mask per image, sorted by name; white = object).
        scale: image resize factor in (0, 1]; 0.25 gives the 400x300 of the few-shot protocol.
        background: ``[3]`` RGB that RGBA images are composited on (DTU photos have none).

    Returns:
        `SceneData` whose ``object_masks`` are ``mask/`` binarised at 0.5 and resized by
        nearest sampling (``src = floor(dst * W / w)``, OpenCV's ``INTER_NEAREST`` as in
        RegNeRF). Splits: for a scan of 49+ images, test = `DTU_TEST_IDS` and train = the
        rest minus `DTU_EXCLUDED_IDS`; otherwise every 8th image is test. ``bbox`` is
        `DTU_BBOX`, ``near`` / ``far`` cover it from every camera.

    Raises:
        DatasetError: for a missing, malformed or inconsistent input.
    """
    root, background = check_load_args(root, scale, background)
    if not root.is_dir():
        raise DatasetError(root, "not a folder")
    cam_path = next(
        (root / n for n in CAMERA_FILES if (root / n).is_file()), root / CAMERA_FILES[0]
    )
    files = _image_files(root / "image")
    splits = dtu_splits(len(files))
    check_splits(splits, root / "image")
    intrinsics, c2w = _read_cameras(cam_path, files, root)

    def check(i: int, width: int, height: int) -> None:
        for axis, size in (("cx", width), ("cy", height)):
            value = intrinsics[i, 2 if axis == "cx" else 3]
            if abs(2.0 * value - size) > 0.2 * size:
                raise DatasetError(
                    files[i],
                    f"image is {width}x{height} but world_mat_{i} in {cam_path.name} has "
                    f"{axis}={value:g}, which implies a size of about {2 * value:g} px",
                )

    images, masks, (width, height) = load_images(files, scale, background, check, root=root)
    fx, fy, cx, cy = intrinsics.T
    cameras = pinhole_cameras(opencv_to_opengl(c2w), fx, fy, cx, cy, width, height).scaled(scale)
    object_masks = None
    if (root / "mask").is_dir():
        object_masks = _load_masks(
            root, files, width, height, cameras.width, cameras.height
        )
    bbox = np.asarray(DTU_BBOX, np.float32)
    near, far = box_bounds(np.asarray(cameras.centers), bbox)
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
        names=[f.relative_to(root).as_posix() for f in files],
        object_masks=object_masks,
    )
    return check_scene(scene, cam_path)


def dtu_splits(num_images: int) -> dict[str, np.ndarray]:
    """Standard split of a 49+ view scan (see `load_dtu`), else every 8th image as test."""
    ids = np.arange(num_images)
    if num_images >= DTU_NUM_VIEWS:
        test = np.asarray(DTU_TEST_IDS)
        train = ids[~np.isin(ids, DTU_TEST_IDS + DTU_EXCLUDED_IDS)]
    else:
        test, train = ids[ids % 8 == 0], ids[ids % 8 != 0]
    return {
        "train": train.astype(np.int64),
        "val": np.zeros(0, np.int64),
        "test": test.astype(np.int64),
    }


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(folder, "image folder not found")
    files = find_images(folder)
    if not files:
        raise DatasetError(folder, "image folder holds no .png / .jpg images")
    return files


def _read_cameras(path: Path, files: list[Path], root: Path) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 4]`` (fx, fy, cx, cy) at full resolution and OpenCV camera-to-world ``[N, 3, 4]``."""
    if not path.is_file():
        raise DatasetError(path, f"missing {path.name}")
    data = read_file(path, root)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: np.asarray(npz[key]) for key in npz.files}
    except Exception as e:  # zipfile / numpy raise many types for a damaged archive
        raise DatasetError(path, f"cannot read file ({one_line(e)})") from None
    intrinsics, poses, skewed = [], [], False
    for i, image in enumerate(files):
        proj = _projection(arrays, i, path, image)
        k, c2w = decompose_projection(proj)
        skewed |= abs(k[0, 1]) > _SKEW_TOL * k[0, 0]
        intrinsics.append((k[0, 0], k[1, 1], k[0, 2], k[1, 2]))
        poses.append(c2w)
    if skewed:
        warnings.warn(
            f"{path}: pixel skew K[0, 1] ignored (pinhole cameras)",
            CameraModelWarning,
            stacklevel=3,
        )
    return np.asarray(intrinsics), np.stack(poses)


def _projection(arrays: dict, i: int, path: Path, image: Path) -> np.ndarray:
    """``[3, 4]`` ``world_mat_i @ scale_mat_i`` after shape and finiteness checks."""
    key = f"world_mat_{i}"
    if key not in arrays:
        raise DatasetError(path, f"missing '{key}' (for {image.parent.name}/{image.name})")
    mats = {}
    for name, shapes in ((key, ((3, 4), (4, 4))), (f"scale_mat_{i}", ((4, 4),))):
        m = real_array(arrays.get(name, np.eye(4)), path, f"'{name}'")
        if m.shape not in shapes:
            wanted = " or ".join(f"{a}x{b}" for a, b in shapes)
            raise DatasetError(
                path, f"'{name}' must be a numeric {wanted} matrix, got shape {m.shape}"
            )
        mats[name] = m
    with np.errstate(all="ignore"):  # an overflowing product is reported below
        proj = (mats[key][:3] @ mats[f"scale_mat_{i}"])[:3]
    proj = real_array(proj, path, f"'{key}' @ 'scale_mat_{i}'")
    if np.linalg.cond(proj[:, :3]) > 1e12:
        raise DatasetError(
            path,
            f"'{key}' @ 'scale_mat_{i}' is not a camera projection "
            "(its left 3x3 block is singular)",
        )
    return proj


def _load_masks(
    root: Path, files: list[Path], width: int, height: int, out_w: int, out_h: int
) -> np.ndarray:
    """``[N, out_h, out_w]`` float32 {0, 1} object masks of ``root/mask``, nearest-sampled
    from full size."""
    folder = root / "mask"
    masks = find_images(folder)
    if len(masks) != len(files):
        raise DatasetError(
            folder,
            f"holds {len(masks)} masks but {files[0].parent.name}/ holds {len(files)} images",
        )
    rows = np.floor(np.arange(out_h) * (height / out_h)).astype(int)
    cols = np.floor(np.arange(out_w) * (width / out_w)).astype(int)
    out = np.empty((len(masks), out_h, out_w), np.float32)
    for i, path in enumerate(masks):
        pixels = read_image(path, root)
        if pixels.shape[:2] != (height, width):
            raise DatasetError(
                path,
                f"mask is {pixels.shape[1]}x{pixels.shape[0]} "
                f"but {files[i].name} is {width}x{height}",
            )
        out[i] = pixels[rows[:, None], cols[None, :], 0] > 0.5
    return out
