"""Gaussian scenes: the 3DGS PLY round trip, SH colour by degree, densification with
its optimizer re-indexing, and `--method splat` end to end through the command line."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import trimesh

from sparsefield import evaluate
from sparsefield.fields import gaussians as gs
from sparsefield.renderers.densify import DensifyConfig, DensifyState, DensifyStrategy


def random_params(n=8, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"means": (n, 3), "log_scales": (n, 3), "quats": (n, 4), "logit_opacities": (n,),
              "sh_dc": (n, 3), "sh_rest": (n, 15, 3)}
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def test_ply_round_trips_exactly(tmp_path):
    params, alive = random_params(), np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)
    path = tmp_path / "scene.splat.ply"
    assert gs.write_ply(path, params, alive) == 6
    back = gs.read_ply(path)
    for key, value in params.items():
        np.testing.assert_array_equal(back[key], value[alive])
    header = path.read_bytes().split(b"end_header")[0].decode()
    assert "property float f_rest_44" in header and "property float rot_3" in header
    assert header.index("f_dc_0") < header.index("f_rest_0") < header.index("opacity") < header.index("scale_0")


def test_colour_uses_only_the_active_sh_degrees():
    params = {k: jnp.asarray(v) for k, v in random_params().items()}
    center = jnp.array([0.0, 0.0, 5.0])
    c0 = gs.gaussian_colors(params, center, 0)
    np.testing.assert_allclose(c0, np.maximum(0.5 + gs.SH_C0 * params["sh_dc"], 0.0), rtol=1e-6)
    zero_high = dict(params, sh_rest=params["sh_rest"].at[:, 3:].set(0.0))
    np.testing.assert_allclose(gs.gaussian_colors(params, center, 1), gs.gaussian_colors(zero_high, center, 1), rtol=1e-6)
    assert not np.allclose(gs.gaussian_colors(params, center, 3), gs.gaussian_colors(params, center, 1))


def test_densify_clones_splits_prunes_and_moves_moments():
    """Slot 0 small + high gradient (clone), 1 large + high gradient (split), 2
    transparent (prune), 3 untouched, 4..7 free; capacity 8. The pruned slot is reused
    first: the clone lands in 2, the split's second half in 4."""
    p = random_params()
    p["log_scales"][:] = np.log([[0.001] * 3, [0.05] * 3, [0.001] * 3, [0.001] * 3] + [[0.001] * 3] * 4)
    p["logit_opacities"][:] = [2.0, 2.0, -10.0, 2.0, 0, 0, 0, 0]
    alive = np.arange(8) < 4
    params = {k: jnp.asarray(v) for k, v in p.items()}
    opt = optax.adam(1.0)
    opt_state = jax.tree_util.tree_map(lambda x: x + 1.0 if x.ndim else x, opt.init(params))
    state = DensifyState(jnp.array([1.0, 1.0, 0.0, 0.0, 0, 0, 0, 0]), jnp.ones(8, jnp.int32))
    strategy = DensifyStrategy(DensifyConfig(grad_threshold=0.5, percent_dense=0.01, reset_every=10**6))
    info = {"alive": alive, "extent": 1.0, "max_capacity": 8, "key": 0}
    new, new_opt, new_state = strategy.update(params, opt_state, state, 100, info)
    new, mu = jax.device_get(new), np.asarray(new_opt[0].mu["means"])
    alive = np.asarray(info["alive"])
    assert alive.tolist() == [True] * 5 + [False] * 3
    np.testing.assert_array_equal(new["means"][2], p["means"][0])  # the clone
    np.testing.assert_allclose(np.exp(new["log_scales"][[1, 4]]), 0.05 / 1.6, rtol=1e-5)  # the split pair
    assert not np.allclose(new["means"][1], new["means"][4])
    assert np.all(mu[[0, 3]] == 1.0) and np.all(mu[[1, 2, 4]] == 0.0)
    assert float(jnp.sum(new_state.grad_sum)) == 0.0


def test_densify_doubles_a_full_capacity():
    p = {k: jnp.asarray(v) for k, v in random_params(4).items()}
    p["log_scales"] = jnp.full((4, 3), np.log(0.001))
    state = DensifyState(jnp.ones(4), jnp.ones(4, jnp.int32))
    info = {"alive": np.ones(4, bool), "extent": 1.0, "max_capacity": 16, "key": 0}
    new, new_opt, _ = DensifyStrategy(DensifyConfig(grad_threshold=0.5)).update(
        p, optax.adam(1.0).init(p), state, 100, info)
    assert new["means"].shape == (8, 3) and new_opt[0].nu["sh_rest"].shape == (8, 15, 3)
    assert int(np.sum(info["alive"])) == 8


