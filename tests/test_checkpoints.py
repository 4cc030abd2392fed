"""Checkpoints: state by name with a format version; runs saved before named
checkpoints (format 1, a tiny fixture of each method) still load and render the same
image; a damaged newest checkpoint falls back to the previous one; the history inside is
strict JSON."""

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from sparsefield import checkpoints
from sparsefield.cameras import Cameras
from sparsefield.runs import load_run, save_history

FIXTURES = Path(__file__).parent / "fixtures" / "runs_v1"


def fixture_camera():
    c = np.load(FIXTURES / "camera.npz")
    cam = Cameras(c["c2w"], c["fx"], c["fy"], c["cx"], c["cy"], width=int(c["width"]), height=int(c["height"]))
    return cam, c["background"]


@pytest.mark.parametrize("method", ["nerf", "splat"])
def test_format_1_runs_load_and_render_as_they_did(method, tmp_path):
    run = tmp_path / method
    shutil.copytree(FIXTURES / method, run)
    loaded = load_run(run)
    assert loaded.config.method == method and loaded.step == 3
    cam, background = fixture_camera()
    rgb = loaded.render(cam, background)["rgb"]
    # rendered by the code that saved it; XLA compiles for the host CPU, so another CPU may
    # round the last bit differently (1e-7 seen): far below one step of an 8-bit image
    np.testing.assert_allclose(rgb, np.load(run / "expected_rgb.npy"), rtol=0, atol=1e-6)


def test_named_arrays_round_trip_with_version_and_history(tmp_path):
    state = {"step": jnp.asarray(7, jnp.int32), "params": {"w": jnp.arange(6.0).reshape(2, 3), "mlp": [{"b": jnp.ones(2)}]},
             "pruner": None}
    arrays = checkpoints.named_arrays(state)
    assert set(arrays) == {"step", "params/w", "params/mlp/0/b"}
    path = checkpoints.write(tmp_path, 7, arrays, "nerf", history={"train": [{"step": 7, "loss": 0.5}]})
    assert path.name == "step_0000007.npz"
    version, back, history = checkpoints.read(path)
    assert version == checkpoints.FORMAT and history["train"][0]["loss"] == 0.5
    filled, missing = checkpoints.fill(state, back, path)
    np.testing.assert_array_equal(filled["params"]["w"], np.arange(6.0).reshape(2, 3))
    assert missing == [] and int(filled["step"]) == 7


def test_a_new_component_starts_fresh_and_a_changed_shape_is_one_line(tmp_path):
    old = {"step": np.int32(1), "params": {"w": np.ones(3)}}
    grown = {"step": np.int32(0), "params": {"w": np.zeros(3), "new": np.full(2, 5.0)}}
    filled, missing = checkpoints.fill(grown, checkpoints.named_arrays(old), "ckpt")
    assert missing == ["params/new"]
    np.testing.assert_array_equal(filled["params"]["new"], [5.0, 5.0])
    np.testing.assert_array_equal(filled["params"]["w"], [1.0, 1.0, 1.0])
    with pytest.raises(checkpoints.CheckpointError, match="'params/w' has shape \\(3,\\)") as err:
        checkpoints.fill({"params": {"w": np.zeros(4)}}, checkpoints.named_arrays(old), "ckpt")
    assert "\n" not in str(err.value)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    for step in (5, 10):
        checkpoints.write(tmp_path, step, {"step": np.asarray(step)}, "nerf")
    newest = checkpoints.path_for(tmp_path, 10)
    newest.write_bytes(newest.read_bytes()[:40])  # truncated mid-write by a full disk, say
    warnings = []
    path, _, arrays, _ = checkpoints.read_latest(tmp_path, warn=warnings.append)
    assert path.name == "step_0000005.npz" and int(arrays["step"]) == 5
    assert len(warnings) == 1 and "step_0000010.npz" in warnings[0] and "previous checkpoint" in warnings[0]
    checkpoints.path_for(tmp_path, 5).write_bytes(b"not a zip")
    with pytest.raises(checkpoints.CheckpointError, match="unreadable checkpoint"):
        checkpoints.read_latest(tmp_path, warn=warnings.append)
    assert checkpoints.read_latest(tmp_path / "empty") is None


def test_a_checkpoint_from_a_newer_version_is_refused(tmp_path):
    path = checkpoints.write(tmp_path, 1, {"step": np.asarray(1)}, "nerf")
    with np.load(path) as f:
        arrays = dict(f)
    arrays["__format__"] = np.asarray(checkpoints.FORMAT + 1)
    np.savez(path, **arrays)
    with pytest.raises(checkpoints.CheckpointError, match="newer sparsefield"):
        checkpoints.read(path)


def test_history_is_strict_json_in_checkpoints_and_history_json(tmp_path):
    history = {"train": [{"step": 1, "loss": 0.5, "psnr": float("inf"), "lpips": np.float32("nan")}], "eval": []}
    path = checkpoints.write(tmp_path, 1, {"step": np.asarray(1)}, "nerf", history=history)
    with np.load(path) as f:
        text = f["__history__"].tobytes().decode()
    save_history(tmp_path, history)
    for text in (text, (tmp_path / "history.json").read_text()):
        entry = json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))["train"][0]
        assert entry == {"step": 1, "loss": 0.5, "psnr": None, "lpips": None}
