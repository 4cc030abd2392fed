"""Loader for COLMAP sparse models (``sparse/0/`` in text or binary form, plus ``images/``).

Owns parsing ``cameras``, ``images`` and (optional) ``points3D`` in both of COLMAP's
formats, turning COLMAP's world-to-camera quaternion poses (OpenCV axes) into OpenGL
camera-to-world matrices, pinhole intrinsics from the supported camera models (distortion
ignored with one warning), the ``images_<k>`` folder choice, levelling and scaling a
model in an arbitrary world frame, and scene bounds from the sparse points when they exist.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import warnings
from pathlib import Path

import numpy as np

from .images import (
    check_file_name,
    check_inside,
    downscale_folder,
    load_images,
    one_line,
    read_file,
    reduced_size_check,
)
from .poses import (
    CameraModelWarning,
    fit_bounds,
    opencv_to_opengl,
    pinhole_cameras,
    quaternion_to_rotation,
    scene_frame,
    transform_points,
    transform_poses,
    world_to_camera_to_c2w,
)
from .scene import (
    DatasetError,
    SceneData,
    check_load_args,
    check_scene,
    check_splits,
    describe,
    holdout_splits,
    real_array,
)

CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
}
"""COLMAP's model id -> (name, number of parameters)."""
MODEL_IDS = {name: (model_id, n) for model_id, (name, n) in CAMERA_MODELS.items()}
SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
"""Models whose first parameters are ``f`` or ``fx, fy`` then ``cx, cy``; the rest is distortion."""
COLMAP_HOLD = 8
"""Every 8th image (by name) is a test image, as mip-NeRF 360 splits COLMAP scenes."""
MODEL_FOLDERS = ("sparse/0", "sparse")
_QUATERNION_TOL = 1e-3


@dataclasses.dataclass(frozen=True)
class ColmapCamera:
    """One ``cameras`` entry: COLMAP model name, image size in pixels and parameters."""

    id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class ColmapImage:
    """One ``images`` entry: world-to-camera ``x_c = R(q) x_w + t`` (OpenCV axes)."""

    id: int
    qvec: tuple[float, float, float, float]
    tvec: tuple[float, float, float]
    camera_id: int
    name: str


def model_folder(path) -> Path | None:
    """The folder of ``path``'s COLMAP model (``sparse/0`` or ``sparse``), or None."""
    for sub in MODEL_FOLDERS:
        folder = Path(path) / sub
        if (folder / "cameras.bin").is_file() or (folder / "cameras.txt").is_file():
            return folder
    return None


def is_colmap(path) -> bool:
    """True if ``path`` holds ``sparse/0/cameras.{bin,txt}`` (or ``sparse/cameras.*``)."""
    return model_folder(path) is not None


def load_colmap(root, scale: float = 1.0, background=(1.0, 1.0, 1.0)) -> SceneData:
    """Load a COLMAP reconstruction.

    Camera-to-world is ``[R^T | -R^T t]`` with the y and z axes negated (OpenCV ->
    OpenGL). Intrinsics: ``SIMPLE_PINHOLE`` / ``SIMPLE_RADIAL`` / ``RADIAL`` give
    ``fx = fy = f``; ``PINHOLE`` / ``OPENCV`` give ``fx, fy``; the principal point is used
    as stored (COLMAP puts pixel centres at ``i + 0.5``, as sparsefield does).

    Args:
        root: folder with ``sparse/0/`` (``.bin`` files preferred over ``.txt``) and
            ``images/`` (``images_<k>`` used when ``scale = 1 / k``, intrinsics divided
            by ``k``; otherwise ``images/`` is area-resized).
        scale: image resize factor in (0, 1].
        background: ``[3]`` RGB that RGBA images are composited on.

    Returns:
        `SceneData` with images sorted by name; test = every 8th, train = the rest. A model
        in an arbitrary world frame (COLMAP's is the first cameras') is levelled, centred
        and scaled first (`scene_frame`: +z the mean camera up, the heading of the
        points' least box, a mean camera distance of 4; ``transform`` records it), so the
        axis-aligned box fits the scene at the size the defaults are tuned for. Bounds:
        `fit_bounds`, from ``points3D`` when present (their percentile box), else from
        the cameras.

    Raises:
        DatasetError: for a missing, malformed or inconsistent input or an unsupported
            camera model.
    """
    root, background = check_load_args(root, scale, background)
    if not root.is_dir():
        raise DatasetError(root, "not a folder")
    folder = model_folder(root)
    if folder is None:
        raise DatasetError(
            root / MODEL_FOLDERS[0], "missing COLMAP model (cameras.bin or cameras.txt)"
        )
    cameras, images, points = read_model(folder, root)
    ext = ".bin" if (folder / "cameras.bin").is_file() else ".txt"
    size = _shared_size(cameras, images, folder / f"cameras{ext}")
    image_dir, factor = downscale_folder(root, "images", scale)
    files = [_image_file(image_dir, root, im.name, folder / f"images{ext}") for im in images]
    splits = holdout_splits(len(images), COLMAP_HOLD)
    check_splits(splits, folder / f"images{ext}")
    says = f"cameras{ext} gives {size[0]}x{size[1]} for camera"
    check = reduced_size_check(
        files, size, factor, image_dir, lambda i: f"{says} {images[i].camera_id}"
    )
    pixels, masks, (width, height) = load_images(
        files, scale * factor, background, check, root=root
    )
    intrinsics = np.array([pinhole_intrinsics(cameras[im.camera_id]) for im in images]) / factor
    c2w = np.stack([image_pose(im) for im in images])
    frame = scene_frame(c2w, points)
    c2w = transform_poses(frame, c2w)
    points = None if points is None else transform_points(frame, points)
    cams = pinhole_cameras(c2w, *intrinsics.T, width, height).scaled(scale * factor)
    _warn_distortion(cameras, {im.camera_id for im in images}, folder / f"cameras{ext}")
    bbox, near, far = fit_bounds(c2w, points)
    scene = SceneData(
        images=pixels,
        masks=masks,
        cameras=cams,
        splits=splits,
        bbox=bbox,
        near=near,
        far=far,
        background=background,
        root=root,
        names=[f.relative_to(root).as_posix() for f in files],
        transform=frame,
    )
    return check_scene(scene, folder / f"images{ext}")


