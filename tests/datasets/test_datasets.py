"""Tests for the Blender loader, `load_scene` and sparse-view selection.

Datasets are written to tmp_path as a few tiny 8x6 PNGs with known poses and pixels.
"""

from __future__ import annotations

import json
import math
import struct
import zlib

import imageio.v3 as iio
import numpy as np
import pytest

from sparsefield.cameras import look_at
from sparsefield.datasets import (
    BLENDER_8_VIEWS,
    DatasetError,
    fps_views,
    load_blender,
    load_scene,
    select_views,
)

W, H = 8, 6
FOV = 0.7


def _poses(n: int) -> np.ndarray:
    """``[n, 4, 4]`` rigid poses on a circle, looking at the origin."""
    out = []
    for k in range(n):
        az = 2 * math.pi * k / n
        c2w = look_at((4 * math.cos(az), 4 * math.sin(az), 1.0), (0.0, 0.0, 0.0))
        out.append(np.vstack([c2w, [0, 0, 0, 1]]).astype(np.float64))
    return np.stack(out)


def _pixels(seed: int, channels: int = 4, size=(H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, channels), dtype=np.uint8)


def _write(root, split: str, meta: dict) -> None:
    (root / f"transforms_{split}.json").write_text(json.dumps(meta))


def make_dataset(root, splits=(("train", 3), ("test", 1)), meta=None, channels=4):
    """Write a Blender dataset; returns {relative path without extension: uint8 pixels}."""
    root.mkdir(parents=True, exist_ok=True)
    pixels, seed = {}, 0
    for split, count in splits:
        (root / split).mkdir(exist_ok=True)
        frames = []
        for k, pose in enumerate(_poses(count)):
            name = f"{split}/r_{k}"
            pixels[name] = _pixels(seed, channels)
            seed += 1
            iio.imwrite(root / f"{name}.png", pixels[name])
            # NeRF-synthetic style: "./" prefix and no extension.
            frames.append({"file_path": f"./{name}", "transform_matrix": pose.tolist()})
        _write(root, split, {"camera_angle_x": FOV, "frames": frames, **(meta or {})})
    return pixels


def _edit(root, split: str, fn) -> None:
    path = root / f"transforms_{split}.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _composite(pixels: np.ndarray, bg) -> np.ndarray:
    x = pixels.astype(np.float64) / 255.0
    return x[..., :3] * x[..., 3:] + np.asarray(bg) * (1 - x[..., 3:])


# --------------------------------------------------------------------------- loading


def test_blender_values(tmp_path):
    bg = (0.2, 0.4, 0.6)
    pixels = make_dataset(tmp_path, meta={"near": 1.0, "far": 5.0})
    scene = load_blender(tmp_path, background=bg)

    assert scene.images.shape == (4, H, W, 3) and scene.images.dtype == np.float32
    assert scene.names == ["train/r_0.png", "train/r_1.png", "train/r_2.png", "test/r_0.png"]
    np.testing.assert_array_equal(scene.splits["train"], [0, 1, 2])
    np.testing.assert_array_equal(scene.splits["test"], [3])
    assert len(scene.splits["val"]) == 0
    # One pixel by hand: rgb * a + bg * (1 - a).
    r, g, b, a = pixels["train/r_1"][2, 5] / 255.0
    want = [r * a + bg[0] * (1 - a), g * a + bg[1] * (1 - a), b * a + bg[2] * (1 - a)]
    np.testing.assert_allclose(scene.images[1, 2, 5], want, atol=1e-6)
    np.testing.assert_allclose(scene.images[3], _composite(pixels["test/r_0"], bg), atol=1e-6)
    np.testing.assert_allclose(scene.masks[1], pixels["train/r_1"][..., 3] / 255.0, atol=1e-7)

    cams = scene.cameras
    assert (cams.width, cams.height) == (W, H)
    np.testing.assert_allclose(cams.fx, 0.5 * W / math.tan(FOV / 2), rtol=1e-6)
    np.testing.assert_allclose(cams.fy, cams.fx)
    np.testing.assert_allclose(cams.cx, W / 2)
    np.testing.assert_allclose(cams.cy, H / 2)
    poses = np.concatenate([_poses(3), _poses(1)])
    np.testing.assert_allclose(cams.c2w, poses[:, :3, :4], atol=1e-6)
    assert (scene.near, scene.far) == (1.0, 5.0)
    np.testing.assert_allclose(scene.bbox, [[-1.5] * 3, [1.5] * 3])
    np.testing.assert_allclose(scene.background, bg)


