"""Test cameras aligned to their images: the pose correction's maths, a perturbed camera
found again against a splat scene, and ``eval --align-poses`` on a trained run."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sparsefield.alignment import PoseAlignment, align_cameras
from sparsefield.cameras import corrected_poses, look_at, make_cameras, rotation_angle_deg, so3_exp
from sparsefield.config import RunConfig
from sparsefield.errors import UsageError
from sparsefield.fields import gaussians as gs
from sparsefield.methods.base import Method
from sparsefield.methods.splat import SplatMethod, state_from


def test_so3_exp_is_rodrigues_down_to_zero():
    rng = np.random.default_rng(0)
    omega = np.concatenate([rng.normal(size=(6, 3)), 1e-5 * rng.normal(size=(3, 3)), np.zeros((1, 3))])
    np.testing.assert_allclose(so3_exp(jnp.asarray(omega)), Rotation.from_rotvec(omega).as_matrix(), atol=1e-6)
    np.testing.assert_allclose(rotation_angle_deg(np.eye(3), Rotation.from_rotvec(omega[:6]).as_matrix()),
                               np.degrees(np.linalg.norm(omega[:6], axis=-1) % (2 * np.pi)), atol=1e-4)


def test_corrections_move_in_the_cameras_own_frame():
    c2w = jnp.asarray(look_at([3.0, 0.0, 1.0], [0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(corrected_poses(c2w, jnp.zeros(6)), c2w)
    forward = corrected_poses(c2w, jnp.array([0, 0, 0, 0, 0, -0.5]), scale=2.0)  # 1 unit down the camera's -Z
    np.testing.assert_allclose(forward[:, 3], c2w[:, 3] - c2w[:, 2], atol=1e-6)
    turned = corrected_poses(c2w, jnp.array([0.0, 0.1, 0.0, 0, 0, 0]))  # about the camera's up axis
    np.testing.assert_allclose(turned[:, 1], c2w[:, 1], atol=1e-6)
    np.testing.assert_allclose(rotation_angle_deg(c2w[:, :3], turned[:, :3]), np.degrees(0.1), rtol=1e-4)


def splat_scene():
    """A splat method's state: 600 coloured Gaussians in a cube, and a camera looking at them."""
    rng = np.random.default_rng(3)
    points = rng.uniform(-0.8, 0.8, (600, 3)).astype(np.float32)
    params, alive = gs.make_params(points, rng.uniform(0, 1, (600, 3)), 600, 0.8)
    params["log_scales"] = np.full_like(params["log_scales"], np.log(0.06))
    method = SplatMethod(RunConfig(method="splat"), np.array([[-1.0] * 3, [1.0] * 3]))
    camera = make_cameras(look_at([2.6, 1.2, 1.0], [0.0, 0.0, 0.0])[None], 0.8, 64, 64)
    return method, state_from(params, alive), camera


def test_a_perturbed_camera_is_aligned_back_to_its_image():
    method, state, camera = splat_scene()
    background = np.ones(3, np.float32)
    image = method.render(state, camera[0], background)["rgb"]
    moved = corrected_poses(jnp.asarray(camera.c2w), jnp.array([[0.012, -0.008, 0.01, 0.004, -0.003, 0.0]]),
                            scale=2 * np.sqrt(3))
    off = dataclasses.replace(camera, c2w=np.asarray(moved))
    before = rotation_angle_deg(camera.c2w[0, :, :3], off.c2w[0, :, :3])
    found = align_cameras(method, state, off, image[None], background, PoseAlignment())[0]
    after = rotation_angle_deg(camera.c2w[0, :, :3], np.asarray(found.camera.c2w)[:, :3])
    assert before > 0.9 and after < 0.1 * before
    assert np.linalg.norm(np.asarray(found.camera.c2w)[:, 3] - camera.c2w[0, :, 3]) < 0.01
    assert found.mse_after < 0.1 * found.mse_before


def test_a_method_without_a_pixel_renderer_is_refused():
    class Still(Method):
        name = "still"

    with pytest.raises(UsageError, match="still"):
        align_cameras(Still(RunConfig(), np.array([[-1.0] * 3, [1.0] * 3])), {}, None, None, None, PoseAlignment())


def test_eval_aligns_the_test_poses_of_a_trained_run(scene, tmp_path, cli):
    run = tmp_path / "run"
    cli("train", "--data", scene, "--steps", 30, "--out", run, "--eval-every", 1000, "--checkpoint-every", 1000)
    plain = json.loads((run / "metrics.json").read_text())
    out = cli("eval", "--run", run, "--align-poses", "--align.steps", 5, "--align.pixels", 256).stdout
    assert "poses aligned" in out and "pose moved" in out
    aligned = json.loads((run / "metrics.json").read_text())
    assert aligned["aligned_poses"] and not plain["aligned_poses"]
    moved = [f["align_rotation_deg"] for f in aligned["per_frame"]]
    assert len(moved) == len(plain["per_frame"]) and all(np.isfinite(m) and m > 0.0 for m in moved)
    assert f"pose moved {moved[0]:.3f} deg" in out  # the record is the correction applied
    assert aligned["psnr"] > plain["psnr"] - 0.5  # the true poses stay (about) where they are
