"""What real tools' files mean: one capture written by pycolmap, as nerfstudio's
``ns-process-data`` lays it out and as instant-ngp's ``colmap2nerf.py`` does, in an
arbitrary world frame, must load as the same scene (poses and boxes), not just parse.

The capture: 12 cameras on two rings around an anisotropic cloud of points (2 x 1 x 0.5),
z up; then a random rotation, translation and scale (`ARBITRARY`) moves everything, as the
world frame of real COLMAP output is arbitrary. The COLMAP model is written by pycolmap
4.2.1 itself (``Reconstruction.write_binary`` / ``write_text``). nerfstudio and
instant-ngp do not install here; their files are built from their documented layouts:

- nerfstudio 1.1.5, ``nerfstudio/process_data/colmap_utils.py``: ``colmap_to_json`` writes
  one camera's ``w, h, fl_x, fl_y, cx, cy, k1, k2, p1, p2, camera_model: OPENCV`` at the top,
  frames ``{"file_path": "images/<name>", "transform_matrix": c2w}`` with ``c2w`` the OpenGL
  pose with its rows reordered by ``applied_transform = [[1,0,0,0],[0,0,1,0],[0,-1,0,0]]``,
  and ``create_ply_from_colmap`` an ASCII ``sparse_pc.ply`` (``float x y z``, ``uint8 red
  green blue``) of the points moved the same way, named by ``ply_file_path``.
- instant-ngp, ``scripts/colmap2nerf.py``: levels and rescales the poses
  (`writers.colmap2nerf_transform`), writes ``camera_angle_x/y``, ``fl_x`` ... ``h``,
  zero distortion, ``is_fisheye``, ``aabb_scale`` (32 by default) and frames with
  ``./images/<name>``, ``sharpness``; instant-ngp (``nerf_loader.cu``) reads ``scale``
  (0.33) and ``offset`` (0.5) and keeps the scene in the unit cube.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pycolmap
import pytest
from scipy.spatial.transform import Rotation

from sparsefield.cameras import look_at
from sparsefield.datasets import DatasetError, load_colmap, load_nerfstudio, writers
from sparsefield.datasets.poses import (
    opencv_to_opengl,
    pinhole_cameras,
    points_box,
    transform_points,
    transform_poses,
    with_box,
)

W, H = 16, 12
NAMES = [f"frame_{k:05d}.png" for k in range(1, 13)]
APPLIED = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0]]
"""nerfstudio's ``applied_transform`` from a COLMAP world (``colmap_to_json``)."""
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def similarity(seed: int = 3, scale: float = 7.5) -> np.ndarray:
    """``[4, 4]`` random rotation, translation and scale: an arbitrary world frame."""
    out = np.eye(4)
    out[:3, :3] = scale * Rotation.random(random_state=seed).as_matrix()
    out[:3, 3] = np.random.default_rng(seed).uniform(-20, 20, 3)
    return out


ARBITRARY = similarity()


def truth():
    """Cameras (OpenGL, z up) on rings at 15 and 45 degrees around the origin, and
    ``[P, 3]`` points filling an anisotropic box there."""
    poses = []
    for ring, elevation in enumerate((15.0, 45.0)):
        for a in np.arange(6) * 60.0 + 30.0 * ring:
            e, a = math.radians(elevation), math.radians(a)
            poses.append(look_at((4 * math.cos(e) * math.cos(a), 4 * math.cos(e) * math.sin(a),
                                  4 * math.sin(e)), (0.0, 0.0, 0.0)))
    points = np.random.default_rng(0).uniform(-1, 1, (4000, 3)) * (1.0, 0.5, 0.25)
    return np.asarray(poses, np.float64)[:, :3], points


def pixels(n: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, H, W, 3), dtype=np.uint8)


