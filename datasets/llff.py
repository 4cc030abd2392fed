"""Loader for LLFF forward-facing captures (``poses_bounds.npy`` + ``images/``).

Owns reading and validating ``poses_bounds.npy``, the standard LLFF pose pipeline of
NeRF / RegNeRF (axis fix, ``bd_factor`` rescale, recentring), choosing the ``images_<k>``
folder for a scale factor, the every-8th-image test split, and the NDC flag.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .images import (
    downscale_folder,
    find_images,
    load_images,
    one_line,
    read_file,
    reduced_size_check,
)
from .poses import check_rotation, frustum_box, llff_to_opengl, pinhole_cameras
from .scene import (
    DatasetError,
    SceneData,
    check_load_args,
    check_scene,
    check_splits,
    holdout_splits,
    real_array,
)

LLFF_HOLD = 8
"""Every 8th image (0, 8, 16, ...) is a test image (NeRF's and RegNeRF's ``llffhold``)."""
BD_FACTOR = 0.75
"""Poses and bounds are scaled by ``1 / (min(bounds) * bd_factor)``: nearest content at 1/0.75."""


def is_llff(path) -> bool:
    """True if ``path`` is a folder holding ``poses_bounds.npy``."""
    return (Path(path) / "poses_bounds.npy").is_file()


def load_llff(root, scale: float = 1.0, background=(1.0, 1.0, 1.0)) -> SceneData:
    """Load an LLFF scene the way NeRF and RegNeRF do.

    ``poses_bounds.npy`` holds one row of 17 numbers per image (images sorted by name):
    a 3x5 matrix ``[R | t | hwf]`` (rotation columns [down, right, back], camera centre,
    and the full-resolution height, width and focal length in pixels) and the image's
    near / far depth bounds. The pipeline: columns to OpenGL ``[R1, -R0, R2]``; poses and
    bounds times ``s = 1 / (0.75 min(bounds))``; recentring by the inverse of the average
    pose (`recenter_poses`). Intrinsics: ``f / k`` with the principal point at the image
    centre, ``k = 1 / scale``.

    Args:
        root: folder with ``poses_bounds.npy`` and ``images/`` (optionally ``images_<k>``,
            used when ``scale = 1 / k``; otherwise ``images/`` is area-resized).
        scale: image resize factor in (0, 1]; 0.125 is the standard 1/8 LLFF resolution.
        background: ``[3]`` RGB that RGBA images are composited on.

    Returns:
        `SceneData` with ``ndc=True``; test = every 8th image, train = the rest, no val.
        ``near = 0.9 min(bounds)``, ``far = max(bounds)`` (world units, as NeRF without
        NDC); ``bbox`` is the box of all view frustums between near and far (renderers in
        NDC use ``[-1, 1]^3`` instead).

    Raises:
        DatasetError: for a missing, malformed or inconsistent input.
    """
    root, background = check_load_args(root, scale, background)
    if not root.is_dir():
        raise DatasetError(root, "not a folder")
    path = root / "poses_bounds.npy"
    c2w, hwf, bounds = read_poses_bounds(path, root)
    with np.errstate(all="ignore"):  # overflow and degenerate averages are reported below
        s = 1.0 / (bounds.min() * BD_FACTOR)
        c2w[:, :, 3] *= s
        bounds = bounds * s
        c2w = recenter_poses(c2w)
    what = "pose after the bd_factor rescale and recentring (tiny or huge values?)"
    c2w = real_array(c2w, path, what, row=_image_row)
    bounds = real_array(bounds, path, "near/far bounds after the bd_factor rescale")

    folder, factor = downscale_folder(root, "images", scale)
    files = _image_files(folder, len(c2w), path)
    splits = holdout_splits(len(files), LLFF_HOLD)
    check_splits(splits, path)
    full_h, full_w = (int(round(v)) for v in hwf[0, :2])

    says = f"{path.name} gives {full_w}x{full_h}"
    check = reduced_size_check(files, (full_w, full_h), factor, folder, lambda i: says)
    images, masks, (width, height) = load_images(
        files, scale * factor, background, check, root=root
    )
    cameras = pinhole_cameras(
        c2w, hwf[:, 2] / factor, hwf[:, 2] / factor, width / 2, height / 2, width, height
    ).scaled(scale * factor)
    near, far = 0.9 * float(bounds.min()), float(bounds.max())
    scene = SceneData(
        images=images,
        masks=masks,
        cameras=cameras,
        splits=splits,
        bbox=frustum_box(cameras, near, far),
        near=near,
        far=far,
        background=background,
        root=root,
        names=[f.relative_to(root).as_posix() for f in files],
        ndc=True,
    )
    return check_scene(scene, path)


def read_poses_bounds(path: Path, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated contents of ``poses_bounds.npy`` (a file inside ``root``).

    Returns:
        OpenGL camera-to-world ``[N, 3, 4]`` float64 (not yet rescaled or recentred),
        ``hwf`` ``[N, 3]`` (height, width, focal) and ``bounds`` ``[N, 2]`` (near, far).
    """
    if not path.is_file():
        raise DatasetError(path, "missing poses_bounds.npy")
    try:
        raw = np.load(io.BytesIO(read_file(path, root)), allow_pickle=False)
    except DatasetError:
        raise
    except Exception as e:  # numpy raises ValueError, OSError, EOFError, ... for bad files
        raise DatasetError(path, f"cannot read file ({one_line(e)})") from None
    layout = "contents (3x5 pose [R | t | hwf] and near, far per image)"
    if not isinstance(raw, np.ndarray):  # np.load gives an NpzFile for a zip archive
        raise DatasetError(path, f"{layout} must be an array, got an .npz archive")
    raw = real_array(raw, path, layout, (None, 17), finite=False)
    if len(raw) == 0:
        raise DatasetError(path, "holds no images (0 rows)")
    poses = raw[:, :15].reshape(-1, 3, 5)
    real_array(poses[:, :, :4], path, "pose [R | t]", row=_image_row)
    real_array(poses[:, :, 4], path, "height, width, focal", row=_image_row)
    real_array(raw[:, 15:], path, "near/far bounds", row=_image_row)
    for k, row in enumerate(raw):
        check_rotation(poses[k, :, :3], path, f"image {k}")
        if not np.all(poses[k, :, 4] > 0):
            raise DatasetError(
                path,
                f"image {k}: height, width and focal must be positive, "
                f"got {poses[k, :, 4].tolist()}",
            )
        if not 0 < row[15] < row[16]:
            raise DatasetError(
                path, f"image {k}: bounds must satisfy 0 < near < far, got {row[15]:g}, {row[16]:g}"
            )
    if not np.allclose(poses[:, :2, 4], poses[0, :2, 4]):
        raise DatasetError(
            path, "images have different heights / widths (all images must share one size)"
        )
    return llff_to_opengl(poses[:, :, :4]), poses[:, :, 4], raw[:, 15:]


