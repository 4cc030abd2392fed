"""Images a run writes: frames (colour, depth, opacity) and videos.

Videos are H.264 in ``yuv420p`` with the index at the front (``+faststart``), which every
browser, phone and editor plays and can stream; they keep the frames' exact size.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import matplotlib
import numpy as np

VIDEO_QUALITY = 7
"""imageio-ffmpeg's quality (0-10) for H.264: CRF ``int((1 - 7 / 10) * 51) = 15``, close
to visually lossless for renders."""


def to_uint8(img: np.ndarray) -> np.ndarray:
    """``[0, 1]`` floats -> 8-bit, rounded."""
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def colorize_depth(depth: np.ndarray, opacity: np.ndarray) -> np.ndarray:
    """Depth (divided by opacity) as a turbo-coloured image; empty pixels are white."""
    d = depth / np.maximum(opacity, 1e-6)
    hit = opacity > 0.5
    lo, hi = (np.percentile(d[hit], [1, 99]) if hit.any() else (0.0, 1.0))
    norm = np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = matplotlib.colormaps["turbo"](norm)[..., :3]
    return np.where(hit[..., None], rgb, 1.0)


def save_frame(folder: Path, name: str, out: dict) -> np.ndarray:
    """Write ``name.png`` (RGB), ``name_depth.png`` and ``name_opacity.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb8 = to_uint8(out["rgb"])
    iio.imwrite(folder / f"{name}.png", rgb8)
    iio.imwrite(folder / f"{name}_depth.png", to_uint8(colorize_depth(out["depth"], out["opacity"])))
    iio.imwrite(folder / f"{name}_opacity.png", to_uint8(out["opacity"]))
    return rgb8


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """``[N, H, W, 3]`` frames with an odd side grown by one pixel (the last row / column
    repeated): 4:2:0 chroma needs even sides. Nothing is resized, so nothing stretches."""
    h, w = frames.shape[1:3]
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(path: Path, frames: list[np.ndarray], fps: int = 24) -> Path:
    """``path`` with suffix ``.mp4``: H.264, ``yuv420p``, ``+faststart``, the frames' own
    size (an odd side padded by one pixel, `pad_to_even`); a GIF where no ffmpeg exists.

    Encodes with imageio-ffmpeg's ffmpeg (a dependency) with its 16-pixel macro-block
    rounding off: that rounding resized 200x200 frames to 208x208 and 400x300 to
    400x304, stretching them. The file is written beside ``path`` and renamed into place,
    so a failed encode never leaves an empty or partial ``.mp4``.

    Args:
        frames: ``N`` ``[H, W, 3]`` uint8 (or [0, 1] float) frames of one size.

    Returns:
        The path written (``.mp4``, or ``.gif`` without ffmpeg).
    """
    video = pad_to_even(np.stack([f if f.dtype == np.uint8 else to_uint8(f) for f in frames]))
    try:
        imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # no ffmpeg on this machine: a GIF still shows the orbit
        iio.imwrite(path.with_suffix(".gif"), video, duration=1000 / fps, loop=0)
        return path.with_suffix(".gif")
    out = path.with_suffix(".mp4")
    partial = out.with_name(f".{out.stem}.partial.mp4")
    try:
        _encode(partial, video, fps)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _encode(path: Path, video: np.ndarray, fps: int) -> None:
    """Pipe ``[N, H, W, 3]`` uint8 frames (even sides) through ffmpeg into ``path``."""
    height, width = video.shape[1:3]
    with warnings.catch_warnings():  # the encoder runs in a subprocess: fork + exec at
        # once, so JAX's warning about forking a multithreaded process does not apply
        warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
        writer = imageio_ffmpeg.write_frames(
            str(path), (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p", quality=VIDEO_QUALITY, macro_block_size=1,
            ffmpeg_log_level="error", output_params=["-movflags", "+faststart"],
        )
        writer.send(None)  # start ffmpeg
        try:
            for frame in video:
                writer.send(np.ascontiguousarray(frame))
        finally:
            writer.close()