def write_pycolmap(root, c2w, points, binary: bool = True):
    """A COLMAP model written by pycolmap: one shared PINHOLE camera, ``NAMES``."""
    rec = pycolmap.Reconstruction()
    camera = pycolmap.Camera(model="PINHOLE", width=W, height=H, params=[20.0, 20.0, 8.0, 6.0],
                             camera_id=1)
    rec.add_camera_with_trivial_rig(camera)
    for k, pose in enumerate(opencv_to_opengl(c2w)):
        rot = pose[:, :3].T
        image = pycolmap.Image(name=NAMES[k], camera_id=1, image_id=k + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(np.c_[rot, -rot @ pose[:, 3]]))
    for p in points:
        rec.add_point3D(p, pycolmap.Track(), np.array([128, 128, 128], np.uint8))
    folder = root / "sparse" / "0"
    folder.mkdir(parents=True)
    (rec.write_binary if binary else rec.write_text)(str(folder))
    for name, image in zip(NAMES, pixels(len(c2w))):
        writers.save_png(root / "images" / name, image)
    return root


def write_ns(root, c2w, points, **extra):
    """nerfstudio's ``colmap_to_json`` layout for the COLMAP model of ``c2w`` and ``points``."""
    applied = np.vstack([APPLIED, [0.0, 0.0, 0.0, 1.0]])
    cams = pinhole_cameras(transform_poses(applied, c2w), 20.0, 20.0, 8.0, 6.0, W, H)
    distortion = {"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0}
    return writers.write_nerfstudio(
        root, cams, pixels(len(c2w)), names=NAMES, distortion=distortion,
        points=transform_points(applied, points), extra={"applied_transform": APPLIED, **extra},
    )


@pytest.fixture(scope="module")
def capture():
    c2w, points = truth()
    return transform_poses(ARBITRARY, c2w), transform_points(ARBITRARY, points)


@pytest.fixture(scope="module")
def colmap_scene(capture, tmp_path_factory):
    return load_colmap(write_pycolmap(tmp_path_factory.mktemp("colmap"), *capture))


def back(scene) -> np.ndarray:
    """The scene's cameras in the capture's own world (through ``scene.transform``)."""
    return transform_poses(np.linalg.inv(scene.transform), np.asarray(scene.cameras.c2w))


@pytest.mark.parametrize("binary", [True, False])
def test_pycolmap_model_in_an_arbitrary_frame_is_levelled(capture, tmp_path, binary):
    """The poses mean the written ones; the scene is levelled (the truth's up is +z, the
    cloud's long axis x), centred, scaled to a mean camera distance of 4 (the truth's), and
    its box is the points' box in the truth's own axes."""
    scene = load_colmap(write_pycolmap(tmp_path, *capture, binary=binary))
    np.testing.assert_allclose(back(scene), capture[0], atol=2e-4)
    to_scene = scene.transform @ ARBITRARY  # truth -> scene: a similarity
    size = np.cbrt(np.linalg.det(to_scene[:3, :3]))
    rot = to_scene[:3, :3] / size
    np.testing.assert_allclose(rot @ (0.0, 0.0, 1.0), (0.0, 0.0, 1.0), atol=1e-6)
    assert abs(abs(rot[0, 0]) - 1.0) < 1e-3
    np.testing.assert_allclose(size, 1.0, rtol=0.01)
    np.testing.assert_allclose(np.linalg.norm(scene.cameras.centers, axis=-1).mean(), 4.0, rtol=1e-5)
    want = np.diff(points_box(truth()[1]), axis=0)[0]
    np.testing.assert_allclose(np.diff(scene.bbox, axis=0)[0], want, rtol=0.02)
    np.testing.assert_allclose(scene.bbox[0], -scene.bbox[1], atol=1e-4)  # centred
    assert 2.4 < scene.near < 2.9 and 5.1 < scene.far < 6.0


def test_a_fitting_frame_is_kept(tmp_path):
    """The truth's own frame (levelled, cameras at 4) keeps every pose as written; the same
    model 10x larger is brought back to the truth's size."""
    c2w, points = truth()
    scene = load_colmap(write_pycolmap(tmp_path / "a", c2w, points))
    np.testing.assert_allclose(scene.transform, np.eye(4))
    np.testing.assert_allclose(scene.cameras.c2w, c2w, atol=1e-6)
    big = np.diag([10.0, 10.0, 10.0, 1.0])
    scene = load_colmap(write_pycolmap(tmp_path / "b", transform_poses(big, c2w),
                                       transform_points(big, points)))
    np.testing.assert_allclose(np.cbrt(np.linalg.det(scene.transform[:3, :3])), 0.1, rtol=0.01)


def test_nerfstudio_file_is_the_same_scene(capture, colmap_scene, tmp_path):
    """``applied_transform`` + ``ply_file_path``: the same levelled poses, box and ray
    range as the COLMAP model, and a transform back to the COLMAP world."""
    scene = load_nerfstudio(write_ns(tmp_path, *capture))
    np.testing.assert_allclose(scene.cameras.c2w, colmap_scene.cameras.c2w, atol=2e-4)
    np.testing.assert_allclose(scene.bbox, colmap_scene.bbox, atol=2e-3)
    np.testing.assert_allclose([scene.near, scene.far], [colmap_scene.near, colmap_scene.far],
                               rtol=1e-3)
    np.testing.assert_allclose(back(scene), capture[0], atol=2e-4)


def test_nerfstudio_without_points_fits_the_cameras(capture, tmp_path):
    """No ``ply_file_path``: nerfstudio's cube around the levelled cameras; with
    ``orientation_override: none`` the file's frame is kept."""
    root = write_ns(tmp_path / "a", *capture)
    meta = json.loads((root / "transforms.json").read_text())
    del meta["ply_file_path"]
    (root / "transforms.json").write_text(json.dumps(meta))
    scene = load_nerfstudio(root)
    centers = np.asarray(scene.cameras.centers)
    half = np.abs(centers - centers.mean(0)).max()
    np.testing.assert_allclose(np.diff(scene.bbox, axis=0)[0], [2 * half] * 3, rtol=1e-5)
    meta["orientation_override"] = "none"
    (root / "transforms.json").write_text(json.dumps(meta))
    kept = load_nerfstudio(root)
    np.testing.assert_allclose(kept.transform[:3], APPLIED, atol=1e-12)


def test_ngp_file_is_its_unit_cube(capture, tmp_path):
    """colmap2nerf's file (``aabb_scale`` 32): poses as written, the box instant-ngp keeps
    the scene in (the unit cube: +-0.5 / 0.33 about the origin), which holds the points;
    the ``aabb_scale`` cube only bounds the background."""
    c2w, points = capture
    cams = pinhole_cameras(c2w, 20.0, 20.0, 8.0, 6.0, W, H)
    scene = load_nerfstudio(writers.write_ngp(tmp_path, cams, pixels(12), names=NAMES))
    to_ngp = writers.colmap2nerf_transform(c2w)
    np.testing.assert_allclose(scene.cameras.c2w, transform_poses(to_ngp, c2w), atol=1e-5)
    np.testing.assert_allclose(scene.bbox, [[-0.5 / 0.33] * 3, [0.5 / 0.33] * 3], rtol=1e-6)
    np.testing.assert_allclose(scene.outer_bbox, [[-16 / 0.33] * 3, [16 / 0.33] * 3], rtol=1e-6)
    moved = transform_points(to_ngp, points)
    assert np.all((moved > scene.bbox[0]) & (moved < scene.bbox[1]))
    # The same capture: camera distances agree with the COLMAP scene's up to one scale.
    dist = np.linalg.norm(np.asarray(scene.cameras.centers)[:, None] - scene.cameras.centers, axis=-1)
    truth_dist = np.linalg.norm(c2w[:, None, :, 3] - c2w[:, :, 3], axis=-1)
    np.testing.assert_allclose(dist / dist.max(), truth_dist / truth_dist.max(), atol=1e-5)


def test_ngp_box_narrows_to_the_converted_models_points(capture, tmp_path):
    """colmap2nerf run where it reads its model (``colmap_text/`` beside the file): the box
    is the box of the model's points inside the unit cube, levelled like the COLMAP model's
    (the truth's box: colmap2nerf put the cameras at 4, as the truth has them). A model
    whose cameras are not the file's is named in one warning and the box stays the cube."""
    c2w, points = capture
    cams = pinhole_cameras(c2w, 20.0, 20.0, 8.0, 6.0, W, H)
    root = writers.write_ngp(tmp_path / "ngp", cams, pixels(12), names=NAMES)
    text = write_pycolmap(tmp_path / "model", c2w, points, binary=False) / "sparse" / "0"
    text.rename(root / "colmap_text")
    scene = load_nerfstudio(root)
    want = np.diff(points_box(truth()[1]), axis=0)[0]
    np.testing.assert_allclose(np.diff(scene.bbox, axis=0)[0], want, rtol=0.02)
    to_scene = scene.transform @ writers.colmap2nerf_transform(c2w)
    inside = np.all(np.abs(transform_points(to_scene, points)) < scene.bbox[1], axis=1)
    assert inside.mean() > 0.99
    other = write_pycolmap(tmp_path / "other", truth()[0][::-1], points, binary=False)
    (root / "colmap_text" / "images.txt").write_text(
        (other / "sparse" / "0" / "images.txt").read_text())
    with pytest.warns(UserWarning, match="colmap_text: its cameras are not the file's"):
        scene = load_nerfstudio(root)
    np.testing.assert_allclose(scene.bbox, [[-0.5 / 0.33] * 3, [0.5 / 0.33] * 3], rtol=1e-6)


def test_ngp_keys(tmp_path):
    """``offset`` as one number, ``aabb`` (ngp fits its longest side to the unit cube) and
    ``aabb_scale`` 1 (no background)."""
    cams = pinhole_cameras(truth()[0], 20.0, 20.0, 8.0, 6.0, W, H)
    writers.write_nerfstudio(tmp_path, cams, pixels(12), extra={"scale": 0.5, "offset": 0.25})
    scene = load_nerfstudio(tmp_path)  # scaled by 0.5 / 0.33 to ngp's default size
    np.testing.assert_allclose(scene.bbox, np.array([[-0.5] * 3, [1.5] * 3]) * 0.5 / 0.33,
                               rtol=1e-6)
    np.testing.assert_allclose(scene.cameras.centers, np.asarray(cams.centers) * 0.5 / 0.33,
                               rtol=1e-5)
    assert scene.outer_bbox is None
    writers.write_nerfstudio(tmp_path, cams, pixels(12), extra={"aabb": [[0, 0, 0], [4, 2, 1]]})
    np.testing.assert_allclose(load_nerfstudio(tmp_path).bbox,
                               np.array([[0, -1, -1.5], [4, 3, 2.5]]) * 0.25 / 0.33, rtol=1e-6)


def test_masks_and_depth(tmp_path):
    """``mask_path`` (0 = ignore) loads as object masks, with one line saying training
    still sees every pixel; ``depth_file_path`` is named as ignored."""
    cams = pinhole_cameras(truth()[0], 20.0, 20.0, 8.0, 6.0, W, H)
    masks = np.ones((12, H, W))
    masks[:, :, :4] = 0.0
    root = writers.write_nerfstudio(tmp_path, cams, pixels(12), masks=masks)
    meta = json.loads((root / "transforms.json").read_text())
    meta["frames"][0]["depth_file_path"] = "depths/frame_00001.png"
    (root / "transforms.json").write_text(json.dumps(meta))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = load_nerfstudio(root, scale=0.5)
    lines = [str(w.message) for w in caught]
    assert any("mask_path" in m and "every pixel" in m for m in lines), lines
    assert any("depth_file_path ignored" in m for m in lines), lines
    assert all("\n" not in m for m in lines)
    assert scene.masks is None and scene.object_masks.shape == (12, H // 2, W // 2)
    np.testing.assert_array_equal(scene.object_masks[:, :, :2], 0.0)
    np.testing.assert_array_equal(scene.object_masks[:, :, 2:], 1.0)


@pytest.mark.parametrize(
    "edit, phrase",
    [
        (lambda m: m.update(applied_transform=[[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]),
         "'applied_transform': rotation is not rigid"),
        (lambda m: m.update(applied_transform=[[1, 0, 0]]), "'applied_transform' must be"),
        (lambda m: m.update(aabb_scale=24), "'aabb_scale' must be a power of two"),
        (lambda m: m.update(is_fisheye=True), "'is_fisheye' is set"),
        (lambda m: m.update(ply_file_path="none.ply"), "none.ply: does not exist"),
        (lambda m: m["frames"][1].pop("mask_path"), "frame 1 has no 'mask_path'"),
    ],
)
def test_bad_keys_give_one_line(tmp_path, edit, phrase):
    cams = pinhole_cameras(truth()[0], 20.0, 20.0, 8.0, 6.0, W, H)
    root = writers.write_nerfstudio(tmp_path, cams, pixels(12), masks=np.ones((12, H, W)))
    meta = json.loads((root / "transforms.json").read_text())
    edit(meta)
    (root / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_nerfstudio(root)
    assert phrase in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_write_colmap_shares_cameras_and_keeps_names(tmp_path):
    """pycolmap reads one camera for twelve images of one pinhole, and the given names."""
    cams = pinhole_cameras(truth()[0], 20.0, 20.0, 8.0, 6.0, W, H)
    writers.write_colmap(tmp_path, cams, pixels(12), binary=True, names=NAMES)
    rec = pycolmap.Reconstruction(str(tmp_path / "sparse" / "0"))
    assert rec.num_cameras() == 1
    assert sorted(im.name for im in rec.images.values()) == NAMES
    assert load_colmap(tmp_path).names == [f"images/{n}" for n in NAMES]


def test_with_box_overrides_the_loaders_box(colmap_scene):
    """What ``train --bbox`` calls: the box replaced, near / far cover it from every camera."""
    scene = with_box(colmap_scene, (-1, -1, -0.5, 1, 1, 0.5))
    np.testing.assert_allclose(scene.bbox, [[-1, -1, -0.5], [1, 1, 0.5]])
    centers = np.asarray(scene.cameras.centers, np.float64)
    corners = np.array(np.meshgrid(*zip(*scene.bbox), indexing="ij")).reshape(3, -1).T
    assert scene.far >= np.linalg.norm(centers[:, None] - corners, axis=-1).max() - 1e-5
    assert 0 < scene.near < np.linalg.norm(centers, axis=-1).min()
    for bad, phrase in (((1, 2, 3), "needs 6 numbers"), ((0, 0, 0, 1, -1, 1), "below its max"),
                        ((0, 0, 0, 1, 1, float("nan")), "non-finite")):
        with pytest.raises(DatasetError, match=phrase):
            with_box(colmap_scene, bad)


def test_points_box_drops_the_stray_points_of_an_sfm_model():
    """2% of the points far from the scene (wrong matches) leave the box as it was."""
    rng = np.random.default_rng(0)
    scene = rng.uniform(-1.0, 1.0, (980, 3))
    strays = rng.normal(size=(20, 3)) * 8.0 + 6.0
    clean = points_box(scene)
    np.testing.assert_allclose(points_box(np.concatenate([scene, strays])), clean, atol=0.05)
    np.testing.assert_allclose(clean, [[-1.1] * 3, [1.1] * 3], atol=0.05)  # the 5% pad
