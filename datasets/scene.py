"""`SceneData`, the one value every loader returns, and `DatasetError` for bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..cameras import Cameras


class DatasetError(ValueError):
    """Bad input data. The message names the file and the problem in one line."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclasses.dataclass(frozen=True)
class SceneData:
    """Posed images of one scene.

    Attributes:
        images: ``[C, H, W, 3]`` float32 RGB in [0, 1], composited on ``background``.
        masks: ``[C, H, W]`` float32 alpha in [0, 1], or None when the images had none.
        cameras: the ``C`` cameras (numpy-backed `Cameras`).
        splits: split name (``train``, ``val``, ``test``) -> int indices into ``images``.
        bbox: ``[2, 3]`` world-space box (min, max) that holds the scene.
        near, far: ray range in world units.
        background: ``[3]`` colour the images were composited on.
        root: dataset folder.
        names: one name per image (its file path relative to ``root``).
        ndc: forward-facing capture (LLFF): rays should be mapped to normalised device
            coordinates (NeRF's ``ndc_rays`` with the near plane at camera-space
            ``z = -1``), where the scene fills ``[-1, 1]^3`` and ``t`` runs over [0, 1].
            ``near``, ``far`` and ``bbox`` stay in world units for renderers that march
            in world space.
        object_masks: ``[C, H, W]`` float32 in {0, 1}, 1 on the object, or None. Unlike
            ``masks`` the images are *not* composited with them (the photo background is
            real), so they must not drive background swapping or visual-hull carving;
            they select the pixels of masked metrics (DTU).
    """

    images: np.ndarray
    masks: np.ndarray | None
    cameras: Cameras
    splits: dict[str, np.ndarray]
    bbox: np.ndarray
    near: float
    far: float
    background: np.ndarray
    root: Path
    names: list[str]
    ndc: bool = False
    object_masks: np.ndarray | None = None

    def split(self, name: str) -> np.ndarray:
        """Indices of one split; raises `DatasetError` if it is missing or empty."""
        ids = self.splits.get(name)
        if ids is None or len(ids) == 0:
            raise DatasetError(self.root, f"the '{name}' split is empty")
        return ids


def check_load_args(root, scale: float, background) -> tuple[Path, np.ndarray]:
    """Validate the arguments every loader takes; returns ``root`` as a Path and the
    background as a float32 RGB triple. Raises `DatasetError` if ``root`` is absent."""
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    background = np.asarray(background, np.float32)
    if background.shape != (3,):
        raise ValueError(f"background must be an RGB triple, got shape {background.shape}")
    root = Path(root)
    if not root.exists():
        raise DatasetError(root, "dataset folder does not exist")
    return root, background


def holdout_splits(count: int, every: int) -> dict[str, np.ndarray]:
    """Every ``every``-th image is test (from image 0), the rest train, no val."""
    ids = np.arange(count)
    return {"train": ids[ids % every != 0], "val": np.zeros(0, np.int64), "test": ids[ids % every == 0]}