def recenter_poses(c2w: np.ndarray) -> np.ndarray:
    """Express ``[N, 3, 4]`` poses relative to their average pose (LLFF's ``recenter_poses``).

    The average pose sits at the mean camera centre with ``z = normalize(sum of back axes)``,
    ``x = normalize(up_sum x z)``, ``y = z x x`` (``up_sum`` the sum of up axes);
    each pose is left-multiplied by its inverse, so the average camera becomes the identity.
    """
    center = c2w[:, :, 3].mean(0)
    z = _normalize(c2w[:, :, 2].sum(0))
    x = _normalize(np.cross(c2w[:, :, 1].sum(0), z))
    y = _normalize(np.cross(z, x))
    avg = np.eye(4)
    avg[:3] = np.stack([x, y, z, center], axis=1)
    homog = np.concatenate([c2w, np.broadcast_to([0.0, 0.0, 0.0, 1.0], (len(c2w), 1, 4))], axis=1)
    return (np.linalg.inv(avg) @ homog)[:, :3]


def _image_row(k: int) -> str:
    """Names row ``k`` of ``poses_bounds.npy`` in a message."""
    return f"image {k}: "


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _image_files(folder: Path, count: int, path: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(folder, "image folder not found")
    files = find_images(folder)
    if len(files) != count:
        raise DatasetError(folder, f"holds {len(files)} images but {path.name} has {count} poses")
    return files