def read_model(
    folder: Path, root: Path | None = None
) -> tuple[dict[int, ColmapCamera], list[ColmapImage], np.ndarray | None]:
    """Cameras by id, images sorted by name and ``[P, 3]`` points (None without a points file).

    Reads ``.bin`` files when ``cameras.bin`` exists, else ``.txt``. Every file must
    resolve inside ``root`` (default: ``folder``).
    """
    root = folder if root is None else root
    binary = (folder / "cameras.bin").is_file()
    ext = ".bin" if binary else ".txt"
    paths = {name: folder / f"{name}{ext}" for name in ("cameras", "images", "points3D")}
    for name in ("cameras", "images"):
        if not paths[name].is_file():
            raise DatasetError(paths[name], f"missing {paths[name].name}")
    if binary:
        cameras = _cameras_binary(paths["cameras"], root)
        images = _images_binary(paths["images"], root)
    else:
        cameras = _cameras_text(paths["cameras"], root)
        images = _images_text(paths["images"], root)
    points = None
    if paths["points3D"].is_file():
        points = (_points_binary if binary else _points_text)(paths["points3D"], root)
    if not images:
        raise DatasetError(paths["images"], "lists no images")
    _check_unique(images, paths["images"])
    for im in images:
        if im.camera_id not in cameras:
            raise DatasetError(
                paths["images"],
                f"image {im.name!r} uses camera {im.camera_id}, "
                f"which {paths['cameras'].name} does not define",
            )
        _check_quaternion(im, paths["images"])
    return cameras, sorted(images, key=lambda im: im.name), points


def image_pose(image: ColmapImage) -> np.ndarray:
    """OpenGL camera-to-world ``[3, 4]``: ``[R^T | -R^T t]`` with the y and z axes negated."""
    rot = quaternion_to_rotation(image.qvec)
    return opencv_to_opengl(world_to_camera_to_c2w(rot, image.tvec))


