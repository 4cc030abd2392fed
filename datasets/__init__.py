"""Datasets: loaders that all return one `SceneData`, view selection and ray batches.

`load_scene` detects a dataset's format from its files and calls the matching loader.
"""

from __future__ import annotations

from pathlib import Path

from sparsefield.datasets.blender import is_blender, load_blender
from sparsefield.datasets.scene import DatasetError, SceneData
from sparsefield.datasets.views import BLENDER_8_VIEWS, fps_views, select_views

# (name, detector, loader), tried in order; the first detector that matches wins.
FORMATS = (("blender", is_blender, load_blender),)


def load_scene(path, scale: float = 1.0, background=(1.0, 1.0, 1.0)) -> SceneData:
    """Load a dataset of any known format.

    Args:
        path: dataset folder (or file, for formats that have one).
        scale: image resize factor in (0, 1].
        background: ``[3]`` RGB that images with alpha are composited on.

    Returns:
        The `SceneData` of the first format in `FORMATS` whose detector matches.

    Raises:
        DatasetError: the path does not exist, no format matches, or the loader rejects it.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "dataset path does not exist")
    for _, detect, load in FORMATS:
        if detect(path):
            return load(path, scale=scale, background=background)
    raise DatasetError(path, "no known dataset format found (expected transforms_train.json)")


__all__ = [
    "BLENDER_8_VIEWS",
    "DatasetError",
    "FORMATS",
    "SceneData",
    "fps_views",
    "load_blender",
    "load_scene",
    "select_views",
]
