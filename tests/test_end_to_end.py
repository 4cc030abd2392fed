"""End to end through the command line: train a tiny synthetic scene for a few dozen
steps, check that PSNR rises, and that render / eval / export read the run back; bad
input exits with code 2, one line naming the file, and writes nothing."""

import functools
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import trimesh


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


def test_train_resumes_from_the_last_checkpoint(run, cli):
    proc = cli("train", "--out", run, "--steps", 70, *SMALL)
    assert "resuming" in proc.stdout and "from step 60" in proc.stdout
    assert json.loads((run / "metrics.json").read_text())["steps"] == 70


@pytest.mark.parametrize(
    "damage, phrase",
    [
        (lambda root: (root / "transforms_train.json").write_text("{ not json"), "transforms_train.json"),
        (lambda root: (root / "train" / "r_3.png").unlink(), "r_3"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(scene, tmp_path, damage, phrase, cli):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(scene, root)
    damage(root)
    out = tmp_path / "run"
    proc = cli("train", "--data", root, "--steps", 5, "--out", out, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and phrase in lines[0], proc.stderr
    assert not out.exists()


def test_unknown_view_id_exits_2(scene, tmp_path, cli):
    proc = cli("train", "--data", scene, "--view-ids", "1,2,99", "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "99" in proc.stderr and not (tmp_path / "r").exists()


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
    from sparsefield import evaluate
    from sparsefield.fields.field import count_params

    assert metrics["num_params"] == count_params(evaluate.load_run(out).state.params)  # the grown grid's


FEWSHOT = [
    *SMALL[: SMALL.index("--eval-every") + 1], "1000", *SMALL[SMALL.index("--eval-every") + 2 :],
    "reg.depth-smoothness:depth-smoothness", "--reg.depth-smoothness.patches.num-patches", "4",
    "--reg.depth-smoothness.patches.sample-budget", "4096",
]


def test_fewshot_preset_trains_with_its_regularizers(scene, tmp_path, cli):
    out = tmp_path / "fewshot"
    cli("train", "--preset", "fewshot", "--data", scene, "--views", 3, "--steps", 20, "--out", out, *FEWSHOT)
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
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["psnr"]) and len(metrics["train_view_ids"]) == 3
    assert metrics["protocol"] is None and metrics["masked"] is False


@pytest.mark.parametrize(
    "flags, phrase",
    [
        (["--protocol", "blender9"], "unknown protocol"),
        (["--protocol", "blender8"], "needs train view 26"),  # the tiny scene has 16 train frames
    ],
)
def test_bad_protocol_exits_2(scene, tmp_path, flags, phrase, cli):
    proc = cli("train", "--data", scene, "--out", tmp_path / "r", *flags, check=False)
    assert proc.returncode == 2 and phrase in proc.stderr, proc.stderr
    assert not (tmp_path / "r").exists()


def tiny_scene_data(n: int, object_masks: bool):
    from sparsefield.cameras import make_cameras
    from sparsefield.datasets import SceneData

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
    from sparsefield import evaluate
    from sparsefield.datasets.dtu import DTU_TEST_IDS
    from sparsefield.runs import RunConfig

    scene = tiny_scene_data(49, object_masks=True)
    dtu = RunConfig(protocol="dtu3")
    np.testing.assert_array_equal(evaluate.test_views(dtu, scene), DTU_TEST_IDS)
    np.testing.assert_array_equal(evaluate.metric_mask(dtu, scene, 5), scene.object_masks[5])
    plain = RunConfig()
    np.testing.assert_array_equal(evaluate.test_views(plain, scene), np.arange(1, 49, 2))
    assert evaluate.metric_mask(plain, scene, 5) is None
    assert evaluate.metric_mask(RunConfig(protocol="blender8"), scene, 5) is None


def test_masked_scores_ignore_everything_outside_the_object():
    from sparsefield import evaluate

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


def test_component_flags_work_in_any_order_and_without_their_token():
    from sparsefield import runs
    from sparsefield.train import parse_train_args

    # Every token of every component choice parses to that choice.
    for path, choices in runs.component_paths().items():
        for cls, name in choices:
            config = parse_train_args([f"{path}:{name}"])
            value = functools.reduce(getattr, path.replace("-", "_").split("."), config)
            assert (value is None) if cls is None else isinstance(value, cls), (path, name)
    # Plain flags after a component's flags; a component's flags without its token.
    config = parse_train_args(["occupancy:grid", "--occupancy.min-views", "2", "--steps", "5",
                               "--field.encoding.log2-table-size", "15", "--view-ids", "1", "2"])
    assert (config.occupancy.min_views, config.steps, config.field.encoding.log2_table_size) == (2, 5, 15)
    assert config.view_ids == (1, 2)
    assert parse_train_args(["--preset", "fewshot", "--reg.occlusion.weight", "0.5"]).reg.occlusion.weight == 0.5
    # A flag of a component that is off names the token that turns it on.
    with pytest.raises(runs.UsageError, match="reg.entropy:ray-entropy"):
        parse_train_args(["--reg.entropy.weight", "0.1"])
    with pytest.raises(runs.UsageError, match="takes no dashes; write render.space:ndc"):
        parse_train_args(["--render.space:ndc"])


def test_demo_trains_the_fewshot_preset_unless_told(monkeypatch):
    import dataclasses

    from sparsefield import evaluate, runs
    from sparsefield import train as train_module

    monkeypatch.setenv("SPARSEFIELD_COMPILE_CACHE", "off")
    seen = []
    monkeypatch.setattr(evaluate, "demo", lambda train_fn, config: seen.append(config))
    train_module.main(["demo", "--steps", "7"])
    train_module.main(["demo", "--preset", "default"])
    assert seen == [dataclasses.replace(runs.PRESETS["fewshot"], steps=7), runs.PRESETS["default"]]


def test_mask_loss_that_asks_for_masks_turns_off_without_them():
    import dataclasses

    from sparsefield import train
    from sparsefield.renderers.regularizers import MaskLoss
    from sparsefield.runs import PRESETS, UsageError

    scene = tiny_scene_data(4, object_masks=False)  # no alpha masks
    base = PRESETS["default"]
    optional = dataclasses.replace(base, reg=dataclasses.replace(base.reg, mask=MaskLoss(if_masks=True)))
    assert train.resolve_masks(optional, scene).reg.mask is None
    assert train.resolve_masks(optional, dataclasses.replace(scene, masks=np.ones((4, 3, 4)))).reg.mask is not None
    required = dataclasses.replace(base, reg=dataclasses.replace(base.reg, mask=MaskLoss()), data=Path("scan"))
    with pytest.raises(UsageError, match="needs alpha masks"):
        train.resolve_masks(required, scene)
