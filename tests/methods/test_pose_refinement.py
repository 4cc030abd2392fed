"""Training cameras refined with the scene (``--pose-refine``): the moved rays are the
rays of the moved cameras, the corrections train, are checkpointed and resume."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np

from sparsefield import checkpoints
from sparsefield.datasets import load_scene
from sparsefield.runs import load_run
from sparsefield.cameras import corrected_poses, look_at, make_cameras, pixel_rays, so3_exp
from sparsefield.methods.pose_refinement import common_motion_basis, refined_rays, without_common_motion


def test_refined_rays_are_the_rays_of_the_corrected_cameras():
    rng = np.random.default_rng(0)
    c2w = np.stack([look_at(rng.normal(size=3) * 3, [0, 0, 0]) for _ in range(3)])
    cams = make_cameras(c2w, 0.8, 40, 30)
    deltas = jnp.asarray(rng.normal(size=(3, 6)) * 0.05, jnp.float32)
    view = jnp.asarray(rng.integers(0, 3, 50))
    px, py = jnp.asarray(rng.uniform(0, 40, 50)), jnp.asarray(rng.uniform(0, 30, 50))
    per_ray = lambda c: dataclasses.replace(c, **{k: getattr(c, k)[view] for k in ("c2w", "fx", "fy", "cx", "cy")})  # noqa: E731
    o, d = pixel_rays(per_ray(cams), px, py)
    moved = dataclasses.replace(cams, c2w=corrected_poses(jnp.asarray(cams.c2w), deltas, 2.5))
    want_o, want_d = pixel_rays(per_ray(moved), px, py)
    got_o, got_d = refined_rays(deltas, view, jnp.asarray(cams.c2w), o, d, 2.5)
    np.testing.assert_allclose(got_o, want_o, atol=1e-5)
    np.testing.assert_allclose(got_d, want_d, atol=1e-5)


def test_pose_refinement_trains_checkpoints_and_resumes(scene, tmp_path, cli):
    run = tmp_path / "run"
    flags = ["--data", scene, "--views", 4, "--out", run, "--eval-every", 1000, "--checkpoint-every", 20,
             "--pose-refine", "pose-refinement"]
    out = cli("train", *flags, "--steps", 20).stdout
    assert "pose refinement: the 4 training cameras turned" in out
    assert "poses aligned" in out  # the refined run is scored with its test cameras aligned
    _, _, arrays, _ = checkpoints.read_latest(run, method="nerf")
    first = arrays["params/poses"]
    assert first.shape == (4, 6) and np.all(np.isfinite(first)) and np.abs(first).max() > 0
    cli("train", *flags, "--steps", 40)  # resumes from step 20 with the corrections
    _, _, arrays, _ = checkpoints.read_latest(run, method="nerf")
    assert int(arrays["step"]) == 40 and not np.array_equal(arrays["params/poses"], first)
    assert json.loads((run / "config.json").read_text())["pose_correction_deg"] > 0
    # export, orbit renders and the viewer place the training cameras where training moved them
    loaded = load_run(run)
    data = load_scene(loaded.config.data, scale=loaded.config.scale)
    given, refined = data.cameras[loaded.train_view_ids(data)], loaded.train_cameras(data)
    box = np.asarray(loaded.method.bbox)
    diagonal = float(np.linalg.norm(box[1] - box[0]))
    deltas = without_common_motion(jnp.asarray(arrays["params/poses"]), jnp.asarray(given.c2w), diagonal)
    np.testing.assert_allclose(refined.c2w, corrected_poses(jnp.asarray(given.c2w), deltas, diagonal), atol=1e-6)
    assert np.abs(np.asarray(refined.c2w) - np.asarray(given.c2w)).max() > 1e-6
    np.testing.assert_array_equal(refined.fx, given.fx)


def test_a_common_similarity_motion_is_projected_out_and_the_rest_kept():
    rng = np.random.default_rng(1)
    c2w = jnp.asarray(np.stack([look_at(rng.normal(size=3) * 3, [0, 0, 0]) for _ in range(5)]))
    scale = 2.0
    motion = 0.1 * jnp.asarray([0.01, -0.02, 0.015, 0.03, 0.01, -0.02, 0.02])
    common = (common_motion_basis(c2w, scale) @ motion).reshape(5, 6)
    # the basis is what moving the world does: each camera's corrected pose is the moved pose
    world_rot, world_t, grow = np.asarray(so3_exp(motion[:3])), np.asarray(motion[3:6]), float(motion[6])
    moved = corrected_poses(c2w, common, scale)
    want_rot = world_rot @ np.asarray(c2w[:, :, :3])
    want_centre = (1 + grow) * np.einsum("ij,vj->vi", world_rot, np.asarray(c2w[:, :, 3])) + world_t
    np.testing.assert_allclose(moved[:, :, :3], want_rot, atol=2e-4)  # first order in the motion
    np.testing.assert_allclose(moved[:, :, 3], want_centre, atol=2e-4)
    own = jnp.asarray(rng.normal(size=(5, 6)) * 0.01, jnp.float32)
    own = without_common_motion(own, c2w, scale)
    np.testing.assert_allclose(without_common_motion(own + common, c2w, scale), own, atol=1e-5)
    np.testing.assert_allclose(without_common_motion(common, c2w, scale), 0.0, atol=1e-5)