def test_densify_prunes_gaussians_marked_outside_and_never_grows_them():
    """Slot 1 has a high gradient but lies outside the hull: pruned, not split; slot 0
    (inside, high gradient, small) is cloned into the freed slot."""
    p = {k: jnp.asarray(v) for k, v in random_params(4).items()}
    p["log_scales"] = jnp.full((4, 3), np.log(0.001))
    p["logit_opacities"] = jnp.full(4, 2.0)
    state = DensifyState(jnp.array([1.0, 1.0, 0.0, 0.0]), jnp.ones(4, jnp.int32))
    info = {"alive": np.array([1, 1, 1, 0], bool), "extent": 1.0, "max_capacity": 4, "key": 0,
            "outside": np.array([0, 1, 0, 0], bool)}
    new, _, _ = DensifyStrategy(DensifyConfig(grad_threshold=0.5, reset_every=10**6)).update(
        p, optax.adam(1.0).init(p), state, 100, info)
    assert np.asarray(info["alive"]).tolist() == [True, True, True, False]
    np.testing.assert_array_equal(np.asarray(new["means"][1]), np.asarray(p["means"][0]))  # the clone


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
    evaluate.run_command("export", ["--run", str(run), "--out", str(tmp_path / "scene.splat.ply")])
    assert len(gs.read_ply(tmp_path / "scene.splat.ply")["means"]) > 500
    evaluate.run_command("export", ["--run", str(run), "--out", str(tmp_path / "mesh.ply"), "--resolution", "32"])
    assert len(trimesh.load(tmp_path / "mesh.ply").faces) > 0


def test_seed_points_lie_in_the_visual_hull_and_in_dense_cells():
    """A sphere of radius 0.5 seen by 4 cameras around it and one above: hull points stay
    near it (the box corners are 1.7 away), and density seeding stays inside it."""
    from sparsefield.cameras import image_rays, look_at, make_cameras

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
    points, _ = gs.density_points(0, sphere, lambda x, d: np.zeros_like(x), bbox, 300, resolution=32)
    assert np.linalg.norm(points, axis=-1).max() < 0.5 + 2.0 / 31 * np.sqrt(3)


def test_densification_stops_at_a_fraction_of_the_run():
    strategy = DensifyStrategy(DensifyConfig(start=100, every=100, stop=0.5), steps=1000)
    assert [s for s in range(1, 1001) if strategy.due(s)] == [100, 200, 300, 400]
    assert not any(DensifyStrategy(DensifyConfig(stop=0.0), steps=1000).due(s) for s in range(1, 1001))


def test_training_ssim_matches_metric():
    """The splat loss's SSIM (banded-matrix blur) equals `metrics.ssim` on a crop whose
    statistics need no clipping, and its gradient is finite."""
    from sparsefield import metrics, splat

    key = jax.random.PRNGKey(0)
    x = jax.random.uniform(key, (40, 50, 3))
    y = jnp.clip(x + 0.1 * jax.random.normal(jax.random.fold_in(key, 1), x.shape), 0.0, 1.0)
    np.testing.assert_allclose(float(splat.ssim_for_training(x, y)), float(metrics.ssim(x, y)), atol=1e-6)
    assert bool(jnp.all(jnp.isfinite(jax.grad(splat.ssim_for_training)(x, y))))


def test_coarse_crop_is_the_pooled_view(scene):  # noqa: F811 (fixture)
    """A factor-2 crop of a whole view is the view averaged over 2x2 pixels, seen by a
    camera with half the focal length and principal point."""
    from sparsefield import splat
    from sparsefield.datasets import load_scene
    from sparsefield.datasets.batches import make_ray_data

    loaded = load_scene(scene)
    data = make_ray_data(loaded, loaded.split("train")[:2])
    cam, rgb, bg, alpha = splat.crop_view(data, jax.random.PRNGKey(3), 0, False, factor=2)
    view = int(np.argmin([np.abs(np.asarray(data.cameras.c2w[i]) - np.asarray(cam.c2w)).max() for i in range(2)]))
    h, w = data.images.shape[1:3]
    pooled = np.asarray(data.images[view]).reshape(h // 2, 2, w // 2, 2, 3).mean((1, 3))
    np.testing.assert_allclose(np.asarray(rgb), pooled, atol=1e-6)
    assert (cam.width, cam.height) == (w // 2, h // 2)
    np.testing.assert_allclose(float(cam.fx), float(data.cameras.fx[view]) / 2)
    np.testing.assert_allclose(float(cam.cx), float(data.cameras.cx[view]) / 2)
