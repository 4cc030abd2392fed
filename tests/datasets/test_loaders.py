"""Tests for the LLFF, DTU, nerfstudio and COLMAP loaders, the pose helpers and protocols.

Fixtures are tiny (16x12) datasets written to tmp_path from cameras with known poses and
intrinsics; round trips compare the loaded cameras with the originals (1e-5), and
hand-worked cameras / projections check each format's axis convention independently of
the writers.
"""

from __future__ import annotations

import json
import math
import struct
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from sparsefield.cameras import look_at, pixel_rays
from sparsefield.datasets import (
    CameraModelWarning,
    DatasetError,
    SceneData,
    apply_protocol,
    get_protocol,
    load_colmap,
    load_dtu,
    load_llff,
    load_nerfstudio,
    load_scene,
)
from sparsefield.datasets import synthetic as syn
from sparsefield.datasets import writers
from sparsefield.datasets.dtu import DTU_TEST_IDS, dtu_splits
from sparsefield.datasets.poses import (
    decompose_projection,
    pinhole_cameras,
    quaternion_to_rotation,
    rotation_to_quaternion,
)
from sparsefield.datasets.protocols import ProtocolWarning

W, H = 16, 12
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio plugin probing


def known_cameras(n: int = 5, same_intrinsics: bool = False):
    """``n`` OpenGL cameras around the origin with distinct, off-centre intrinsics."""
    poses = [
        look_at((3 * math.cos(a), 3 * math.sin(a), 0.5 + 0.2 * k), (0.1, -0.2, 0.05))
        for k, a in enumerate(np.linspace(0.3, 5.5, n))
    ]
    k = np.zeros(n) if same_intrinsics else np.arange(n)
    return pinhole_cameras(poses, 20 + k, 18 + 0.5 * k, W / 2 + 0.3 * k, H / 2 - 0.2 * k, W, H)


