"""Files for every loader: the gate every read passes, and the pixel side of loading.

`read_file` is how a loader opens anything (JSON, npy / npz, COLMAP models, images,
masks): the path must resolve, symlinks followed, to a regular file inside the dataset
folder. The pixel side: listing a folder's images in name order, choosing a
pre-downscaled ``images_<k>`` folder for a scale factor, decoding to float32 in [0, 1]
(grey, palette, CMYK and 16-bit PNGs included), compositing RGBA on a background (alpha
kept as a mask), area-averaged resizing, and filling one preallocated ``[C, h, w, 3]``
array from a thread pool. Every bad file raises `DatasetError` naming it.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .scene import DatasetError, describe

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""Image file types the loaders read (matched case-insensitively)."""


def find_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (LLFF / IDR order).

    Hidden files are skipped (macOS writes ``._IMG_0001.JPG`` beside every image on
    foreign disks). Broken symlinks and other non-folders are kept, so that `read_file`
    names them: dropping one would silently pair every later image with the wrong pose.
    """
    names = (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(
        (p for p in names if not p.name.startswith(".") and not p.is_dir()), key=lambda p: p.name
    )


def downscale_folder(root: Path, base: str, scale: float) -> tuple[Path, int]:
    """Folder to read for ``scale`` and the integer factor its images are already reduced by.

    LLFF and COLMAP datasets ship ``images_<k>`` copies reduced by an integer ``k``
    (``images_8`` for the standard 1/8 LLFF protocol). When ``1 / scale`` is such a ``k``
    and ``root/<base>_<k>`` exists it is used with factor ``k``; otherwise ``root/<base>``
    with factor 1 (the caller then resizes by ``scale``).
    """
    inverse = 1.0 / scale
    k = round(inverse) if math.isfinite(inverse) else 0  # scale 5e-324: no pixels anyway
    if k > 1 and math.isclose(k * scale, 1.0, rel_tol=1e-6) and (root / f"{base}_{k}").is_dir():
        return root / f"{base}_{k}", k
    return root / base, 1


def reduced_size_check(
    files: Sequence[Path], size: tuple[int, int], factor: int, folder: Path, source: Callable
) -> Callable[[int, int, int], None]:
    """A `load_images` check for images that are ``size`` ``(W, H)`` reduced by ``factor``.

    Reduced copies may round either way, so a side is accepted within one pixel of
    ``W / factor``; ``source(i)`` names where the size of image ``i`` came from (e.g.
    ``"cameras.bin gives 16x12 for camera 3"``).
    """

    def check(i: int, width: int, height: int) -> None:
        if abs(width * factor - size[0]) >= factor or abs(height * factor - size[1]) >= factor:
            about = f"{size[0] / factor:g}x{size[1] / factor:g}"
            extra = "" if factor == 1 else f" (about {about} in {folder.name})"
            raise DatasetError(files[i], f"image is {width}x{height} but {source(i)}{extra}")

    return check


def read_image(path: Path, root: Path) -> np.ndarray:
    """``[H, W, C]`` float32 in [0, 1] with C in {1, 2, 3, 4} (grey, grey + alpha, RGB, RGBA).

    ``path`` passes `read_file` (inside ``root``). Palette images become RGB(A), CMYK and
    other colour spaces RGB, 1-bit images grey; 8- and 16-bit integers are divided by
    255 / 65535, float images must be finite and are clipped to [0, 1].
    """
    data = read_file(path, root)
    try:
        with Image.open(io.BytesIO(data)) as image:
            frames = getattr(image, "n_frames", 1)
            pixels = None if frames > 1 else _pixels(image, data)
    except Exception as e:  # decoders raise many types; all mean "unreadable"
        raise DatasetError(path, f"cannot read image ({one_line(e)})") from None
    if pixels is None:
        raise DatasetError(path, f"image is animated ({frames} frames); expected a still image")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or pixels.size == 0:
        raise DatasetError(path, f"unsupported image layout {pixels.shape}")
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize <= 2:
        scale = np.float32(1.0 / np.iinfo(pixels.dtype).max)
        return np.multiply(pixels, scale, dtype=np.float32)
    if pixels.dtype.kind == "f":
        if not np.all(np.isfinite(pixels)):
            raise DatasetError(path, "image has non-finite pixel values")
        return np.clip(pixels.astype(np.float32), 0.0, 1.0)
    raise DatasetError(path, f"unsupported pixel type {pixels.dtype}")


_AS_RGB = {"1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "RGBX": "RGB"}
"""Pillow modes that are no pixel layout of their own, and what they are decoded as."""
_HIGH_BYTES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}
"""Pillow's raw modes of 16-bit colour PNGs, and the raw mode that reads their low bytes."""


