"""3D Gaussians as a method: `--method splat` end to end through the command line,
seeding in the visual hull and in dense cells, the training SSIM, coarse crops."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from sparsefield import metrics
from sparsefield.cameras import image_rays, look_at, make_cameras
from sparsefield.config import RunConfig
from sparsefield.datasets import load_scene
from sparsefield.datasets.batches import make_ray_data
from sparsefield.datasets.scene import DatasetError
from sparsefield.fields import gaussians as gs
from sparsefield.losses.photometric import ssim_for_training
from sparsefield.methods.base import TrainViews
from sparsefield.methods.splat import SplatConfig
from sparsefield.methods.splat_seed import density_points, seed_points
from sparsefield.methods.splat_step import crop_view


def test_splat_method_trains_renders_and_exports(scene, tmp_path, cli):
    run = tmp_path / "splat"
    cli("train", "--method", "splat", "--preset", "fewshot", "--data", scene, "--views", 8, "--steps", 40, "--out", run,
        "--eval-every", 1000, "--checkpoint-every", 1000, "--splat.crop", 0,
        "--splat.gaussians.init-points", 1024, "--splat.raster.tile-capacity", 64,
        "--splat.densify.start", 20, "--splat.densify.every", 20,
        "--splat.coarse", 0)  # the PSNR check below compares full-resolution steps
    history = json.loads((run / "history.json").read_text())["train"]
    assert history[-1]["psnr"] > history[0]["psnr"] + 2.0
    assert all(np.isfinite(h["loss_mask"]) and h["loss_mask"] > 0.0 for h in history)  # the preset's mask loss
    assert json.loads((run / "metrics.json").read_text())["psnr"] > 12.0
    cli("export", "--run", run, "--out", tmp_path / "scene.splat.ply")
    assert len(gs.read_ply(tmp_path / "scene.splat.ply")["means"]) > 500
    cli("export", "--run", run, "--out", tmp_path / "mesh.ply", "--resolution", "32")
    assert len(trimesh.load(tmp_path / "mesh.ply").faces) > 0


def test_the_fewshot_preset_co_trains_two_scenes_from_three_views_until_the_twin_leaves(scene, tmp_path, cli):
    """From 3 views the preset trains two scenes (CoR-GS) for the first half of the run:
    the twin's loss and the disagreement are logged until then, and the checkpoint after
    it holds one scene, which resumes."""
    run = tmp_path / "co"
    flags = ("--preset", "fewshot", "--data", scene, "--views", 3, "--out", run, "--eval-every", 1000,
             "--checkpoint-every", 10, "--splat.gaussians.init-points", 1024, "--splat.raster.tile-capacity", 64,
             "--splat.coarse", 0)
    cli("train", *flags, "--steps", 20)
    history = json.loads((run / "history.json").read_text())["train"]
    twin = {h["step"]: "loss_co_training" in h and "loss_twin_rgb" in h for h in history}
    assert twin[min(twin)] and not twin[max(twin)] and all(twin[s] == (s <= 10) for s in twin)
    last = np.load(run / "checkpoints" / "step_0000020.npz")
    assert not any(k.startswith("twin/") for k in last.files)
    cli("train", *flags, "--steps", 30)  # resumes the one scene left
    assert json.loads((run / "metrics.json").read_text())["steps"] == 30


def test_seed_points_lie_in_the_visual_hull_and_in_dense_cells():
    """A sphere of radius 0.5 seen by 4 cameras around it and one above: hull points stay
    near it (the box corners are 1.7 away), and density seeding stays inside it."""
    eyes = [[3, 0, 0.5], [0, 3, 0.5], [-3, 0, 0.5], [0, -3, 0.5], [0.1, 0, 3]]
    cams = make_cameras(np.stack([look_at(e, [0, 0, 0]) for e in eyes]), 1.2, 32, 32)
    masks = []
    for k in range(len(eyes)):
        o, d = (np.asarray(a) for a in image_rays(jax.tree_util.tree_map(jnp.asarray, cams[k])))
        b = np.sum(o * d, -1)
        masks.append((b * b - np.sum(o * o, -1) + 0.25 > 0).astype(np.float32))
    bbox = np.array([[-1.0] * 3, [1.0] * 3])
    points, colors = gs.visual_hull_points(0, cams, np.stack(masks), np.ones((5, 32, 32, 3)), bbox, 500)
    assert len(points) == 500 and np.linalg.norm(points, axis=-1).max() < 0.9
    np.testing.assert_allclose(colors, 1.0)
    inside, _ = gs.hull_test(np.array([[0.0, 0, 0], [0.3, 0, 0.1], [0.95, 0.95, 0], [0, 0, 0.9]]), cams, np.stack(masks))
    assert inside.tolist() == [True, True, False, False]
    # Of the cameras at +x and +y, a point near the first is in its frustum only: kept at
    # min_views 1, pruned at 2, with or without masks (without, only the count is tested).
    two, near = cams[:2], np.array([[2.0, 0.3, 0.5], [0.0, 0.0, 0.0]])
    assert gs.hull_test(near, two, None)[0].tolist() == [True, True]
    assert gs.hull_test(near, two, None, min_views=2)[0].tolist() == [False, True]
    assert gs.hull_test(near, two, np.ones((2, 32, 32)), min_views=2)[0].tolist() == [False, True]
    assert gs.hull_test(near, two, None, min_views=99)[0].tolist() == [False, True]  # capped at 2 views
    sphere = lambda x: np.where(np.linalg.norm(x, axis=-1) < 0.5, 100.0, 0.0).astype(np.float32)  # noqa: E731
    points, _ = density_points(0, sphere, lambda x, d: np.zeros_like(x), bbox, 300, resolution=32)
    assert np.linalg.norm(points, axis=-1).max() < 0.5 + 2.0 / 31 * np.sqrt(3)


def test_training_ssim_matches_metric():
    """The splat loss's SSIM (banded-matrix blur) equals `metrics.ssim` on a crop whose
    statistics need no clipping, and its gradient is finite."""
    key = jax.random.PRNGKey(0)
    x = jax.random.uniform(key, (40, 50, 3))
    y = jnp.clip(x + 0.1 * jax.random.normal(jax.random.fold_in(key, 1), x.shape), 0.0, 1.0)
    np.testing.assert_allclose(float(ssim_for_training(x, y)), float(metrics.ssim(x, y)), atol=1e-6)
    assert bool(jnp.all(jnp.isfinite(jax.grad(ssim_for_training)(x, y))))


def test_coarse_crop_is_the_pooled_view(scene):
    """A factor-2 crop of a whole view is the view averaged over 2x2 pixels, seen by a
    camera with half the focal length and principal point."""
    loaded = load_scene(scene)
    data = make_ray_data(loaded, loaded.split("train")[:2])
    cam, rgb, bg, alpha = crop_view(data, jax.random.PRNGKey(3), 0, False, factor=2)
    view = int(np.argmin([np.abs(np.asarray(data.cameras.c2w[i]) - np.asarray(cam.c2w)).max() for i in range(2)]))
    h, w = data.images.shape[1:3]
    pooled = np.asarray(data.images[view]).reshape(h // 2, 2, w // 2, 2, 3).mean((1, 3))
    np.testing.assert_allclose(np.asarray(rgb), pooled, atol=1e-6)
    assert (cam.width, cam.height) == (w // 2, h // 2)
    np.testing.assert_allclose(float(cam.fx), float(data.cameras.fx[view]) / 2)
    np.testing.assert_allclose(float(cam.cx), float(data.cameras.cx[view]) / 2)


def test_an_empty_hull_is_the_datasets_error_for_either_seeding(scene):
    """Masks with nothing in them leave no hull to seed: one line naming the dataset, for
    the visual hull and for the photo hull alike."""
    loaded = load_scene(scene)
    blank = dataclasses.replace(loaded, masks=np.zeros_like(loaded.masks))
    views = TrainViews(blank, loaded.split("train")[:3])
    for init in ("hull", "carve"):
        gaussians = gs.GaussianConfig(init=init, init_points=64, carve_resolution=16)
        config = RunConfig(splat=SplatConfig(gaussians=gaussians))
        with pytest.raises(DatasetError, match=r"tiny: cannot seed Gaussians: .* training views 0, 1, 2"):
            seed_points(config, views)
