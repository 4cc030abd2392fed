"""The radiance-field method end to end through the command line: train a tiny synthetic
scene for a few dozen steps, check that PSNR rises, and that render / eval / export read
the run back; resuming, a growing voxel grid and the few-shot preset."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import trimesh

from sparsefield.fields.field import count_params
from sparsefield.runs import load_run

SMALL = [
    "--rays-per-batch", "1024", "--render.num-samples", "48", "--render.sample-budget", "16384",
    "--eval-every", "20", "--eval-views", "1", "--checkpoint-every", "20",
    "occupancy:grid", "--occupancy.resolution", "32", "--occupancy.warmup-steps", "16", "--occupancy.chunk", "8192",
    "field.encoding:hash", "--field.encoding.log2-table-size", "14", "--field.encoding.levels", "8",
    "--field.encoding.max-res", "128",
]


@pytest.fixture(scope="module")
def run(scene, tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    cli("train", "--data", scene, "--views", 8, "--steps", 60, "--out", out, *SMALL)
    return out


def test_training_raises_psnr_and_writes_the_run(run):
    history = json.loads((run / "history.json").read_text())["train"]
    assert history[-1]["step"] == 60
    assert history[-1]["psnr"] > history[0]["psnr"] + 3.0
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("psnr", "ssim", "lpips", "train_seconds", "steps", "train_view_ids", "num_params", "per_frame"):
        assert key in metrics
    assert metrics["steps"] == 60 and len(metrics["train_view_ids"]) == 8
    assert metrics["psnr"] > 14.0 and len(metrics["per_frame"]) == 2
    assert (run / "report.html").read_text().count("_strip.png") == 2
    assert (run / "config.json").exists() and list((run / "checkpoints").glob("step_*.npz"))


def test_render_eval_export_read_the_run_back(run, tmp_path, cli):
    proc = cli("render", "--run", run, "--path", "orbit", "--frames", 3, "--out", tmp_path / "orbit")
    frames = [iio.imread(tmp_path / "orbit" / f"{k:03d}.png") for k in range(3)]
    assert frames[0].shape == (32, 32, 3) and frames[0].std() > 5  # not a blank image
    assert (tmp_path / "orbit" / "000_depth.png").exists() and (tmp_path / "orbit" / "000_opacity.png").exists()
    assert list((tmp_path / "orbit").glob("video.*")), proc.stdout

    before = json.loads((run / "metrics.json").read_text())
    cli("eval", "--run", run)
    after = json.loads((run / "metrics.json").read_text())
    assert abs(after["psnr"] - before["psnr"]) < 1e-3  # same checkpoint, same images

    mesh_path = tmp_path / "mesh.ply"
    cli("export", "--run", run, "--out", mesh_path, "--resolution", 48, "--threshold", 1.0)
    mesh = trimesh.load(mesh_path)
    assert len(mesh.faces) > 100
    assert np.all(np.abs(mesh.vertices) <= 1.5 + 1e-3)
    assert mesh.visual.vertex_colors[:, :3].std() > 0  # coloured by the field


def test_export_fuses_from_the_views_the_run_trained_on(run, tmp_path, monkeypatch):
    """A run trained on 8 views fuses its mesh from those 8 cameras (plus the added
    ones), not from every camera its dataset holds."""
    from sparsefield import outputs
    from sparsefield.datasets import load_scene

    loaded = load_run(run)
    scene = load_scene(loaded.config.data, scale=loaded.config.scale)
    ids = loaded.train_view_ids(scene)
    np.testing.assert_array_equal(ids, np.asarray(scene.split("train"))[loaded.facts["train_view_ids"]])
    used, fused = {}, outputs.fusion_cameras

    def spy(train, *args, **kwargs):
        used["c2w"] = train.c2w
        return fused(train, *args, **kwargs)

    monkeypatch.setattr(outputs, "fusion_cameras", spy)
    outputs.export_mesh(outputs.ExportArgs(run=run, out=tmp_path / "fused.ply", resolution=32, views=4))
    np.testing.assert_allclose(used["c2w"], np.asarray(scene.cameras.c2w)[ids])
    assert len(trimesh.load(tmp_path / "fused.ply").faces) > 0


def test_train_resumes_from_the_last_checkpoint(run, cli):
    proc = cli("train", "--out", run, "--steps", 70, *SMALL)
    assert "resuming" in proc.stdout and "from step 60" in proc.stdout
    assert json.loads((run / "metrics.json").read_text())["steps"] == 70


VOXEL = [
    "--rays-per-batch", "1024", "--render.num-samples", "48", "--render.sample-budget", "16384",
    "--eval-every", "1000", "--eval-views", "1", "--checkpoint-every", "12", "--optim.warmup-steps", "5",
    "occupancy:grid", "--occupancy.resolution", "32", "--occupancy.warmup-steps", "16", "--occupancy.chunk", "8192",
    "field.encoding:voxel", "--field.encoding.max-res", "24", "--field.encoding.progressive-steps", "8", "16",
    "field.coarse-to-fine:none", "field.cam:none",
    "reg.distortion:distortion", "reg.tv:total-variation",
]


def test_voxel_grid_grows_trains_and_resumes_across_stages(scene, tmp_path, cli):
    out = tmp_path / "voxel"
    cli("train", "--data", scene, "--views", 8, "--steps", 12, "--out", out, *VOXEL)
    proc = cli("train", "--data", scene, "--steps", 30, "--out", out)
    assert "resuming" in proc.stdout and "voxel grid:" in proc.stdout
    history = json.loads((out / "history.json").read_text())["train"]
    assert history[-1]["step"] == 30 and history[-1]["psnr"] > history[0]["psnr"] + 0.2
    assert {"loss_distortion", "loss_tv"} <= set(history[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["psnr"]) and metrics["psnr"] > 12.0
    assert metrics["num_params"] == count_params(load_run(out).state["params"])  # the grown grid's


FEWSHOT = [
    *SMALL[: SMALL.index("--eval-every") + 1], "1000", *SMALL[SMALL.index("--eval-every") + 2 :],
    "reg.depth-smoothness:depth-smoothness", "--reg.depth-smoothness.patches.num-patches", "4",
    "--reg.depth-smoothness.patches.sample-budget", "4096",
]


def test_fewshot_preset_trains_with_its_regularizers(scene, tmp_path, cli):
    out = tmp_path / "fewshot"
    cli("train", "--preset", "fewshot", "--method", "nerf", "--data", scene, "--views", 3, "--steps", 20, "--out", out,
        *FEWSHOT)
    history = json.loads((out / "history.json").read_text())["train"]
    assert history[-1]["step"] == 20 and history[-1]["psnr"] > history[0]["psnr"]
    terms = ("loss_occlusion", "loss_distortion", "loss_mask", "loss_depth_smoothness")
    assert all(np.isfinite(h[k]) and h[k] >= 0.0 for h in history for k in terms)
    assert any(h["loss_depth_smoothness"] > 0.0 for h in history)  # patches were rendered
    saved = json.loads((out / "config.json").read_text())
    config = saved["config"]
    assert config["render"]["anneal"]["__class__"] == "SampleAnnealing"
    assert config["field"]["coarse_to_fine"]["__class__"] == "CoarseToFine"
    assert config["reg"]["depth_smoothness"]["patches"]["num_patches"] == 4  # a term added by flag
    assert config["reg"]["mask"]["weight"] == 0.1 and config["occupancy"]["min_views"] == 3
    assert config["reg"]["keypoint_depth"]["until"] == 300 and config["points"]["min_track"] == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["psnr"]) and len(metrics["train_view_ids"]) == 3
    assert metrics["protocol"] is None and metrics["masked"] is False


def test_a_term_with_until_leaves_the_compiled_step_from_that_step():
    """Keypoint depth off from step 5: the steps before compile with its keypoint rays,
    the steps after without them (no render of rays whose loss weighs 0)."""
    import dataclasses

    from sparsefield.config import PRESETS
    from sparsefield.losses.keypoints import KeypointDepth
    from sparsefield.methods.nerf import RadianceFieldMethod
    from sparsefield.methods.nerf_step import ray_sets

    config = PRESETS["fewshot"]
    config = dataclasses.replace(config, reg=dataclasses.replace(config.reg, keypoint_depth=KeypointDepth(until=5)))
    bbox = np.array([[-1.0] * 3, [1.0] * 3])
    method = RadianceFieldMethod(config, bbox)
    (enc_early, early), (enc_late, late) = method.stage(4), method.stage(5)
    assert "keypoint_depth" in early and "keypoint_depth" not in late and enc_early == enc_late
    assert set(early) - set(late) == {"keypoint_depth"}
    assert "keypoint" in ray_sets(config, {n: method.terms[n] for n in early}, bbox, 3.46)
    assert "keypoint" not in ray_sets(config, {n: method.terms[n] for n in late}, bbox, 3.46)
    assert method.field(4) is method.field(5)  # one field (and compiled renderer) for both