def _pixels(image: Image.Image, data: bytes) -> np.ndarray:
    """Pixels of an opened image as a numpy array in one of the layouts `read_image` takes."""
    mode = image.mode
    if mode in ("P", "PA"):
        alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if alpha else "RGB")
    elif mode in ("La", "RGBa"):  # premultiplied alpha
        image = image.convert(mode.upper())
    elif mode in _AS_RGB:
        image = image.convert(_AS_RGB[mode])
    tile = getattr(image, "tile", [])  # a converted image has none
    raw = tile[0].args if len(tile) == 1 else None
    if image.format == "PNG" and isinstance(raw, str) and raw in _HIGH_BYTES:
        try:
            return _png16(data, raw, _HIGH_BYTES[raw])
        except Exception:  # a Pillow without this raw mode: its 8-bit reading, still correct to 1/255
            pass
    pixels = np.asarray(image)
    return pixels.astype(pixels.dtype.newbyteorder("=")) if pixels.dtype.kind == "u" else pixels


def _png16(data: bytes, high: str, low: str) -> np.ndarray:
    """``[H, W, C]`` uint16 of a 16-bit RGB(A) PNG.

    Pillow has no 16-bit colour mode and keeps only the high byte of each sample; decoding
    a second time with the little-endian raw mode keeps the low byte instead, and the two
    make the exact 16-bit values.
    """
    planes = []
    for raw in (high, low):
        with Image.open(io.BytesIO(data)) as image:
            tile = image.tile[0]  # a named tuple from Pillow 11, a plain one before
            tile = tile._replace(args=raw) if hasattr(tile, "_replace") else (*tile[:3], raw)
            image.tile = [tile]
            planes.append(np.asarray(image).astype(np.uint16))
    return planes[0] << 8 | planes[1]


def composite(pixels: np.ndarray, background: np.ndarray):
    """RGB on ``background`` and alpha (None if the image has no alpha channel).

    ``rgb * a + background * (1 - a)``; grey images are repeated to three channels.
    """
    channels = pixels.shape[2]
    colour = pixels[..., :3] if channels >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    if channels in (1, 3):
        return colour, None
    alpha = pixels[..., -1]
    # rgb * a + bg * (1 - a) == (rgb - bg) * a + bg, with one temporary instead of four.
    out = colour - background
    out *= alpha[..., None]
    out += background
    return out, alpha


