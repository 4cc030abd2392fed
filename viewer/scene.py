"""What the viewer draws besides the scene itself: the training cameras as frustums with
their images, the test views with their PSNR (``RUN/metrics.json``), and where the
browser's camera starts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..cameras import Cameras, look_at, mean_up
from ..datasets import SceneData
from ..frames import to_uint8
from ..runs import LoadedRun
from .convert import vertical_fov, viser_from_c2w

COLORS = {"train": (40, 90, 220), "test": (235, 120, 20)}
"""Frustum colours by split."""


@dataclasses.dataclass(frozen=True)
class ShownView:
    """A scene camera the viewer draws and can move the browser's camera to."""

    name: str
    """``train 26``, ``test 3 (23.41 dB)``: the split, the index into the scene's images,
    and for a test view its PSNR when the run was evaluated."""
    split: str
    index: int
    camera: Cameras


def test_psnr(run: Path) -> list[float | None]:
    """Per-frame test PSNR of ``RUN/metrics.json`` in the order of the run's ``test_ids``
    (empty when the run was not evaluated or the file is unreadable)."""
    path = Path(run) / "metrics.json"
    try:
        frames = json.loads(path.read_text()).get("per_frame", [])
        return [f.get("psnr") for f in sorted(frames, key=lambda f: f["frame"])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def shown_views(loaded: LoadedRun, scene: SceneData) -> list[ShownView]:
    """The run's training views (where it refined their poses, as refined:
    `LoadedRun.train_cameras`) and test views, read from its facts: ``train_view_ids``
    are positions in the train split (scene indices under a ``--protocol``),
    ``test_ids`` scene indices."""
    train, train_cams = loaded.train_view_ids(scene), loaded.train_cameras(scene)
    test = [int(i) for i in loaded.facts.get("test_ids", [])]
    psnr = test_psnr(loaded.run)
    views = [ShownView(f"train {int(i)}", "train", int(i), train_cams[k]) for k, i in enumerate(train)]
    for k, i in enumerate(test):
        score = f" ({psnr[k]:.2f} dB)" if k < len(psnr) and psnr[k] is not None else ""
        views.append(ShownView(f"test {i}{score}", "test", i, scene.cameras[i]))
    return views


def thumbnail(image: np.ndarray, long_side: int) -> np.ndarray:
    """``image [H, W, 3]`` in [0, 1] as uint8, subsampled so its longer side is at most
    about ``long_side`` (frustum images only need to be recognisable)."""
    stride = max(1, int(np.ceil(max(image.shape[:2]) / long_side)))
    return to_uint8(np.asarray(image)[::stride, ::stride])


def frustum_scale(scene: SceneData) -> float:
    """Size of the drawn frustums: 6% of the cameras' mean distance to the box centre."""
    centre = np.asarray(scene.bbox, np.float64).mean(0)
    return 0.06 * float(np.mean(np.linalg.norm(np.asarray(scene.cameras.centers) - centre, axis=-1)))


def add_frustums(server, views: list[ShownView], scene: SceneData, thumb: int,
                 on_click: Callable[[object, ShownView], None]) -> dict[str, list]:
    """A frustum per view under ``/train`` or ``/test``, showing its image, with a label
    on each test view; clicking one calls ``on_click(client, view)``.

    Returns:
        The scene handles by split, to show and hide them together.
    """
    handles: dict[str, list] = {"train": [], "test": []}
    scale = frustum_scale(scene)
    for view in views:
        cam = view.camera
        wxyz, position = viser_from_c2w(cam.c2w)
        frustum = server.scene.add_camera_frustum(
            f"/{view.split}/{view.index}", fov=vertical_fov(cam), aspect=cam.width / cam.height, scale=scale,
            thickness=0.02 * scale, color=COLORS[view.split], image=thumbnail(scene.images[view.index], thumb),
            format="jpeg", wxyz=wxyz, position=position)
        frustum.on_click(lambda event, view=view: on_click(event.client, view))
        handles[view.split].append(frustum)
        if view.split == "test":
            handles["test"].append(server.scene.add_label(f"/test/{view.index}/label", view.name))
    return handles


def start_pose(scene: SceneData | None, bbox) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(position, look_at, up, vertical fov)`` of the browser's first camera: behind and
    above the first scene camera (``o + 1.5 r + 0.5 |r| up``, ``r`` from the box centre
    ``o`` to that camera), so its frustum sits below the middle of the view, looking at
    the box centre with the cameras' mean up vector; without a scene, outside the box
    with +Z up."""
    centre = np.asarray(bbox, np.float64).mean(0)
    if scene is None:
        diagonal = np.ptp(np.asarray(bbox, np.float64), axis=0)
        return centre + diagonal * np.array([1.0, -1.0, 0.6]), centre, np.array([0.0, 0.0, 1.0]), np.radians(50.0)
    up = mean_up(scene.cameras)
    first = scene.cameras[0]
    offset = np.asarray(first.centers, np.float64) - centre
    return centre + 1.5 * offset + 0.5 * np.linalg.norm(offset) * up, centre, up, vertical_fov(first)


def start_c2w(scene: SceneData | None, bbox) -> np.ndarray:
    """The ``[3, 4]`` camera-to-world matrix of `start_pose` (what the browser reports)."""
    position, target, up, _ = start_pose(scene, bbox)
    return look_at(position, target, up)