def test_full_intrinsics_and_rgb(tmp_path):
    intr = {"fl_x": 10.0, "fl_y": 11.0, "cx": 4.25, "cy": 2.75, "w": W, "h": H}
    pixels = make_dataset(tmp_path, splits=(("train", 2),), meta=intr, channels=3)
    _edit(tmp_path, "train", lambda m: m.pop("camera_angle_x"))
    _edit(tmp_path, "train", lambda m: m.update(bbox=[[-1, -2, -3], [1, 2, 3]]))
    scene = load_blender(tmp_path)
    assert scene.masks is None
    np.testing.assert_allclose(scene.images[1], pixels["train/r_1"] / 255.0, atol=1e-6)
    cams = scene.cameras
    np.testing.assert_allclose(
        [cams.fx[0], cams.fy[0], cams.cx[0], cams.cy[0]], [10, 11, 4.25, 2.75]
    )
    np.testing.assert_allclose(scene.bbox, [[-1, -2, -3], [1, 2, 3]])
    assert (scene.near, scene.far) == (2.0, 6.0)


def test_mixed_alpha_treats_missing_alpha_as_one(tmp_path):
    pixels = make_dataset(tmp_path, splits=(("train", 2),))
    iio.imwrite(tmp_path / "train/r_1.png", pixels["train/r_1"][..., :3])
    scene = load_blender(tmp_path, background=(0, 0, 0))
    np.testing.assert_array_equal(scene.masks[1], 1.0)
    np.testing.assert_allclose(scene.images[1], pixels["train/r_1"][..., :3] / 255.0, atol=1e-6)
    np.testing.assert_allclose(scene.masks[0], pixels["train/r_0"][..., 3] / 255.0, atol=1e-7)


