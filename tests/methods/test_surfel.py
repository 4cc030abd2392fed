"""2D Gaussian surfels as a method: `--method surfel` end to end through the command line,
splits in the disk's plane, the opacity field meshes are cut from, the surfel PLY."""

import json

import jax.numpy as jnp
import numpy as np
import trimesh

from sparsefield.methods import surfel_ply
from sparsefield.methods.surfel import SurfelDensify, make_params, opacity_field
from sparsefield.renderers.splatting import quat_to_rotmat


def test_surfel_method_trains_evaluates_renders_and_exports(scene, tmp_path, cli):
    run = tmp_path / "surfel"
    trained = cli("train", "--method", "surfel", "--preset", "fewshot", "--data", scene, "--views", 8, "--steps", 40,
        "--out", run, "--eval-every", 1000, "--checkpoint-every", 1000, "--surfel.crop", 0,
        "--surfel.gaussians.init-points", 1024, "--surfel.raster.tile-capacity", 64,
        "--surfel.densify.start", 20, "--surfel.densify.every", 20, "--surfel.normal-from", 0.5,
        "--surfel.distortion-from", 0.5, "--surfel.coarse", 0)  # the PSNR check compares full-resolution steps
    assert "unseen in the training views; pruned" in trained.stdout
    history = json.loads((run / "history.json").read_text())["train"]
    assert history[-1]["psnr"] > history[0]["psnr"] + 2.0
    assert history[-1]["loss_normal"] > 0.0 and history[0]["loss_normal"] == 0.0  # on from step 20
    assert all(np.isfinite(h["loss_mask"]) and h["loss_mask"] > 0.0 for h in history)  # the preset's mask loss
    psnr = json.loads((run / "metrics.json").read_text())["psnr"]
    assert psnr > 12.0
    out = cli("eval", "--run", run).stdout
    assert f"{psnr:.2f}" in out
    cli("render", "--run", run, "--out", tmp_path / "frames", "--frames", 3)
    assert len(list((tmp_path / "frames").glob("*_depth.png"))) == 3
    cli("export", "--run", run, "--out", tmp_path / "scene.surfel.ply")
    disks = surfel_ply.read_ply(tmp_path / "scene.surfel.ply")
    assert len(disks["means"]) > 100 and disks["log_scales"].shape[1] == 2
    np.testing.assert_allclose(np.linalg.norm(disks["normals"], axis=-1), 1.0, rtol=1e-5)
    cli("export", "--run", run, "--out", tmp_path / "mesh.ply", "--resolution", "32")
    assert len(trimesh.load(tmp_path / "mesh.ply").faces) > 0


def test_split_draws_both_disks_in_the_parents_plane():
    rng = np.random.default_rng(0)
    params, _ = make_params(rng.uniform(-1, 1, (8, 3)).astype(np.float32), np.zeros((8, 3)), 8, 0.5, key=1)
    p = {k: np.array(v) for k, v in params.items()}
    parents, normals = p["means"][:3].copy(), np.asarray(quat_to_rotmat(jnp.asarray(p["quats"][:3])))[:, :, 2]
    SurfelDensify._split(p, np.array([0, 1, 2]), np.array([5, 6, 7]), key=3)
    for kids in (np.array([0, 1, 2]), np.array([5, 6, 7])):
        offset = p["means"][kids] - parents
        np.testing.assert_allclose(np.sum(offset * normals, -1), 0.0, atol=1e-6)
        assert np.all(np.linalg.norm(offset, axis=-1) > 0)
        np.testing.assert_allclose(p["log_scales"][kids], params["log_scales"][:3] - np.log(1.6), rtol=1e-5)


def test_opacity_field_of_one_disk():
    """``o exp(-(u^2 + v^2 + (w / tau)^2) / 2)``: o at the centre, one standard deviation
    along each tangent (its scale) and across (tau)."""
    params, alive = make_params(np.zeros((1, 3), np.float32), np.zeros((1, 3)), 1, 0.6, key=2)
    params["log_scales"] = np.log(np.array([[0.3, 0.1]], np.float32))
    rot = np.asarray(quat_to_rotmat(jnp.asarray(params["quats"])))[0]
    field = opacity_field(params, alive, thickness=0.02)
    x = np.stack([np.zeros(3), 0.3 * rot[:, 0], 0.1 * rot[:, 1], 0.02 * rot[:, 2], 0.06 * rot[:, 2]])
    np.testing.assert_allclose(field(x), 0.6 * np.exp(-0.5 * np.array([0, 1, 1, 1, 9])), rtol=1e-5)


def test_ply_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    params, alive = make_params(rng.uniform(-1, 1, (6, 3)).astype(np.float32), rng.uniform(0, 1, (6, 3)), 8, 0.3, key=0)
    params["sh_rest"] = rng.normal(size=params["sh_rest"].shape).astype(np.float32)
    assert surfel_ply.write_ply(tmp_path / "a.surfel.ply", params, alive) == 6
    back = surfel_ply.read_ply(tmp_path / "a.surfel.ply")
    for key in params:
        np.testing.assert_array_equal(back[key], params[key][:6])
    header = (tmp_path / "a.surfel.ply").read_bytes().split(b"end_header")[0].decode()
    assert "scale_1" in header and "scale_2" not in header
