"""Datasets: loaders that all return one `SceneData`, view selection, protocols and ray batches.

`load_scene` detects a dataset's format from its files and calls the matching loader;
`with_box` replaces a loaded scene's box with one the user gives (``train --bbox``);
`get_protocol` / `apply_protocol` reproduce the published few-shot benchmarks.
"""

from __future__ import annotations

from pathlib import Path

from .blender import is_blender, load_blender
from .colmap import is_colmap, load_colmap
from .dtu import is_dtu, load_dtu
from .llff import is_llff, load_llff
from .nerfstudio import is_nerfstudio, load_nerfstudio
from .poses import CameraModelWarning, with_box
from .protocols import PROTOCOLS, Protocol, apply_protocol, get_protocol
from .scene import DatasetError, SceneData
from .views import BLENDER_8_VIEWS, fps_views, select_views

FORMATS = (
    ("blender", is_blender, load_blender),
    ("nerfstudio", is_nerfstudio, load_nerfstudio),
    ("llff", is_llff, load_llff),
    ("dtu", is_dtu, load_dtu),
    ("colmap", is_colmap, load_colmap),
)
"""(name, detector, loader), tried in order; the first detector that matches wins. The
detectors look for ``transforms_train.json``, ``transforms.json`` (or a ``.json`` path),
``poses_bounds.npy``, ``cameras.npz`` + ``image/``, and ``sparse/0/cameras.{bin,txt}``."""
_EXPECTED = (
    "transforms_train.json, transforms.json, poses_bounds.npy, cameras.npz with image/, "
    "or sparse/0/cameras.bin|txt"
)


def load_scene(
    path, scale: float = 1.0, background=(1.0, 1.0, 1.0), format: str | None = None
) -> SceneData:
    """Load a dataset of any known format.

    Args:
        path: dataset folder (or a nerfstudio ``transforms.json`` file).
        scale: image resize factor in (0, 1].
        background: ``[3]`` RGB that images with alpha are composited on.
        format: a `FORMATS` name to skip detection (e.g. ``"colmap"`` for a folder that
            also holds ``poses_bounds.npy``).

    Returns:
        The `SceneData` of ``format``, or of the first format whose detector matches.

    Raises:
        DatasetError: the path does not exist, no format matches, or the loader rejects it.
        ValueError: an unknown ``format`` name.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "dataset path does not exist")
    if format is not None:
        loaders = {name: load for name, _, load in FORMATS}
        if format not in loaders:
            raise ValueError(f"unknown dataset format {format!r}; known: {', '.join(loaders)}")
        return loaders[format](path, scale=scale, background=background)
    for _, detect, load in FORMATS:
        if detect(path):
            return load(path, scale=scale, background=background)
    raise DatasetError(path, f"no known dataset format found (expected {_EXPECTED})")


__all__ = [
    "BLENDER_8_VIEWS",
    "CameraModelWarning",
    "DatasetError",
    "FORMATS",
    "PROTOCOLS",
    "Protocol",
    "SceneData",
    "apply_protocol",
    "fps_views",
    "get_protocol",
    "load_blender",
    "load_colmap",
    "load_dtu",
    "load_llff",
    "load_nerfstudio",
    "load_scene",
    "select_views",
    "with_box",
]