def resize(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average ``x`` ``[H, W, ...]`` down to ``[height, width, ...]``.

    PIL's BOX filter on float32 ("F") planes is exact area averaging for any factor
    (a plain box filter for integer divisors) and several times faster than numpy.
    """
    h, w = x.shape[:2]
    if (w, h) == (width, height):
        return x
    planes = x.reshape(h, w, -1)
    out = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(planes[..., c])).resize(
                (width, height), Image.Resampling.BOX
            )
        )
        for c in range(planes.shape[2])
    ]
    return np.stack(out, axis=-1).reshape(height, width, *x.shape[2:])


def load_images(
    paths: Sequence[Path],
    scale: float,
    background: np.ndarray,
    check: Callable[[int, int, int], None] | None = None,
    *,
    root: Path,
):
    """Decode, check, composite and resize images into preallocated arrays.

    Args:
        paths: ``C`` image files; each must pass `read_file` (inside ``root``).
        scale: resize factor in (0, 1]; the output size is ``round(W * scale)`` by
            ``round(H * scale)`` of the first image.
        background: ``[3]`` RGB that RGBA images are composited on.
        check: ``check(i, width, height)`` raises `DatasetError` when image ``i``'s size
            disagrees with its intrinsics; it runs before the shared-size check.

    Returns:
        ``images [C, h, w, 3]``, ``masks [C, h, w]`` (alpha; None when no image has
        one, ones where one image lacks it) and the unscaled ``(W, H)``.

    Raises:
        DatasetError: a file outside ``root`` or unreadable, sizes that differ or
            disagree with ``check``, or a size that ``scale`` reduces below 1x1.

    Arrays are filled in place by a thread pool (PNG decoding releases the GIL), so the
    peak memory is one float copy of the dataset, not two.
    """
    first = read_image(paths[0], root)
    height, width = first.shape[:2]
    out_w, out_h = int(round(width * scale)), int(round(height * scale))
    if out_w < 1 or out_h < 1:
        raise DatasetError(
            paths[0],
            f"image is {width}x{height}, which scale {scale:g} reduces to {out_w}x{out_h} "
            "pixels (less than 1x1)",
        )
    images = np.empty((len(paths), out_h, out_w, 3), np.float32)
    masks = np.ones((len(paths), out_h, out_w), np.float32)

    def load_one(i: int) -> bool:
        pixels = first if i == 0 else read_image(paths[i], root)
        h, w = pixels.shape[:2]
        if check is not None:
            check(i, w, h)
        if (w, h) != (width, height):
            raise DatasetError(
                paths[i],
                f"image is {w}x{h} but {paths[0].name} is {width}x{height} "
                "(all images must share one size)",
            )
        rgb, alpha = composite(pixels, background)
        # Resizing is linear, so resizing the composited colour and alpha equals resizing
        # premultiplied colour and alpha and compositing afterwards.
        images[i] = resize(rgb, out_w, out_h)
        if alpha is not None:
            masks[i] = resize(alpha, out_w, out_h)
        return alpha is not None

    workers = min(8, os.cpu_count() or 1, len(paths))
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        has_alpha = list(pool.map(load_one, range(len(paths))))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return images, (masks if any(has_alpha) else None), (width, height)


def inside(path: Path, root: Path) -> bool:
    """True if ``path`` (after following ``..`` and symlinks) lies inside ``root``."""
    return path.resolve().is_relative_to(root.resolve())


def check_inside(path: Path, root: Path) -> Path:
    """``path`` resolved (``..`` and symlinks followed), or `DatasetError` naming ``path``
    when it resolves outside ``root`` (itself resolved) or cannot be resolved (a symlink
    loop)."""
    try:
        resolved = path.resolve()
        ok = inside(resolved, root)
    except (OSError, RuntimeError, ValueError) as e:  # 3.11 raises RuntimeError for loops
        raise DatasetError(path, f"cannot resolve the path ({one_line(e)})") from None
    if not ok:
        raise DatasetError(path, f"resolves outside the dataset folder (to {resolved})")
    return resolved


def read_file(path: Path, root: Path) -> bytes:
    """The bytes of ``path``, which must resolve to a regular file inside ``root``.

    Every file a loader opens goes through here, so a symlink to a file elsewhere never
    brings outside data into a run, and a FIFO or device named like a dataset file never
    blocks or floods a loader. The resolved path is read, so the file checked is the
    file read.
    """
    resolved = check_inside(path, root)
    if not resolved.is_file():
        problem = "is not a regular file" if resolved.exists() else "does not exist"
        raise DatasetError(path, problem + (" (broken symlink)" if path.is_symlink() else ""))
    try:
        return resolved.read_bytes()
    except OSError as e:
        raise DatasetError(path, f"cannot read file ({one_line(e)})") from None


def check_file_name(name, source: Path, what: str) -> str:
    """``name`` (a path written in ``source``) if it is a non-empty string that can name a
    file, else `DatasetError` naming ``source`` and ``what`` (e.g. ``"frame 3: file_path"``).

    Rejects NUL bytes and unpaired surrogates (JSON's ``\\u0000`` / ``\\ud800``), which
    no file system accepts and which make `pathlib` raise.
    """
    if not isinstance(name, str) or not name:
        raise DatasetError(source, f"{what} must be a non-empty string, got {describe(name)}")
    if "\0" in name:
        raise DatasetError(source, f"{what} {describe(name)} contains a NUL byte")
    try:
        os.fsencode(name)
    except UnicodeError:
        raise DatasetError(
            source, f"{what} {describe(name)} is not valid text for a file name"
        ) from None
    return name


def one_line(error: Exception) -> str:
    """``"Type: message"`` with all whitespace runs collapsed to single spaces."""
    return " ".join(f"{type(error).__name__}: {error}".split())
