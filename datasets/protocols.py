"""Few-shot benchmark protocols: which views train, which test, at what resolution.

A `Protocol` fixes what a paper's table fixes (training view ids, image scale, test
frames, NDC rays, masked metrics) so that one name reproduces it (``--protocol llff3``);
`apply_protocol` turns a protocol and a loaded `SceneData` into train and test indices.

Sources: ``blender8`` follows DietNeRF / FreeNeRF (8 fixed ids of the 100 train frames,
400x400, every 8th of the 200 test frames); ``llff3|6|9`` and ``dtu3|6|9`` follow RegNeRF
(google-research/regnerf: ``configs/llff3.gin`` factor 8 with NDC, ``configs/dtu3.gin``
factor 4, ``internal/datasets.py`` for the splits, ``eval.py`` for masked metrics).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Literal

import numpy as np

from .dtu import DTU_TEST_IDS, DTU_TRAIN_IDS
from .llff import LLFF_HOLD
from .scene import DatasetError, SceneData
from .views import BLENDER_8_VIEWS


class ProtocolWarning(UserWarning):
    """The loaded scene differs from the protocol's published setting (e.g. image size)."""


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A published few-shot evaluation setting."""

    name: str
    """The flag value, e.g. ``llff3``."""
    num_views: int
    """Number of training views k."""
    scale: float
    """Image resize factor for `load_scene`, relative to the published dataset's stored
    images (Blender 800x800, LLFF 4032x3024, DTU 1600x1200)."""
    train_ids: tuple[int, ...] | None = None
    """Fixed training ids (the first ``num_views`` are used), counted as ``ids_in`` says.
    None: ``num_views`` spread evenly over the train pool, positions
    ``round(linspace(0, n - 1, k))`` with ties to even (RegNeRF's LLFF rule)."""
    test_ids: tuple[int, ...] | None = None
    """Fixed test ids, counted as ``ids_in`` says. None: every ``test_stride``-th frame
    of the test pool."""
    ids_in: Literal["split", "scene"] = "split"
    """``split``: ``train_ids`` are positions in the train split and ``test_ids`` in the
    test split (Blender frame numbers); ``scene``: indices over all images in `SceneData`
    order (DTU image numbers)."""
    holdout: int | None = None
    """When set, the pools are every ``holdout``-th image of the whole scene (test) and
    the rest (train), whatever the loader's splits (LLFF's ``llffhold``)."""
    test_stride: int = 1
    """Keep every ``test_stride``-th frame of the test pool."""
    ndc: bool = False
    """Render in normalised device coordinates (forward-facing scenes)."""
    masked_metrics: bool = False
    """Report metrics inside `SceneData.object_masks` ``m``, as RegNeRF's ``eval.py``: PSNR
    over the pixels with ``m = 1``; SSIM and LPIPS on ``rgb * m + (1 - m)`` (background
    white) for both prediction and ground truth."""
    image_size: tuple[int, int] | None = None
    """``(W, H)`` of the published training images; another size gives a `ProtocolWarning`."""


PROTOCOLS: dict[str, Protocol] = {
    "blender8": Protocol(
        "blender8", 8, 0.5, train_ids=BLENDER_8_VIEWS, test_stride=8, image_size=(400, 400)
    ),
    **{
        f"llff{k}": Protocol(
            f"llff{k}", k, 1 / 8, holdout=LLFF_HOLD, ndc=True, image_size=(504, 378)
        )
        for k in (3, 6, 9)
    },
    **{
        f"dtu{k}": Protocol(
            f"dtu{k}",
            k,
            0.25,
            train_ids=DTU_TRAIN_IDS,
            test_ids=DTU_TEST_IDS,
            ids_in="scene",
            masked_metrics=True,
            image_size=(400, 300),
        )
        for k in (3, 6, 9)
    },
}
"""Every named protocol: ``blender8``, ``llff3|6|9``, ``dtu3|6|9``."""


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; ValueError listing the known names otherwise."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def apply_protocol(protocol: Protocol | str, scene: SceneData) -> tuple[np.ndarray, np.ndarray]:
    """Train and test images of ``scene`` under ``protocol``.

    Args:
        protocol: a `Protocol` or its name.
        scene: the scene, loaded with ``scale=protocol.scale``.

    Returns:
        ``(train_ids, test_ids)``: int64 indices into ``scene.images``, training ids in
        selection order.

    Raises:
        DatasetError: an id the scene does not have, too few training frames, or (for
            ``masked_metrics``) a scene without object masks.
    """
    if isinstance(protocol, str):
        protocol = get_protocol(protocol)
    everything = np.arange(len(scene.images), dtype=np.int64)

    def pool(role: str) -> np.ndarray:
        if protocol.holdout is None:
            return scene.split(role)
        held = everything % protocol.holdout == 0
        return everything[held if role == "test" else ~held]

    by_scene = protocol.ids_in == "scene"
    if protocol.train_ids is not None:
        ids = protocol.train_ids[: protocol.num_views]
        train = _pick(ids, everything if by_scene else pool("train"), protocol, scene, "train")
    else:
        train = _spread(protocol, pool("train"), scene)
    if protocol.test_ids is not None:
        test = _pick(
            protocol.test_ids, everything if by_scene else pool("test"), protocol, scene, "test"
        )
    else:
        test = pool("test")[:: protocol.test_stride]
    if protocol.masked_metrics and scene.object_masks is None:
        raise DatasetError(
            scene.root,
            f"protocol {protocol.name} measures inside object masks, but the scene has none",
        )
    _check_size(protocol, scene)
    return train, np.asarray(test, np.int64)


def _spread(protocol: Protocol, pool: np.ndarray, scene: SceneData) -> np.ndarray:
    """``num_views`` frames at positions ``round(linspace(0, n - 1, k))`` of the pool."""
    k = protocol.num_views
    if not 1 <= k <= len(pool):
        raise DatasetError(
            scene.root,
            f"protocol {protocol.name} trains on {k} views but the train pool has {len(pool)}",
        )
    # np.round breaks ties to even, like the Python round() RegNeRF applies.
    positions = np.round(np.linspace(0, len(pool) - 1, k)).astype(np.int64)
    return pool[positions]


def _pick(ids, pool: np.ndarray, protocol: Protocol, scene: SceneData, role: str) -> np.ndarray:
    where = "scene" if protocol.ids_in == "scene" else f"{role} split"
    for i in ids:
        if not 0 <= i < len(pool):
            raise DatasetError(
                scene.root,
                f"protocol {protocol.name} needs {role} view {i}, "
                f"but the {where} has {len(pool)} images",
            )
    return pool[np.asarray(ids, np.int64)]


def _check_size(protocol: Protocol, scene: SceneData) -> None:
    size = (scene.cameras.width, scene.cameras.height)
    if protocol.image_size is not None and size != tuple(protocol.image_size):
        want = "x".join(map(str, protocol.image_size))
        warnings.warn(
            f"{scene.root}: protocol {protocol.name} was published at {want} px but the images are "
            f"{size[0]}x{size[1]}; figures are not comparable to the paper's",
            ProtocolWarning,
            stacklevel=3,
        )
