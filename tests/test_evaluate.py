"""Evaluation: the protocol's test views and metric masks, masked scores."""

from pathlib import Path

import numpy as np

from sparsefield import evaluate
from sparsefield.cameras import make_cameras
from sparsefield.config import RunConfig
from sparsefield.datasets import SceneData
from sparsefield.datasets.dtu import DTU_TEST_IDS

def tiny_scene_data(n: int, object_masks: bool):

    rng = np.random.default_rng(0)
    cams = make_cameras(np.tile(np.eye(4)[:3], (n, 1, 1)), 0.7, 4, 3)
    return SceneData(
        images=rng.random((n, 3, 4, 3)).astype(np.float32), masks=None, cameras=cams,
        splits={"train": np.arange(0, n, 2), "test": np.arange(1, n, 2)},
        bbox=np.array([[-1.0] * 3, [1.0] * 3]), near=0.1, far=5.0, background=np.ones(3),
        root=Path("scan"), names=[str(i) for i in range(n)],
        object_masks=(rng.random((n, 3, 4)) > 0.5).astype(np.float32) if object_masks else None,
    )


def test_protocol_picks_the_test_views_and_the_metric_masks():

    scene = tiny_scene_data(49, object_masks=True)
    dtu = RunConfig(protocol="dtu3")
    np.testing.assert_array_equal(evaluate.test_views(dtu, scene), DTU_TEST_IDS)
    np.testing.assert_array_equal(evaluate.metric_mask(dtu, scene, 5), scene.object_masks[5])
    plain = RunConfig()
    np.testing.assert_array_equal(evaluate.test_views(plain, scene), np.arange(1, 49, 2))
    assert evaluate.metric_mask(plain, scene, 5) is None
    assert evaluate.metric_mask(RunConfig(protocol="blender8"), scene, 5) is None


def test_masked_scores_ignore_everything_outside_the_object():

    rng = np.random.default_rng(1)
    gt = rng.random((40, 40, 3)).astype(np.float32)
    mask = np.zeros((40, 40), np.float32)
    mask[8:32, 10:30] = 1.0
    clean = np.clip(gt + 0.1 * (2 * (rng.random(gt.shape) > 0.5) - 1), 0, 1).astype(np.float32)
    garbage = np.where(mask[..., None] > 0, clean, rng.random(gt.shape)).astype(np.float32)
    inside = mask[..., None] > 0
    want_psnr = -10 * np.log10(np.mean(((clean - gt)[np.broadcast_to(inside, gt.shape)]) ** 2))
    np.testing.assert_allclose(evaluate.frame_psnr(garbage, gt, mask), want_psnr, rtol=1e-5)
    a, b = evaluate.score_frame(garbage, gt, mask), evaluate.score_frame(clean, gt, mask)
    np.testing.assert_allclose([a["psnr"], a["ssim"], a["lpips"]], [b["psnr"], b["ssim"], b["lpips"]], rtol=1e-5)
    np.testing.assert_allclose(a["psnr"], want_psnr, rtol=1e-5)
    white = np.ones_like(gt)
    full = evaluate.score_frame(np.where(inside, clean, white), np.where(inside, gt, white), None)
    np.testing.assert_allclose(a["ssim"], full["ssim"], rtol=1e-5)  # SSIM on white-composited images
