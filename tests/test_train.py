"""The training loop's preparation: what the mask loss does without masks; the rays
split evenly over the devices."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sparsefield import train
from sparsefield.cameras import make_cameras
from sparsefield.config import PRESETS
from sparsefield.datasets import SceneData
from sparsefield.errors import UsageError
from sparsefield.losses.opacity import MaskLoss


def tiny_scene(n: int) -> SceneData:
    rng = np.random.default_rng(0)
    cams = make_cameras(np.tile(np.eye(4)[:3], (n, 1, 1)), 0.7, 4, 3)
    return SceneData(images=rng.random((n, 3, 4, 3)).astype(np.float32), masks=None, cameras=cams,
                     splits={"train": np.arange(0, n, 2), "test": np.arange(1, n, 2)},
                     bbox=np.array([[-1.0] * 3, [1.0] * 3]), near=0.1, far=5.0, background=np.ones(3),
                     root=Path("scan"), names=[str(i) for i in range(n)])


def test_mask_loss_that_asks_for_masks_turns_off_without_them():
    scene = tiny_scene(4)  # no alpha masks
    base = PRESETS["default"]
    optional = dataclasses.replace(base, reg=dataclasses.replace(base.reg, mask=MaskLoss(if_masks=True)))
    assert train.resolve_masks(optional, scene).reg.mask is None
    assert train.resolve_masks(optional, dataclasses.replace(scene, masks=np.ones((4, 3, 4)))).reg.mask is not None
    required = dataclasses.replace(base, reg=dataclasses.replace(base.reg, mask=MaskLoss()), data=Path("scan"))
    with pytest.raises(UsageError, match="needs alpha masks"):
        train.resolve_masks(required, scene)


def test_the_rays_must_split_evenly_over_the_devices():
    config = dataclasses.replace(PRESETS["default"], rays_per_batch=100)
    assert train.check_devices(config, 4) is config
    with pytest.raises(UsageError, match="--rays-per-batch 100: must be a multiple of the 3 devices"):
        train.check_devices(config, 3)


def test_bbox_flag_replaces_the_datasets_box(scene):
    config = dataclasses.replace(PRESETS["default"], data=scene, bbox=(-0.5, -0.5, -0.25, 0.5, 0.5, 0.75))
    _, views, _ = train.prepare(config)
    np.testing.assert_allclose(views.scene.bbox, [[-0.5, -0.5, -0.25], [0.5, 0.5, 0.75]])
    inverted = dataclasses.replace(config, bbox=(1, 0, 0, 0, 1, 1))
    with pytest.raises(Exception, match="every min must be below its max"):
        train.prepare(inverted)