def pinhole_intrinsics(camera: ColmapCamera) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` of a supported model (its distortion parameters dropped)."""
    p = camera.params
    if camera.model in ("PINHOLE", "OPENCV"):
        return p[0], p[1], p[2], p[3]
    return p[0], p[0], p[1], p[2]


def _check_unique(images: list[ColmapImage], path: Path) -> None:
    """Two entries for one image file would train on it twice and split it both ways."""
    first = {}
    for im in images:
        other = first.setdefault(os.path.normpath(im.name), im.id)
        if other != im.id:
            raise DatasetError(
                path, f"image {describe(im.name)} is listed twice (image ids {other} and {im.id})"
            )


def _add_camera(cameras: dict, camera: ColmapCamera, path: Path, where: str) -> None:
    """Check ``camera`` and add it to ``cameras``, refusing a second camera with its id."""
    if camera.id in cameras:
        raise DatasetError(path, f"{where}: camera id {camera.id} is defined twice")
    cameras[camera.id] = _check_camera(camera, path, where)


def _check_camera(camera: ColmapCamera, path: Path, where: str) -> ColmapCamera:
    real_array(camera.params, path, f"{where}: camera parameters")
    if camera.model not in SUPPORTED_MODELS:
        raise DatasetError(
            path,
            f"{where}: camera model {camera.model} is not supported "
            f"(expected one of {', '.join(SUPPORTED_MODELS)})",
        )
    if camera.width <= 0 or camera.height <= 0:
        raise DatasetError(
            path, f"{where}: image size must be positive, got {camera.width}x{camera.height}"
        )
    fx, fy, _, _ = pinhole_intrinsics(camera)
    if not (fx > 0 and fy > 0):
        raise DatasetError(path, f"{where}: focal lengths must be positive, got {fx:g}, {fy:g}")
    return camera


def _check_quaternion(im: ColmapImage, path: Path) -> None:
    q = real_array(im.qvec, path, f"image {describe(im.name)}: quaternion (qw, qx, qy, qz)")
    real_array(im.tvec, path, f"image {describe(im.name)}: translation (tx, ty, tz)")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > _QUATERNION_TOL:
        raise DatasetError(
            path,
            f"image {im.name!r}: quaternion (qw, qx, qy, qz) is not unit length (norm {norm:.4g})",
        )


def _shared_size(cameras: dict, images: list[ColmapImage], path: Path) -> tuple[int, int]:
    sizes = {(cameras[im.camera_id].width, cameras[im.camera_id].height) for im in images}
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
        raise DatasetError(
            path, f"cameras have different image sizes ({listed}); sparsefield needs one size"
        )
    return sizes.pop()


def _image_file(folder: Path, root: Path, name: str, source: Path) -> Path:
    path = folder / os.path.normpath(check_file_name(name, source, "image name"))
    try:
        check_inside(path, root)
    except DatasetError as e:  # name the model file that lists it, as for a missing file
        raise DatasetError(source, f"image name {describe(name)} {e.problem}") from None
    if not path.is_file():
        raise DatasetError(path, f"image file not found (listed in {source.name})")
    return path


def _warn_distortion(cameras: dict, used: set[int], path: Path) -> None:
    models = sorted({cameras[c].model for c in used if any(distortion(cameras[c]))})
    if models:
        warnings.warn(
            f"{path}: lens distortion of {', '.join(models)} cameras ignored; sparsefield uses "
            "pinhole cameras (run colmap image_undistorter for exact rays)",
            CameraModelWarning,
            stacklevel=3,
        )


def distortion(camera: ColmapCamera) -> tuple[float, ...]:
    """The distortion parameters of a supported model (empty for the pinhole models)."""
    return camera.params[4:] if camera.model in ("PINHOLE", "OPENCV") else camera.params[3:]


# ---- text files ---------------------------------------------------------------------------


def _data_lines(path: Path, root: Path) -> list[tuple[int, str]]:
    """``(line number, stripped line)`` of every non-comment line, blank ones included."""
    try:
        text = read_file(path, root).decode("utf-8-sig")  # editors on Windows add a BOM
    except UnicodeDecodeError as e:
        raise DatasetError(path, f"not UTF-8 text ({one_line(e)})") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)]
    return [(n, line) for n, line in lines if not line.startswith("#")]


def _numbers(fields: list[str], kind, path: Path, number: int, layout: str) -> list:
    try:
        return [kind(f) for f in fields]
    except ValueError:
        raise DatasetError(
            path, f"line {number}: expected {layout}, got {' '.join(fields)!r}"
        ) from None


def _cameras_text(path: Path, root: Path) -> dict[int, ColmapCamera]:
    layout = "'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...'"
    cameras = {}
    for number, line in _data_lines(path, root):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 4:
            raise DatasetError(path, f"line {number}: expected {layout}, got {line!r}")
        cam_id, width, height = _numbers(
            [fields[0], fields[2], fields[3]], int, path, number, layout
        )
        model = fields[1]
        if model not in MODEL_IDS:
            raise DatasetError(path, f"line {number}: unknown camera model {model!r}")
        params = _numbers(fields[4:], float, path, number, layout)
        if len(params) != MODEL_IDS[model][1]:
            raise DatasetError(
                path,
                f"line {number}: camera model {model} needs {MODEL_IDS[model][1]} parameters, "
                f"got {len(params)}",
            )
        camera = ColmapCamera(cam_id, model, width, height, tuple(params))
        _add_camera(cameras, camera, path, f"line {number}")
    return cameras


def _images_text(path: Path, root: Path) -> list[ColmapImage]:
    """Two lines per image: the pose line, then its 2D points (possibly blank)."""
    layout = "'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'"
    images, lines = [], iter(_data_lines(path, root))
    for number, line in lines:
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 10:
            raise DatasetError(path, f"line {number}: expected {layout}, got {line!r}")
        (image_id,) = _numbers(fields[:1], int, path, number, layout)
        values = _numbers(fields[1:8], float, path, number, layout)
        (camera_id,) = _numbers(fields[8:9], int, path, number, layout)
        images.append(
            ColmapImage(
                image_id, tuple(values[:4]), tuple(values[4:]), camera_id, " ".join(fields[9:])
            )
        )
        points_line = next(lines, (number + 1, ""))
        # A pose line where the POINTS2D line should be (one left out by hand) would
        # silently drop every other image; POINTS2D holds (X, Y, POINT3D_ID) triples.
        if len(points_line[1].split()) % 3:
            raise DatasetError(
                path,
                f"line {points_line[0]}: expected the POINTS2D line of image {image_id} "
                "(X Y POINT3D_ID triples, or a blank line)",
            )
    return images


def _points_text(path: Path, root: Path) -> np.ndarray:
    layout = "'POINT3D_ID X Y Z R G B ERROR TRACK...'"
    rows, numbers = [], []
    for number, line in _data_lines(path, root):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 8:
            raise DatasetError(path, f"line {number}: expected {layout}, got {line!r}")
        rows.append(_numbers(fields[1:4], float, path, number, layout))
        numbers.append(number)
    xyz = np.asarray(rows, np.float64).reshape(-1, 3)
    return real_array(xyz, path, "point X Y Z", row=lambda k: f"line {numbers[k]}: ")


# ---- binary files (little-endian, as COLMAP writes them) ----------------------------------


class _Reader:
    """Sequential ``struct`` reads that name the file and offset when it ends too soon."""

    def __init__(self, path: Path, root: Path):
        self.data = read_file(path, root)
        self.path, self.pos = path, 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        self.skip(size)
        return struct.unpack_from("<" + fmt, self.data, self.pos - size)

    def skip(self, size: int) -> None:
        if self.pos + size > len(self.data):
            raise DatasetError(
                self.path,
                f"truncated file (needs {size} bytes at offset {self.pos}, "
                f"has {len(self.data) - self.pos})",
            )
        self.pos += size

    def string(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise DatasetError(
                self.path, f"truncated file (unterminated name at offset {self.pos})"
            )
        text = self.data[self.pos : end].decode("utf-8", errors="replace")
        self.pos = end + 1
        return text


def _cameras_binary(path: Path, root: Path) -> dict[int, ColmapCamera]:
    reader, cameras = _Reader(path, root), {}
    (count,) = reader.take("Q")
    for _ in range(count):
        cam_id, model_id, width, height = reader.take("iiQQ")
        if model_id not in CAMERA_MODELS:
            raise DatasetError(path, f"camera {cam_id}: unknown camera model id {model_id}")
        model, n = CAMERA_MODELS[model_id]
        params = reader.take("d" * n)
        camera = ColmapCamera(cam_id, model, width, height, params)
        _add_camera(cameras, camera, path, f"camera {cam_id}")
    return cameras


def _images_binary(path: Path, root: Path) -> list[ColmapImage]:
    reader, images = _Reader(path, root), []
    (count,) = reader.take("Q")
    for _ in range(count):
        image_id, *values, camera_id = reader.take("idddddddi")
        name = reader.string()
        (num_points,) = reader.take("Q")
        reader.skip(24 * num_points)  # (x, y, point3D_id) as "ddq" each
        images.append(ColmapImage(image_id, tuple(values[:4]), tuple(values[4:]), camera_id, name))
    return images


def _points_binary(path: Path, root: Path) -> np.ndarray:
    reader = _Reader(path, root)
    (count,) = reader.take("Q")
    if count * 51 > len(reader.data):  # 43 bytes of point, 8 of track length, at least
        raise DatasetError(
            path, f"truncated file (header says {count} points, has {len(reader.data)} bytes)"
        )
    xyz = np.empty((count, 3), np.float64)
    for k in range(count):
        xyz[k] = reader.take("QdddBBBd")[1:4]
        (track,) = reader.take("Q")
        reader.skip(8 * track)  # (image_id, point2D_idx) as "ii" each
    return real_array(xyz, path, "point X Y Z", row=lambda k: f"point {k}: ")
