"""Image files for every loader: finding, decoding, size checks, compositing and resizing.

Owns the pixel side of loading: listing a folder's images in name order, choosing a
pre-downscaled ``images_<k>`` folder for a scale factor, decoding to float32 in [0, 1],
compositing RGBA on a background (alpha kept as a mask), area-averaged resizing, and
filling one preallocated ``[C, h, w, 3]`` array from a thread pool. Every bad file raises
`DatasetError` naming it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image

from .scene import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""Image file types the loaders read (matched case-insensitively)."""


def find_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (LLFF / IDR order)."""
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.name,
    )


def downscale_folder(root: Path, base: str, scale: float) -> tuple[Path, int]:
    """Folder to read for ``scale`` and the integer factor its images are already reduced by.

    LLFF and COLMAP datasets ship ``images_<k>`` copies reduced by an integer ``k``
    (``images_8`` for the standard 1/8 LLFF protocol). When ``1 / scale`` is such a ``k``
    and ``root/<base>_<k>`` exists it is used with factor ``k``; otherwise ``root/<base>``
    with factor 1 (the caller then resizes by ``scale``).
    """
    k = round(1.0 / scale)
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


def read_image(path: Path) -> np.ndarray:
    """``[H, W, C]`` float32 in [0, 1] with C in {1, 2, 3, 4}."""
    try:
        pixels = np.asarray(iio.imread(path))
    except Exception as e:  # decoders raise many types; all mean "unreadable"
        raise DatasetError(path, f"cannot read image ({one_line(e)})") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or pixels.size == 0:
        raise DatasetError(path, f"unsupported image layout {pixels.shape}")
    if pixels.dtype in (np.uint8, np.uint16):
        return np.multiply(pixels, np.float32(1.0 / np.iinfo(pixels.dtype).max), dtype=np.float32)
    if np.issubdtype(pixels.dtype, np.floating):
        return np.clip(pixels.astype(np.float32), 0.0, 1.0)
    raise DatasetError(path, f"unsupported pixel type {pixels.dtype}")


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
):
    """Decode, check, composite and resize images into preallocated arrays.

    Args:
        paths: ``C`` image files.
        scale: resize factor in (0, 1]; the output size is ``round(W * scale)`` by
            ``round(H * scale)`` of the first image.
        background: ``[3]`` RGB that RGBA images are composited on.
        check: ``check(i, width, height)`` raises `DatasetError` when image ``i``'s size
            disagrees with its intrinsics; it runs before the shared-size check.

    Returns:
        ``images [C, h, w, 3]``, ``masks [C, h, w]`` (alpha; None when no image has
        one, ones where one image lacks it) and the unscaled ``(W, H)``.

    Arrays are filled in place by a thread pool (PNG decoding releases the GIL), so the
    peak memory is one float copy of the dataset, not two.
    """
    first = read_image(paths[0])
    height, width = first.shape[:2]
    out_w, out_h = int(round(width * scale)), int(round(height * scale))
    images = np.empty((len(paths), out_h, out_w, 3), np.float32)
    masks = np.ones((len(paths), out_h, out_w), np.float32)

    def load_one(i: int) -> bool:
        pixels = first if i == 0 else read_image(paths[i])
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


def one_line(error: Exception) -> str:
    """``"Type: message"`` with all whitespace runs collapsed to single spaces."""
    return " ".join(f"{type(error).__name__}: {error}".split())
