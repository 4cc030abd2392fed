"""Images a run writes: frames (colour, depth, opacity) and videos."""

from __future__ import annotations

import warnings
from pathlib import Path

import imageio.v3 as iio
import matplotlib
import numpy as np


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


def write_video(path: Path, frames: list[np.ndarray], fps: int = 24) -> Path:
    """MP4 through imageio-ffmpeg, or a GIF where no encoder is available."""
    try:
        with warnings.catch_warnings():  # the encoder runs in a subprocess: fork + exec at
            # once, so JAX's warning about forking a multithreaded process does not apply
            warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
            iio.imwrite(path.with_suffix(".mp4"), np.stack(frames), fps=fps, codec="libx264",
                        plugin="pyav" if _has_pyav() else None)
        return path.with_suffix(".mp4")
    except Exception:  # no ffmpeg / codec on this machine: fall back to GIF
        iio.imwrite(path.with_suffix(".gif"), np.stack(frames), duration=1000 / fps, loop=0)
        return path.with_suffix(".gif")


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401

        return True
    except ImportError:
        return False