def pixels(n: int, seed: int = 0, size=(H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def assert_same_cameras(loaded, original, tol: float = 1e-5) -> None:
    assert (loaded.width, loaded.height) == (original.width, original.height)
    np.testing.assert_allclose(loaded.centers, original.centers, atol=tol)
    np.testing.assert_allclose(loaded.c2w[:, :, :3], original.c2w[:, :, :3], atol=tol)
    for name in ("fx", "fy", "cx", "cy"):
        np.testing.assert_allclose(getattr(loaded, name), getattr(original, name), rtol=tol)


def ray_miss(camera, u: float, v: float, point) -> float:
    """Distance from ``point`` to the ray through pixel position ``(u, v)``."""
    o, d = (np.asarray(a, np.float64) for a in pixel_rays(camera, np.float32(u), np.float32(v)))
    rel = np.asarray(point, np.float64) - o
    return float(np.linalg.norm(rel - (rel @ d) * d))


def expect_error(load, path, file_name: str, phrase: str) -> None:
    with pytest.raises(DatasetError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message
    assert file_name in message and phrase in message, message


# --------------------------------------------------------------------------- pose helpers


def test_quaternions_round_trip_and_match_hand_worked_rotations():
    np.testing.assert_allclose(quaternion_to_rotation([1, 0, 0, 0]), np.eye(3))
    c = math.sqrt(0.5)
    np.testing.assert_allclose(
        quaternion_to_rotation([c, 0, c, 0]), [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-12
    )
    np.testing.assert_allclose(
        quaternion_to_rotation([0, 0, 0, 1]), np.diag([-1.0, -1.0, 1.0]), atol=1e-12
    )
    rng = np.random.default_rng(0)
    for q in [*rng.standard_normal((20, 4)), [0, 1, 1e-9, 0], [1e-9, 0, 0, -1]]:
        q = np.asarray(q) / np.linalg.norm(q)
        back = rotation_to_quaternion(quaternion_to_rotation(q))
        np.testing.assert_allclose(back, q * np.sign(q[0] or 1), atol=1e-7)


def test_decompose_projection_recovers_k_r_and_centre():
    intr = np.array([[30.0, 0.0, 7.5], [0.0, 28.0, 6.2], [0.0, 0.0, 1.0]])
    rot = quaternion_to_rotation(
        np.array([0.8, 0.2, -0.4, 0.4]) / np.linalg.norm([0.8, 0.2, -0.4, 0.4])
    )
    center = np.array([0.5, -2.0, 3.0])
    proj = intr @ np.concatenate([rot, (-rot @ center)[:, None]], 1)
    for s in (1.0, -3.0, 0.01):
        k, c2w = decompose_projection(s * proj)
        np.testing.assert_allclose(k, intr, atol=1e-9)
        np.testing.assert_allclose(c2w[:, :3], rot.T, atol=1e-9)
        np.testing.assert_allclose(c2w[:, 3], center, atol=1e-9)


# --------------------------------------------------------------------------- LLFF


@pytest.fixture(scope="module")
def forward(tmp_path_factory):
    root = tmp_path_factory.mktemp("llff") / "scene"
    return syn.generate_forward_scene(root, "tiny", n_views=10, width=W, height=H, factors=(2,))


def regnerf_llff_poses(raw: np.ndarray) -> np.ndarray:
    """RegNeRF's LLFF pose pipeline, written independently of the loader."""
    poses = raw[:, :15].reshape(-1, 3, 5)[:, :, :4]
    fix = np.array([[0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float64)
    poses = poses @ fix
    poses[:, :3, 3] *= 1.0 / (raw[:, 15:].min() * 0.75)
    center = poses[:, :3, 3].mean(0)
    z = poses[:, :3, 2].sum(0) / np.linalg.norm(poses[:, :3, 2].sum(0))
    x = np.cross(poses[:, :3, 1].sum(0), z)
    x /= np.linalg.norm(x)
    avg = np.eye(4)
    avg[:3] = np.stack([x, np.cross(z, x), z, center], 1)
    full = np.concatenate([poses, np.tile([[[0, 0, 0, 1.0]]], (len(poses), 1, 1))], 1)
    return (np.linalg.inv(avg) @ full)[:, :3]


def test_llff_writer_uses_down_right_back_columns(forward):
    raw = np.load(forward / "poses_bounds.npy")
    poses = raw[:, :15].reshape(-1, 3, 5)
    centers = poses[:, :, 3]
    # The synthetic cameras sit near (0, -4, 0) looking at the origin with world +Z up.
    assert np.all(poses[:, :, 0] @ [0, 0, -1.0] > 0.95)  # column 0: down
    np.testing.assert_allclose(
        poses[:, :, 2], centers / np.linalg.norm(centers, axis=1, keepdims=True), atol=1e-6
    )
    np.testing.assert_allclose(
        poses[:, :, 4],
        np.tile([H, W, W / (2 * math.tan(syn.BLENDER_FOV_X / 2))], (10, 1)),
        rtol=1e-6,
    )
    assert np.all((raw[:, 15] > 2.0) & (raw[:, 16] < 8.0))  # content between the scene and the wall


def test_llff_loader_matches_regnerf_pipeline(forward):
    raw = np.load(forward / "poses_bounds.npy")
    scene = load_llff(forward)
    np.testing.assert_allclose(scene.cameras.c2w, regnerf_llff_poses(raw), atol=1e-5)
    np.testing.assert_allclose(np.asarray(scene.cameras.centers).mean(0), 0.0, atol=1e-5)
    focal = W / (2 * math.tan(syn.BLENDER_FOV_X / 2))
    np.testing.assert_allclose(scene.cameras.fx, focal, rtol=1e-6)
    np.testing.assert_allclose(scene.cameras.cy, H / 2)
    sc = 1.0 / (raw[:, 15:].min() * 0.75)
    assert (
        scene.ndc
        and math.isclose(scene.near, 0.9 * raw[:, 15].min() * sc)
        and math.isclose(scene.far, raw[:, 16].max() * sc)
    )
    assert scene.splits["test"].tolist() == [0, 8] and scene.splits["train"].tolist() == [
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        9,
    ]
    assert scene.names[3] == "images/image_003.png"
    np.testing.assert_allclose(
        scene.images[3], iio.imread(forward / scene.names[3]) / 255.0, atol=1e-6
    )
    middle = scene.cameras.centers - 0.5 * (scene.near + scene.far) * scene.cameras.c2w[:, :, 2]
    assert np.all(scene.bbox[0] < middle) and np.all(middle < scene.bbox[1])


def test_llff_scale_uses_images_k_or_resizes(forward):
    half = load_scene(forward, scale=0.5)
    assert half.names[0] == "images_2/image_000.png" and half.images.shape == (
        10,
        H // 2,
        W // 2,
        3,
    )
    np.testing.assert_allclose(
        half.images[0], iio.imread(forward / half.names[0]) / 255.0, atol=1e-6
    )
    full = load_llff(forward)
    np.testing.assert_allclose(half.cameras.fx, full.cameras.fx / 2, rtol=1e-6)
    quarter = load_llff(forward, scale=0.25)  # no images_4: area-resized from images/
    assert quarter.images.shape == (10, 3, 4, 3) and quarter.names[0] == "images/image_000.png"
    np.testing.assert_allclose(
        quarter.images[0, 0, 0], full.images[0, :4, :4].mean((0, 1)), atol=1e-5
    )
    np.testing.assert_allclose(quarter.cameras.cx, W / 8)


# --------------------------------------------------------------------------- DTU


def dtu_fixture(root: Path, n: int = 4, scale_mat=None) -> tuple:
    cams = known_cameras(n)
    masks = (np.indices((n, H, W))[2] < 5 + np.arange(n)[:, None, None]).astype(np.float32)
    writers.write_dtu(root, cams, pixels(n), masks, scale_mat)
    return cams, masks


def test_dtu_round_trip_and_projection_convention(tmp_path):
    scale_mat = np.diag([2.5, 2.5, 2.5, 1.0])
    scale_mat[:3, 3] = (10.0, -4.0, 7.0)
    cams, masks = dtu_fixture(tmp_path / "scan", scale_mat=scale_mat)
    scene = load_scene(tmp_path / "scan")
    assert_same_cameras(scene.cameras, cams)
    np.testing.assert_array_equal(scene.object_masks, masks)
    assert scene.masks is None and not scene.ndc
    assert scene.splits["test"].tolist() == [0] and scene.splits["train"].tolist() == [1, 2, 3]
    # IDR: a normalised point X projects to P = world_mat @ scale_mat applied to [X, 1].
    data = np.load(tmp_path / "scan" / "cameras.npz")
    point = np.array([0.2, -0.1, 0.3, 1.0])
    for k in range(len(cams)):
        u, v, w = (data[f"world_mat_{k}"] @ data[f"scale_mat_{k}"] @ point)[:3]
        assert ray_miss(scene.cameras[k], u / w, v / w, point[:3]) < 1e-5


def test_dtu_scale_samples_masks_nearest(tmp_path):
    _, masks = dtu_fixture(tmp_path / "scan")
    scene = load_dtu(tmp_path / "scan", scale=0.5)
    np.testing.assert_array_equal(scene.object_masks, masks[:, ::2, ::2])
    assert scene.images.shape == (4, H // 2, W // 2, 3)


def test_dtu_standard_split_ids():
    splits = dtu_splits(49)
    assert splits["test"].tolist() == list(DTU_TEST_IDS) and len(DTU_TEST_IDS) == 25
    assert {25, 22, 28, 40, 44, 48, 0, 8, 13} <= set(splits["train"].tolist())
    assert not set(splits["train"].tolist()) & {
        3,
        4,
        5,
        6,
        7,
        16,
        17,
        18,
        19,
        20,
        21,
        36,
        37,
        38,
        39,
    }
    assert len(splits["train"]) == 49 - 25 - 15


# --------------------------------------------------------------------------- nerfstudio


@pytest.mark.parametrize("per_frame", [False, True])
def test_nerfstudio_round_trip(tmp_path, per_frame):
    cams = known_cameras(10, same_intrinsics=not per_frame)
    writers.write_nerfstudio(tmp_path / "ns", cams, pixels(10), per_frame=per_frame)
    scene = load_scene(tmp_path / "ns")
    assert_same_cameras(scene.cameras, cams)
    np.testing.assert_allclose(scene.images[2], pixels(10)[2] / 255.0, atol=1e-6)
    # nerfstudio's default split: train = linspace(0, 9, ceil(0.9 * 10)) as ints, test = the rest.
    assert scene.splits["train"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 9] and scene.splits[
        "test"
    ].tolist() == [8]
    # nerfstudio's box: mean camera centre +- the largest coordinate offset.
    centers = np.asarray(cams.centers, np.float64)
    half = np.abs(centers - centers.mean(0)).max()
    np.testing.assert_allclose(
        scene.bbox, [centers.mean(0) - half, centers.mean(0) + half], atol=1e-5
    )


def test_nerfstudio_splits_distortion_and_ngp_box(tmp_path):
    cams = known_cameras(5, same_intrinsics=True)
    writers.write_nerfstudio(
        tmp_path / "ns",
        cams,
        pixels(5),
        distortion={"k1": 0.1, "p2": 0.01},
        splits={"train": [4, 0], "val": [2]},
        extra={"aabb_scale": 4, "offset": [0.5, 0.5, 1.0]},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = load_nerfstudio(tmp_path / "ns" / "transforms.json")
    distortion = [w for w in caught if issubclass(w.category, CameraModelWarning)]
    assert len(distortion) == 1 and "k1, p2" in str(distortion[0].message)
    assert scene.splits["train"].tolist() == [4, 0] and scene.splits["test"].tolist() == [2]
    # instant-ngp: the scene is the unit cube, (0.5 +- 1 / 2 - offset) / 0.33; aabb_scale 4
    # only says how far the background reaches, (0.5 +- 4 / 2 - offset) / 0.33.
    np.testing.assert_allclose(
        scene.bbox, [[-0.5 / 0.33, -0.5 / 0.33, -1 / 0.33], [0.5 / 0.33, 0.5 / 0.33, 0.0]],
        rtol=1e-6, atol=1e-7,
    )
    np.testing.assert_allclose(
        scene.outer_bbox,
        [[-2 / 0.33, -2 / 0.33, -2.5 / 0.33], [2 / 0.33, 2 / 0.33, 1.5 / 0.33]],
        rtol=1e-6,
    )
    assert scene.near < scene.far


def test_detection_order(tmp_path):
    writers.write_nerfstudio(tmp_path / "both", known_cameras(2), pixels(2))
    writers.write_colmap(tmp_path / "both", known_cameras(2), pixels(2))
    assert (
        load_scene(tmp_path / "both").names[0] == "images/frame_00000.png"
    )  # transforms.json wins
    assert load_scene(tmp_path / "both", format="colmap").names[0] == "images/image_000.png"
    with pytest.raises(ValueError, match="unknown dataset format 'ply'"):
        load_scene(tmp_path / "both", format="ply")


# --------------------------------------------------------------------------- COLMAP


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("model", ["PINHOLE", "SIMPLE_PINHOLE", "OPENCV"])
def test_colmap_round_trip(tmp_path, binary, model):
    cams = known_cameras(9, same_intrinsics=model == "SIMPLE_PINHOLE")
    if model == "SIMPLE_PINHOLE":
        cams = pinhole_cameras(cams.c2w, cams.fx, cams.fx, cams.cx, cams.cy, W, H)
    distortion = (0.05, -0.01) if model == "OPENCV" else ()
    writers.write_colmap(
        tmp_path / "c", cams, pixels(9), binary=binary, model=model, distortion=distortion
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = load_scene(tmp_path / "c")
    assert len([w for w in caught if issubclass(w.category, CameraModelWarning)]) == (
        model == "OPENCV"
    )
    assert_same_cameras(scene.cameras, cams)
    assert scene.splits["test"].tolist() == [0, 8]
    np.testing.assert_allclose(scene.images[5], pixels(9)[5] / 255.0, atol=1e-6)


def hand_model(root: Path, binary: bool) -> None:
    """Two cameras written by hand: identity rotation at t = (0, 0, 5), and 90 degrees about y."""
    c = math.sqrt(0.5)
    images = [
        (1, (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 5.0), "a.png"),
        (2, (c, 0.0, c, 0.0), (1.0, 0.0, 2.0), "b.png"),
    ]
    folder = root / "sparse" / "0"
    folder.mkdir(parents=True)
    if binary:
        (folder / "cameras.bin").write_bytes(
            struct.pack("<QiiQQ4d", 1, 7, 1, W, H, 20.0, 22.0, 8.5, 5.5)
        )
        data = struct.pack("<Q", 2) + b"".join(
            struct.pack("<i7di", i, *q, *t, 7)
            + name.encode()
            + b"\0"
            + struct.pack("<Q1d1d1q", 1, 3.0, 4.0, -1)
            for i, q, t, name in images
        )
        (folder / "images.bin").write_bytes(data)
    else:
        (folder / "cameras.txt").write_text(f"# comment\n7 PINHOLE {W} {H} 20 22 8.5 5.5\n")
        lines = [
            " ".join(map(str, [i, *q, *t, 7, name])) + "\n3.0 4.0 -1\n" for i, q, t, name in images
        ]
        (folder / "images.txt").write_text("# two lines per image\n" + "".join(lines))
    (root / "images").mkdir()
    for _, _, _, name in images:
        iio.imwrite(root / "images" / name, pixels(1)[0])


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_hand_worked_poses(tmp_path, binary):
    hand_model(tmp_path, binary)
    scene = load_colmap(tmp_path)
    # x_c = R x_w + t (OpenCV); R = I, t = (0, 0, 5): centre (0, 0, -5), OpenGL axes [x, -y, -z].
    np.testing.assert_allclose(
        scene.cameras.c2w[0], [[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, -5]], atol=1e-6
    )
    # R = R_y(90) = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], t = (1, 0, 2): C = -R^T t = (2, 0, -1).
    np.testing.assert_allclose(
        scene.cameras.c2w[1], [[0, 0, 1, 2], [0, -1, 0, 0], [1, 0, 0, -1]], atol=1e-6
    )
    np.testing.assert_allclose(
        [scene.cameras.fx[0], scene.cameras.fy[0], scene.cameras.cx[0], scene.cameras.cy[0]],
        [20, 22, 8.5, 5.5],
    )
    # Pixel (8.5 + 20 * 0.1, 5.5 + 22 * 0.2) sees camera 0's OpenCV point (0.1, 0.2, 1) * 3.
    assert ray_miss(scene.cameras[0], 8.5 + 2.0, 5.5 + 4.4, (0.3, 0.6, -5 + 3)) < 1e-5


def test_colmap_points_give_bounds(tmp_path):
    cams = known_cameras(4)
    cube = np.random.default_rng(1).uniform(-0.5, 0.5, (2000, 3))
    writers.write_colmap(tmp_path / "c", cams, pixels(4), binary=True, points=cube)
    scene = load_colmap(tmp_path / "c")
    lo, hi = np.percentile(cube, [0.5, 99.5], axis=0)
    np.testing.assert_allclose(
        scene.bbox, [lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)], rtol=1e-5
    )
    dist = np.linalg.norm(cube[None] - np.asarray(cams.centers)[:, None], axis=-1)
    assert (
        0.85 * dist.min() < scene.near < dist.min() and dist.max() < scene.far < 1.15 * dist.max()
    )


# --------------------------------------------------------------------------- bad input


def _edit_json(rel, fn):
    def edit(root):
        meta = json.loads((root / rel).read_text())
        fn(meta)
        (root / rel).write_text(json.dumps(meta))

    return edit


def _edit_npz(fn):
    def edit(root):
        arrays = dict(np.load(root / "cameras.npz"))
        fn(arrays)
        np.savez(root / "cameras.npz", **arrays)

    return edit


def _edit_poses(fn):
    def edit(root):
        raw = np.load(root / "poses_bounds.npy")
        np.save(root / "poses_bounds.npy", fn(raw))

    return edit


def _set(array, index, value):
    array[index] = value
    return array


def _write(rel, data):
    return lambda root: (root / rel).write_bytes(data if isinstance(data, bytes) else data.encode())


def _image(rel, size):
    return lambda root: iio.imwrite(root / rel, pixels(1, size=size)[0])


def _truncate(rel, keep):
    return lambda root: (root / rel).write_bytes((root / rel).read_bytes()[:keep])


def _llff(root):
    syn.generate_forward_scene(root, "tiny", n_views=3, width=W, height=H, supersample=1)


def _colmap(binary):
    return lambda root: writers.write_colmap(root, known_cameras(3), pixels(3), binary=binary)


BAD_INPUTS = {
    # LLFF
    "llff missing poses": (
        _llff,
        lambda r: (r / "poses_bounds.npy").unlink(),
        load_llff,
        "poses_bounds.npy",
        "missing poses_bounds.npy",
    ),
    "llff malformed": (
        _llff,
        _write("poses_bounds.npy", "not numpy"),
        load_llff,
        "poses_bounds.npy",
        "cannot read file",
    ),
    "llff shape": (
        _llff,
        _edit_poses(lambda raw: raw[:, :16]),
        load_llff,
        "poses_bounds.npy",
        "must be an Nx17 numeric matrix, got shape (3, 16)",
    ),
    "llff non-rigid": (
        _llff,
        _edit_poses(lambda raw: _set(raw, (1, 0), 2.0)),
        load_llff,
        "poses_bounds.npy",
        "image 1: rotation is not rigid",
    ),
    "llff bounds": (
        _llff,
        _edit_poses(lambda raw: _set(raw, (2, 15), 9.0)),
        load_llff,
        "poses_bounds.npy",
        "image 2: bounds must satisfy 0 < near < far",
    ),
    "llff count": (
        _llff,
        lambda r: (r / "images/image_001.png").unlink(),
        load_llff,
        "images",
        "holds 2 images but poses_bounds.npy has 3 poses",
    ),
    "llff size": (
        _llff,
        _image("images/image_001.png", (H, W + 2)),
        load_llff,
        "image_001.png",
        "image is 18x12 but poses_bounds.npy gives 16x12",
    ),
    # DTU
    "dtu missing cameras": (
        dtu_fixture,
        lambda r: (r / "cameras.npz").unlink(),
        load_dtu,
        "cameras.npz",
        "missing cameras.npz",
    ),
    "dtu malformed": (
        dtu_fixture,
        _write("cameras.npz", "garbage"),
        load_dtu,
        "cameras.npz",
        "cannot read file",
    ),
    "dtu missing key": (
        dtu_fixture,
        _edit_npz(lambda a: a.pop("world_mat_2")),
        load_dtu,
        "cameras.npz",
        "missing 'world_mat_2' (for image/000002.png)",
    ),
    "dtu shape": (
        dtu_fixture,
        _edit_npz(lambda a: a.update(world_mat_1=np.eye(2))),
        load_dtu,
        "cameras.npz",
        "'world_mat_1' must be a numeric 3x4 or 4x4",
    ),
    "dtu singular": (
        dtu_fixture,
        _edit_npz(lambda a: a.update(scale_mat_0=np.diag([1.0, 1, 0, 1]))),
        load_dtu,
        "cameras.npz",
        "is not a camera projection",
    ),
    "dtu size": (
        dtu_fixture,
        _image("image/000001.png", (H, 2 * W)),
        load_dtu,
        "000001.png",
        "image is 32x12 but world_mat_1 in cameras.npz has cx=",
    ),
    "dtu masks count": (
        dtu_fixture,
        lambda r: (r / "mask/003.png").unlink(),
        load_dtu,
        "mask",
        "holds 3 masks but image/ holds 4 images",
    ),
    "dtu mask size": (
        dtu_fixture,
        _image("mask/001.png", (H + 1, W)),
        load_dtu,
        "001.png",
        "mask is 16x13 but 000001.png is 16x12",
    ),
    # nerfstudio
    "ns malformed": (
        lambda r: writers.write_nerfstudio(r, known_cameras(3), pixels(3)),
        _write("transforms.json", "{"),
        load_nerfstudio,
        "transforms.json",
        "malformed JSON",
    ),
    "ns fisheye": (
        lambda r: writers.write_nerfstudio(r, known_cameras(3), pixels(3)),
        _edit_json("transforms.json", lambda m: m.update(camera_model="OPENCV_FISHEYE")),
        load_nerfstudio,
        "transforms.json",
        "camera_model 'OPENCV_FISHEYE' is not supported",
    ),
    "ns pose": (
        lambda r: writers.write_nerfstudio(r, known_cameras(3), pixels(3)),
        _edit_json(
            "transforms.json", lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(0, 3.0)
        ),
        load_nerfstudio,
        "transforms.json",
        "frame 1: transform_matrix rotation is not rigid",
    ),
    "ns size": (
        lambda r: writers.write_nerfstudio(r, known_cameras(3, True), pixels(3)),
        _edit_json("transforms.json", lambda m: m.update(w=W + 4)),
        load_nerfstudio,
        "frame_00000.png",
        "image is 16x12 but transforms.json gives w=20, h=12",
    ),
    "ns split": (
        lambda r: writers.write_nerfstudio(r, known_cameras(3), pixels(3), splits={"train": [0]}),
        _edit_json("transforms.json", lambda m: m.update(train_filenames=["images/nope.png"])),
        load_nerfstudio,
        "transforms.json",
        "'train_filenames' lists 'images/nope.png', which no frame has",
    ),
    "ns missing": (
        lambda r: r.mkdir(parents=True),
        lambda r: None,
        load_nerfstudio,
        "transforms.json",
        "missing transforms.json",
    ),
    # COLMAP
    "colmap missing images": (
        _colmap(False),
        lambda r: (r / "sparse/0/images.txt").unlink(),
        load_colmap,
        "images.txt",
        "missing images.txt",
    ),
    "colmap bad line": (
        _colmap(False),
        _write("sparse/0/cameras.txt", "1 PINHOLE 16 twelve 1 2 3 4\n"),
        load_colmap,
        "cameras.txt",
        "line 1: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...'",
    ),
    "colmap params": (
        _colmap(False),
        _write(
            "sparse/0/cameras.txt",
            "1 PINHOLE 16 12 1 2 3\n2 PINHOLE 16 12 1 2 3 4\n3 PINHOLE 16 12 1 2 3 4\n",
        ),
        load_colmap,
        "cameras.txt",
        "line 1: camera model PINHOLE needs 4 parameters, got 3",
    ),
    "colmap model": (
        _colmap(False),
        _write("sparse/0/cameras.txt", "1 OPENCV_FISHEYE 16 12 9 9 8 6 0 0 0 0\n"),
        load_colmap,
        "cameras.txt",
        "camera model OPENCV_FISHEYE is not supported",
    ),
    "colmap quaternion": (
        _colmap(False),
        _write("sparse/0/images.txt", "1 2 0 0 0 0 0 5 1 image_000.png\n\n"),
        load_colmap,
        "images.txt",
        "quaternion (qw, qx, qy, qz) is not unit length (norm 2)",
    ),
    "colmap camera id": (
        _colmap(False),
        _write("sparse/0/images.txt", "1 1 0 0 0 0 0 5 9 image_000.png\n\n"),
        load_colmap,
        "images.txt",
        "uses camera 9, which cameras.txt does not define",
    ),
    "colmap image file": (
        _colmap(True),
        lambda r: (r / "images/image_001.png").unlink(),
        load_colmap,
        "image_001.png",
        "image file not found (listed in images.bin)",
    ),
    "colmap outside": (
        _colmap(False),
        _write("sparse/0/images.txt", "1 1 0 0 0 0 0 5 1 ../../x.png\n\n"),
        load_colmap,
        "images.txt",
        "image name '../../x.png' resolves outside the dataset folder",
    ),
    "colmap size": (
        _colmap(True),
        _image("images/image_002.png", (H - 2, W)),
        load_colmap,
        "image_002.png",
        "image is 16x10 but cameras.bin gives 16x12 for camera 3",
    ),
    "colmap truncated": (
        _colmap(True),
        _truncate("sparse/0/images.bin", 50),
        load_colmap,
        "images.bin",
        "truncated file",
    ),
    "colmap sizes differ": (
        _colmap(False),
        _write(
            "sparse/0/cameras.txt",
            "1 PINHOLE 16 12 9 9 8 6\n2 PINHOLE 18 12 9 9 8 6\n3 PINHOLE 16 12 9 9 8 6\n",
        ),
        load_colmap,
        "cameras.txt",
        "cameras have different image sizes (16x12, 18x12)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_line_error(tmp_path, case):
    build, breaker, load, file_name, phrase = BAD_INPUTS[case]
    root = tmp_path / "scene"
    build(root)
    breaker(root)
    expect_error(load, root, file_name, phrase)


# --------------------------------------------------------------------------- protocols


def fake_scene(n: int, splits=None, object_masks: bool = False, size=(4, 3)) -> SceneData:
    cams = pinhole_cameras(np.tile(np.eye(3, 4), (n, 1, 1)), 4.0, 4.0, 2.0, 1.5, *size)
    return SceneData(
        images=np.zeros((n, size[1], size[0], 3), np.float32),
        masks=None,
        cameras=cams,
        splits={k: np.asarray(v, np.int64) for k, v in (splits or {"train": range(n)}).items()},
        bbox=np.array([[-1.0] * 3, [1.0] * 3], np.float32),
        near=0.1,
        far=2.0,
        background=np.ones(3, np.float32),
        root=Path("scene"),
        names=[f"{i}.png" for i in range(n)],
        object_masks=np.ones((n, size[1], size[0]), np.float32) if object_masks else None,
    )


def test_blender8_protocol():
    scene = fake_scene(300, {"train": range(100), "test": range(100, 300)}, size=(400, 400))
    protocol = get_protocol("blender8")
    assert protocol.scale == 0.5 and not protocol.ndc and not protocol.masked_metrics
    train, test = apply_protocol(protocol, scene)
    assert train.tolist() == [26, 86, 2, 55, 75, 93, 16, 73]
    assert test.tolist() == list(range(100, 300, 8)) and len(test) == 25


def test_llff_protocols_spread_views_like_regnerf():
    scene = fake_scene(20, size=(504, 378))  # the loader's splits are ignored: holdout 8
    pool = [i for i in range(20) if i % 8]  # 17 frames
    for k, positions in (
        (3, [0, 8, 16]),
        (6, [0, 3, 6, 10, 13, 16]),
        (9, [0, 2, 4, 6, 8, 10, 12, 14, 16]),
    ):
        protocol = get_protocol(f"llff{k}")
        assert protocol.ndc and protocol.scale == 1 / 8
        train, test = apply_protocol(protocol, scene)
        assert test.tolist() == [0, 8, 16] and train.tolist() == [pool[p] for p in positions]
    # 34 frames in the pool: linspace gives 16.5 for the middle view, rounded to even (16).
    assert apply_protocol("llff3", fake_scene(39, size=(504, 378)))[0].tolist() == [1, 19, 38]


def test_dtu_protocols():
    scene = fake_scene(49, object_masks=True, size=(400, 300))
    for k in (3, 6, 9):
        train, test = apply_protocol(f"dtu{k}", scene)
        assert train.tolist() == [25, 22, 28, 40, 44, 48, 0, 8, 13][:k] and test.tolist() == list(
            DTU_TEST_IDS
        )
    assert get_protocol("dtu3").masked_metrics and get_protocol("dtu3").scale == 0.25
    with pytest.raises(
        DatasetError, match="protocol dtu3 measures inside object masks, but the scene has none"
    ):
        apply_protocol("dtu3", fake_scene(49, size=(400, 300)))
    with pytest.raises(
        DatasetError, match="protocol dtu3 needs train view 25, but the scene has 20 images"
    ):
        apply_protocol("dtu3", fake_scene(20, object_masks=True))


def test_protocol_lookup_and_size_warning():
    with pytest.raises(ValueError, match="unknown protocol 'llff4'; known: blender8, llff3"):
        get_protocol("llff4")
    with pytest.warns(ProtocolWarning, match="published at 504x378 px but the images are 4x3"):
        apply_protocol("llff3", fake_scene(20))
    with pytest.raises(DatasetError, match="trains on 9 views but the train pool has 7"):
        apply_protocol("llff9", fake_scene(9, size=(504, 378)))