def test_downscale_half_averages_premultiplied(tmp_path):
    bg = (1.0, 0.5, 0.0)
    pixels = make_dataset(tmp_path, splits=(("train", 2),))
    full = load_blender(tmp_path, background=bg)
    half = load_blender(tmp_path, scale=0.5, background=bg)
    assert half.images.shape == (2, H // 2, W // 2, 3)
    assert (half.cameras.width, half.cameras.height) == (W // 2, H // 2)
    np.testing.assert_allclose(half.cameras.fx, full.cameras.fx / 2, rtol=1e-6)
    np.testing.assert_allclose(half.cameras.cx, W / 4)
    # Output pixel (1, 2) covers input rows 2..3, columns 4..5: average the premultiplied
    # colour and alpha, then composite.
    block = pixels["train/r_0"][2:4, 4:6].reshape(4, 4) / 255.0
    alpha = block[:, 3].mean()
    premult = (block[:, :3] * block[:, 3:]).mean(axis=0)
    np.testing.assert_allclose(half.masks[0, 1, 2], alpha, atol=1e-6)
    np.testing.assert_allclose(
        half.images[0, 1, 2], premult + np.asarray(bg) * (1 - alpha), atol=1e-6
    )
    np.testing.assert_allclose(
        half.images[1, 0, 0], full.images[1, :2, :2].mean(axis=(0, 1)), atol=1e-6
    )


def test_downscale_non_integer_factor_keeps_area_mean(tmp_path):
    make_dataset(tmp_path, splits=(("train", 1),))
    full = load_blender(tmp_path)
    part = load_blender(tmp_path, scale=0.75)  # 8x6 -> 6x4 (round(4.5) = 4)
    assert part.images.shape == (1, 4, 6, 3)
    # Area averaging preserves the image mean (up to the rounded height's resampling).
    np.testing.assert_allclose(part.images.mean(), full.images.mean(), atol=0.03)
    assert part.images.min() >= full.images.min() - 1e-6
    assert part.images.max() <= full.images.max() + 1e-6


def _write_png16(path, a: np.ndarray) -> None:
    """Minimal 16-bit PNG writer (Pillow cannot write 16-bit RGB/RGBA)."""
    h, w, c = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_16bit_rgba(tmp_path):
    make_dataset(tmp_path, splits=(("train", 1),))
    a = np.random.default_rng(7).integers(0, 65536, (H, W, 4)).astype(np.uint16)
    _write_png16(tmp_path / "train/r_0.png", a)
    scene = load_blender(tmp_path, background=(0, 0, 0))
    x = a / 65535.0
    # Pillow decodes 16-bit RGBA to 8 bits, so allow one 8-bit step.
    np.testing.assert_allclose(scene.masks[0], x[..., 3], atol=1.5 / 255)
    np.testing.assert_allclose(scene.images[0], x[..., :3] * x[..., 3:], atol=3 / 255)


def test_load_scene_dispatches(tmp_path):
    make_dataset(tmp_path / "scene", splits=(("train", 2),))
    scene = load_scene(tmp_path / "scene", scale=0.5)
    assert scene.images.shape == (2, H // 2, W // 2, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no known dataset format found"):
        load_scene(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        load_scene(tmp_path / "missing")


# --------------------------------------------------------------------------- bad input


def _set_frame(split, k, key, value):
    return lambda root: _edit(root, split, lambda m: m["frames"][k].__setitem__(key, value))


def _matrix(fn):
    """Edit train frame 1's pose with ``fn(4x4 array) -> nested list``."""
    return _set_frame("train", 1, "transform_matrix", fn(_poses(3)[1]))


def _write_text(rel, text):
    return lambda root: (root / rel).write_text(text)


def _outside_path(root):
    outside = root.parent / "elsewhere"
    outside.mkdir()
    iio.imwrite(outside / "img.png", _pixels(0))
    _set_frame("train", 1, "file_path", "./train/../../elsewhere/img.png")(root)


def _outside_symlink(root):
    outside = root.parent / "elsewhere"
    outside.mkdir()
    iio.imwrite(outside / "img.png", _pixels(0))
    (root / "train/r_1.png").unlink()
    (root / "train/r_1.png").symlink_to(outside / "img.png")


def _image_size(root):
    iio.imwrite(root / "train/r_2.png", _pixels(0, size=(H, W + 2)))


BAD_INPUTS = {
    "no folder": (lambda root: None, "nowhere", "dataset folder does not exist"),
    "no train json": (
        lambda root: (root / "transforms_train.json").unlink(),
        "transforms_train.json",
        "missing transforms_train.json",
    ),
    "malformed json": (
        _write_text("transforms_train.json", '{"frames": [\n  {"file_path": }'),
        "transforms_train.json",
        "malformed JSON at line 2 column",
    ),
    "malformed test json": (
        _write_text("transforms_test.json", "{oops"),
        "transforms_test.json",
        "malformed JSON at line 1 column 2",
    ),
    "not an object": (
        _write_text("transforms_train.json", "[1, 2]"),
        "transforms_train.json",
        "expected a JSON object",
    ),
    "no frames key": (
        lambda root: _edit(root, "train", lambda m: m.pop("frames")),
        "transforms_train.json",
        "missing key 'frames'",
    ),
    "no intrinsics": (
        lambda root: _edit(root, "train", lambda m: m.pop("camera_angle_x")),
        "transforms_train.json",
        "no intrinsics",
    ),
    "bad fov": (
        lambda root: _edit(root, "train", lambda m: m.update(camera_angle_x="wide")),
        "transforms_train.json",
        "'camera_angle_x' must be a number, got 'wide'",
    ),
    "no file_path": (
        lambda root: _edit(root, "train", lambda m: m["frames"][2].pop("file_path")),
        "transforms_train.json",
        "frame 2 is missing key 'file_path'",
    ),
    "3x4 matrix": (
        _matrix(lambda m: m[:3].tolist()),
        "transforms_train.json",
        "frame 1: transform_matrix must be a 4x4 numeric matrix, got shape (3, 4)",
    ),
    "ragged matrix": (
        _matrix(lambda m: [[1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
        "transforms_train.json",
        "must be a 4x4 numeric matrix",
    ),
    "text matrix": (
        _matrix(lambda m: [["a"] * 4] * 4),
        "transforms_train.json",
        "must be a 4x4 numeric matrix",
    ),
    "scaled rotation": (
        _matrix(lambda m: (m * [[2], [2], [2], [1]]).tolist()),
        "transforms_train.json",
        "rotation is not rigid",
    ),
    "reflection": (
        _matrix(lambda m: (m * [[-1], [1], [1], [1]]).tolist()),
        "transforms_train.json",
        "rotation is not rigid",
    ),
    "last row": (
        _matrix(lambda m: np.vstack([m[:3], [0, 0, 1, 1]]).tolist()),
        "transforms_train.json",
        "last row must be [0, 0, 0, 1]",
    ),
    "missing image": (
        lambda root: (root / "train/r_1.png").unlink(),
        "r_1",
        "image file not found (frame 1 of transforms_train.json, also tried .png",
    ),
    "unreadable image": (_write_text("train/r_1.png", "not a png"), "r_1.png", "cannot read image"),
    "size vs w/h": (
        lambda root: _edit(root, "train", lambda m: m.update(w=W, h=H + 1)),
        "r_0.png",
        "image is 8x6 but transforms_train.json gives w=8, h=7",
    ),
    "size vs cx": (
        lambda root: _edit(root, "train", lambda m: m.update(fl_x=9.0, cx=W, cy=H / 2)),
        "r_0.png",
        "cx=8 in transforms_train.json implies a size of about 16 px",
    ),
    "sizes differ": (
        _image_size,
        "r_2.png",
        "image is 10x6 but r_0.png is 8x6 (all images must share one size)",
    ),
    "outside path": (_outside_path, "transforms_train.json", "resolves outside the dataset folder"),
    "outside symlink": (
        _outside_symlink,
        "transforms_train.json",
        "resolves outside the dataset folder",
    ),
    "empty train": (
        lambda root: _edit(root, "train", lambda m: m.update(frames=[])),
        "transforms_train.json",
        "the train split is empty",
    ),
    "bad bbox": (
        lambda root: _edit(root, "train", lambda m: m.update(bbox=[[1, 1, 1], [0, 0, 0]])),
        "transforms_train.json",
        "'bbox' must be",
    ),
    "bad near/far": (
        lambda root: _edit(root, "train", lambda m: m.update(near=3.0, far=2.0)),
        "transforms_train.json",
        "0 <= near < far",
    ),
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio's plugin probing
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_line_error(tmp_path, case):
    breaker, file_name, phrase = BAD_INPUTS[case]
    root = tmp_path / "scene"
    make_dataset(root)
    breaker(root)
    with pytest.raises(DatasetError) as info:
        load_blender(tmp_path / "nowhere" if case == "no folder" else root)
    message = str(info.value)
    assert "\n" not in message
    assert file_name in message and phrase in message, message


# --------------------------------------------------------------------------- views


def _ring(n: int) -> np.ndarray:
    return _poses(n)[:, :3, 3]


def test_select_views_standard_blender_8():
    picked = select_views(_ring(100), n=8)
    np.testing.assert_array_equal(picked, BLENDER_8_VIEWS)
    np.testing.assert_array_equal(select_views(_ring(5)), np.arange(5))
    np.testing.assert_array_equal(select_views(_ring(10), ids=[3, 1]), [3, 1])


def test_fps_distinct_deterministic_and_farthest():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(40, 3))
    picked = select_views(centers, n=6)
    assert picked[0] == 0 and len(set(picked.tolist())) == 6
    np.testing.assert_array_equal(picked, select_views(centers, n=6))
    farthest = np.argmax(np.linalg.norm(centers - centers[0], axis=1))
    assert picked[1] == farthest
    # The third pick maximises the distance to the nearer of the first two.
    d = np.minimum(
        np.linalg.norm(centers - centers[0], axis=1),
        np.linalg.norm(centers - centers[farthest], axis=1),
    )
    assert picked[2] == np.argmax(d)


def test_fps_on_a_ring_and_with_coincident_cameras():
    # On an 8-camera ring the farthest from camera 0 is the opposite one, 4.
    np.testing.assert_array_equal(fps_views(_ring(8), 2), [0, 4])
    same = np.zeros((5, 3))
    np.testing.assert_array_equal(np.sort(fps_views(same, 5)), np.arange(5))
    np.testing.assert_array_equal(fps_views(_ring(8), 3, start=2)[:2], [2, 6])


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        (dict(ids=[3, 120]), "view id 120 does not exist (the split has 100 frames)"),
        (dict(ids=[-1]), "view id -1 does not exist"),
        (dict(ids=[4, 4]), "view id 4 is listed twice"),
        (dict(n=0), "cannot select 0 views (the split has 100 frames)"),
        (dict(n=101), "cannot select 101 views"),
        (dict(n=3, ids=[1, 2]), "n=3 but 2 view ids were given"),
    ],
)
def test_select_views_bad_ids(kwargs, phrase):
    with pytest.raises(DatasetError) as info:
        select_views(_ring(100), source="transforms_train.json", **kwargs)
    message = str(info.value)
    assert message.startswith("transforms_train.json: ") and phrase in message, message
