"""Nothing a user gives breaks a loader: one row per bad input, across the five formats.

Each row copies a tiny valid dataset (built once per module with the generator or the
writers), applies one damage and loads it with `load_scene`. A bad row must raise a
`DatasetError` whose message is one line naming the file (or key) and the problem; a good
row must load with the right values. Either way the files are unchanged (a listing of
sizes, modes and mtimes before and after), outside files included.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from sparsefield.cameras import look_at
from sparsefield.datasets import DatasetError, load_scene, writers
from sparsefield.datasets.poses import pinhole_cameras
from sparsefield.datasets.synthetic import generate_forward_scene, generate_scene

W, H = 16, 12
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def cameras(n: int):
    """``n`` OpenGL cameras on a ring around the origin, one shared pinhole."""
    poses = [look_at((3 * math.cos(a), 3 * math.sin(a), 0.5), (0, 0, 0)) for a in range(n)]
    return pinhole_cameras(poses, 20.0, 20.0, W / 2, H / 2, W, H)


def pixels(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """One valid dataset per format: Blender 8x8 (3 train, 1 val, 1 test, RGBA), the
    others 16x12 RGB with 3 (LLFF) or 4 views; COLMAP with sparse points."""
    top = tmp_path_factory.mktemp("bases")
    points = np.random.default_rng(1).uniform(-0.5, 0.5, (50, 3))
    generate_scene(top / "blender", "tiny", resolution=8, n_train=3, n_val=1, n_test=1,
                   supersample=1)
    generate_forward_scene(top / "llff", "tiny", n_views=3, width=W, height=H, supersample=1)
    writers.write_nerfstudio(top / "ns", cameras(4), pixels(4))
    masks = pixels(4)[..., 0] > 128
    writers.write_dtu(top / "dtu", cameras(4), pixels(4), masks=masks)
    writers.write_colmap(top / "txt", cameras(4), pixels(4), points=points, share_cameras=False)
    writers.write_colmap(top / "bin", cameras(4), pixels(4), binary=True, points=points, share_cameras=False)
    return {p.name: p for p in top.iterdir()}


def listing(folder: Path) -> dict:
    """Every entry under ``folder`` (links not followed) -> (size, mode, mtime)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        out[path.relative_to(folder).as_posix()] = (st.st_size, st.st_mode, st.st_mtime_ns)
    return out


# --------------------------------------------------------------------------- damages


def edit_json(rel: str, fn, literals: dict | None = None):
    """Edit a JSON file with ``fn(meta)``; string values in ``literals`` are then written
    as raw JSON text (``"INF" -> 1e999``, which Python's json reads as inf)."""

    def damage(root):
        meta = json.loads((root / rel).read_text())
        fn(meta)
        text = json.dumps(meta)
        for key, literal in (literals or {}).items():
            text = text.replace(json.dumps(key), literal)
        (root / rel).write_text(text)

    return damage


def set_key(rel: str, key: str, value, literals=None):
    return edit_json(rel, lambda m: m.__setitem__(key, value), literals)


def set_frame(rel: str, k: int, key: str, value, literals=None):
    return edit_json(rel, lambda m: m["frames"][k].__setitem__(key, value), literals)


def write(rel: str, data):
    data = data if isinstance(data, bytes) else data.encode()
    return lambda root: (root / rel).write_bytes(data)


def truncate(rel: str, keep: int):
    return lambda root: (root / rel).write_bytes((root / rel).read_bytes()[:keep])


def link_outside(rel: str):
    """Move ``rel`` out of the dataset folder and leave a symlink to it in its place."""

    def damage(root):
        outside = root.parent / "outside"
        outside.mkdir(exist_ok=True)
        target = outside / (root / rel).name
        shutil.move(root / rel, target)
        (root / rel).symlink_to(target, target_is_directory=target.is_dir())

    return damage


def link_inside(rel: str, store: str):
    """Move ``rel`` to ``store`` inside the folder and leave a relative symlink to it."""

    def damage(root):
        (root / store).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / rel, root / store)
        (root / rel).symlink_to(os.path.relpath(root / store, (root / rel).parent))

    return damage


def edit_npy(fn):
    def damage(root):
        raw = np.load(root / "poses_bounds.npy")
        np.save(root / "poses_bounds.npy", fn(raw), allow_pickle=True)

    return damage


def set_entry(index, value):
    """``poses_bounds`` edit: ``raw[index] = value`` (17 columns: 3x5 [R | t | hwf], near, far)."""

    def fn(raw):
        raw[index] = value
        return raw

    return edit_npy(fn)


def edit_npz(fn):
    def damage(root):
        arrays = dict(np.load(root / "cameras.npz"))
        fn(arrays)
        np.savez(root / "cameras.npz", **arrays)

    return damage


def edit_lines(rel: str, fn):
    """Edit a COLMAP text file with ``fn(data lines) -> lines`` (comments dropped)."""

    def damage(root):
        lines = [x for x in (root / rel).read_text().split("\n") if not x.startswith("#")]
        (root / rel).write_text("\n".join(fn(lines)))

    return damage


def replace_field(line_no: int, field: int, value: str):
    """COLMAP text edit: field ``field`` of data line ``line_no`` set to ``value``."""

    def fn(lines):
        fields = lines[line_no].split(" ")
        fields[field] = value
        lines[line_no] = " ".join(fields)
        return lines

    return fn


def patch_bytes(rel: str, offset: int, data: bytes):
    def damage(root):
        raw = bytearray((root / rel).read_bytes())
        raw[offset : offset + len(data)] = data
        (root / rel).write_bytes(bytes(raw))

    return damage


def remove(*rels: str):
    return lambda root: [(root / rel).unlink() for rel in rels]


def save_image(rel: str, array, mode=None, fmt=None, **kwargs):
    """Replace ``rel`` with ``array`` as a ``mode`` image (converted from the array's own)."""

    def damage(root):
        (root / rel).unlink()
        image = Image.fromarray(np.asarray(array))
        (image.convert(mode) if mode else image).save(root / rel, format=fmt, **kwargs)

    return damage


def png_bytes(array: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """A 16-bit PNG of ``[H, W, C]`` uint16 (Pillow cannot write 16-bit colour); ``size``
    ``(W, H)`` overrides the size in the header."""
    h, w, c = array.shape
    w, h = size or (w, h)
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(raw)), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks
    )


def png16(rel: str, array: np.ndarray):
    return write(rel, png_bytes(array))


def animated(rel: str):
    def damage(root):
        frames = [Image.new("RGB", (W, H), c) for c in ("red", "blue")]
        frames[0].save(root / rel, format="PNG", save_all=True, append_images=frames[1:])

    return damage


def fifo(rel: str):
    return lambda root: ((root / rel).unlink(), os.mkfifo(root / rel))


def chain(*damages):
    return lambda root: [d(root) for d in damages]


def llff_one_pixel(root):
    """Every LLFF image 1x1 and poses_bounds saying so."""
    for path in (root / "images").iterdir():
        Image.new("RGB", (1, 1), "red").save(path)
    set_entry((slice(None), [4, 9]), 1.0)(root)


NESTED = "[" * 100_000 + "]" * 100_000
DEEP_MATRIX = json.loads("[" * 200 + "]" * 200)
GRAY16 = np.random.default_rng(2).integers(0, 65536, (8, 8, 1), dtype=np.uint16)
RGB16 = np.random.default_rng(3).integers(0, 65536, (H, W, 3), dtype=np.uint16)
LA8 = np.random.default_rng(4).integers(0, 256, (8, 8, 2), dtype=np.uint8)
NAN_TIFF = np.full((H, W), np.nan, np.float32)


def five_channels(rel: str):
    def damage(root):
        tifffile = pytest.importorskip("tifffile")
        tifffile.imwrite(root / rel, np.zeros((H, W, 5), np.uint8), photometric="minisblack",
                         planarconfig="contig")

    return damage


# --------------------------------------------------------------------------- bad rows


class Bad(NamedTuple):
    base: str
    damage: object
    names: str  # the file (or key) the message must name
    phrase: str  # what it must say about the problem
    scale: object = 1.0


TJ, NS, PB, CN = "transforms_train.json", "transforms.json", "poses_bounds.npy", "cameras.npz"
INF = {"INF": "1e999", "NAN": "NaN"}
CAMS_TXT, IMS_TXT, PTS_TXT = "sparse/0/cameras.txt", "sparse/0/images.txt", "sparse/0/points3D.txt"
IMS_BIN = "sparse/0/images.bin"
OUTSIDE = "resolves outside the dataset folder"
SCALE = "scale must be a number in (0, 1], got"

BAD = {
    # Blender: files and paths
    "b-json-link-out": Bad("blender", link_outside(TJ), TJ, OUTSIDE),
    "b-val-json-link-out": Bad("blender", link_outside("transforms_val.json"), "val.json", OUTSIDE),
    "b-image-link-out": Bad("blender", link_outside("train/r_1.png"), TJ, f"frame 1: file_path './train/r_1' {OUTSIDE}"),
    "b-folder-link-out": Bad("blender", link_outside("test"), "transforms_test.json", OUTSIDE),
    "b-dotdot": Bad("blender", set_frame(TJ, 0, "file_path", "../outside/x.png"), TJ, OUTSIDE),
    "b-absolute": Bad("blender", set_frame(TJ, 0, "file_path", "/etc/hostname"), TJ, OUTSIDE),
    "b-nul-path": Bad("blender", set_frame(TJ, 1, "file_path", "./train/r_1\x00.png"), TJ, "frame 1: 'file_path' './train/r_1\\x00.png' contains a NUL byte"),
    "b-surrogate-path": Bad("blender", set_frame(TJ, 1, "file_path", "\ud800.png"), TJ, "is not valid text for a file name"),
    "b-newline-path": Bad("blender", set_frame(TJ, 1, "file_path", "./train/r\n_1"), "train/r\\n_1", "image file not found (frame 1 of transforms_train.json"),
    "b-number-path": Bad("blender", set_frame(TJ, 1, "file_path", 7), TJ, "'file_path' must be a non-empty string, got 7"),
    "b-symlink-loop": Bad("blender", chain(set_frame(TJ, 1, "file_path", "loop.png"), lambda r: (r / "loop.png").symlink_to("loop.png")), "loop.png", "cannot resolve the path"),
    "b-duplicate": Bad("blender", set_frame(TJ, 2, "file_path", "train/r_0.png"), TJ, "frame 2: file_path 'train/r_0.png' is frame 0's image"),
    "b-empty-train": Bad("blender", set_key(TJ, "frames", []), TJ, "the train split is empty (1 val, 1 test)"),
    # Blender: JSON structure
    "b-nested-json": Bad("blender", write(TJ, NESTED), TJ, "malformed JSON: nested too deeply"),
    "b-huge-int": Bad("blender", write(TJ, '{"frames": [], "near": ' + "9" * 5000 + "}"), TJ, "malformed JSON (ValueError: Exceeds the limit"),
    "b-not-utf8": Bad("blender", write(TJ, b'{"frames": "\xff"}'), TJ, "not UTF-8 text"),
    "b-top-list": Bad("blender", write(TJ, "[1, 2]"), TJ, "expected a JSON object at the top level, got a list"),
    "b-top-string": Bad("blender", write(TJ, '"frames"'), TJ, "got a string"),
    "b-frames-dict": Bad("blender", set_key(TJ, "frames", {}), TJ, "'frames' must be a list"),
    "b-frame-null": Bad("blender", set_key(TJ, "frames", [None]), TJ, "frame 0 is not a JSON object"),
    # Blender: numbers
    "b-bbox-inf": Bad("blender", set_key(TJ, "bbox", [["-INF"] * 3, ["INF"] * 3], {"-INF": "-1e999", **INF}), TJ, "'bbox' has a non-finite value (-inf)"),
    "b-bbox-nan": Bad("blender", set_key(TJ, "bbox", [[0, 0, "NAN"], [1, 1, 1]], INF), TJ, "'bbox' has a non-finite value (nan)"),
    "b-bbox-shape": Bad("blender", set_key(TJ, "bbox", [[0, 0, 0]]), TJ, "'bbox' must be a 2x3 numeric matrix, got shape (1, 3)"),
    "b-near-string": Bad("blender", set_key(TJ, "near", "2"), TJ, "'near' must be a number, got '2'"),
    "b-near-bool": Bad("blender", set_key(TJ, "near", True), TJ, "'near' must be a number, got True"),
    "b-far-inf": Bad("blender", set_key(TJ, "far", "INF", INF), TJ, "'far' has a non-finite value (inf)"),
    "b-pose-nan": Bad("blender", edit_json(TJ, lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(3, "NAN"), INF), TJ, "frame 1: transform_matrix has a non-finite value (nan)"),
    "b-pose-bool": Bad("blender", edit_json(TJ, lambda m: m["frames"][1]["transform_matrix"][3].__setitem__(3, True)), TJ, "frame 1: transform_matrix must be a 4x4 numeric matrix"),
    "b-pose-deep": Bad("blender", set_frame(TJ, 1, "transform_matrix", DEEP_MATRIX), TJ, "frame 1: transform_matrix must be a 4x4 numeric matrix"),
    "b-pose-huge": Bad("blender", edit_json(TJ, lambda m: m["frames"][0]["transform_matrix"][0].__setitem__(3, 1e300)), TJ, "camera 0 (train/r_0.png): pose or intrinsics are not finite"),
    "b-fov-inf": Bad("blender", set_key(TJ, "camera_angle_x", "INF", INF), TJ, "'camera_angle_x' has a non-finite value (inf)"),
    "b-fov-list": Bad("blender", set_key(TJ, "camera_angle_x", [0.7]), TJ, "'camera_angle_x' must be a number, got [0.7]"),
    "b-fl-nan": Bad("blender", set_frame(TJ, 0, "fl_x", "NAN", INF), TJ, "frame 0: 'fl_x' has a non-finite value (nan)"),
    "b-w-fraction": Bad("blender", set_key(TJ, "w", 8.5), TJ, "'w' must be a whole number of pixels, got 8.5"),
    "b-bigint": Bad("blender", write(TJ, '{"frames": [], "camera_angle_x": 1' + "0" * 400 + "}"), TJ, "'camera_angle_x' must be a number"),
    # Blender: images and scale
    "b-png-truncated": Bad("blender", truncate("train/r_1.png", 60), "r_1.png", "cannot read image"),
    "b-png-text": Bad("blender", write("train/r_1.png", "not a png"), "r_1.png", "cannot read image"),
    "b-png-5-channels": Bad("blender", five_channels("train/r_1.png"), "r_1.png", "cannot read image"),
    "b-png-animated": Bad("blender", animated("train/r_1.png"), "r_1.png", "image is animated (2 frames)"),
    "b-png-bomb": Bad("blender", write("train/r_1.png", png_bytes(GRAY16, (100_000, 100_000))), "r_1.png", "cannot read image (DecompressionBombError"),
    "b-png-fifo": Bad("blender", fifo("train/r_1.png"), "train/r_1", "image file not found (frame 1"),
    "b-scale-tiny": Bad("blender", lambda r: None, "r_0.png", "image is 8x8, which scale 0.05 reduces to 0x0 pixels", 0.05),
    "b-scale-0": Bad("blender", lambda r: None, "scene", SCALE + " 0", 0),
    "b-scale-negative": Bad("blender", lambda r: None, "scene", SCALE + " -0.5", -0.5),
    "b-scale-nan": Bad("blender", lambda r: None, "scene", SCALE + " nan", math.nan),
    "b-scale-above-1": Bad("blender", lambda r: None, "scene", SCALE + " 2", 2),
    "b-scale-string": Bad("blender", lambda r: None, "scene", SCALE + " '0.5'", "0.5"),
    # nerfstudio
    "ns-json-link-out": Bad("ns", link_outside(NS), NS, OUTSIDE),
    "ns-image-link-out": Bad("ns", link_outside("images/frame_00002.png"), NS, f"frame 2: file_path 'images/frame_00002.png' {OUTSIDE}"),
    "ns-images-folder-link-out": Bad("ns", link_outside("images"), NS, OUTSIDE),
    "ns-aabb-inf": Bad("ns", set_key(NS, "aabb_scale", "INF", INF), NS, "'aabb_scale' has a non-finite value (inf)"),
    "ns-aabb-string": Bad("ns", set_key(NS, "aabb_scale", "16"), NS, "'aabb_scale' must be a number, got '16'"),
    "ns-offset-short": Bad("ns", edit_json(NS, lambda m: m.update(aabb_scale=4, offset=[0.5, 0.5])), NS, "'offset' must be a list of 3 numbers, got shape (2,)"),
    "ns-fl-nan": Bad("ns", set_key(NS, "fl_x", "NAN", INF), NS, "'fl_x' has a non-finite value (nan)"),
    "ns-cx-string": Bad("ns", set_frame(NS, 3, "cx", "8"), NS, "frame 3: 'cx' must be a number, got '8'"),
    "ns-frames-int": Bad("ns", set_key(NS, "frames", 5), NS, "'frames' must be a list, got 5"),
    "ns-model-list": Bad("ns", set_key(NS, "camera_model", ["OPENCV"]), NS, "camera_model ['OPENCV'] is not supported"),
    "ns-empty-train": Bad("ns", edit_json(NS, lambda m: m.update(train_filenames=[], test_filenames=["images/frame_00000.png"])), NS, "the train split is empty (1 test)"),
    "ns-split-twice": Bad("ns", set_key(NS, "train_filenames", ["images/frame_00001.png"] * 2), NS, "'train_filenames' lists 'images/frame_00001.png' twice"),
    "ns-duplicate-frame": Bad("ns", set_frame(NS, 3, "file_path", "./images/frame_00001.png"), NS, "frame 3: file_path './images/frame_00001.png' is frame 1's image"),
    "ns-nested-json": Bad("ns", write(NS, NESTED), NS, "malformed JSON: nested too deeply"),
    "ns-top-list": Bad("ns", write(NS, "[]"), NS, "expected a JSON object at the top level"),
    "ns-png-rgb16-truncated": Bad("ns", chain(png16("images/frame_00001.png", RGB16), truncate("images/frame_00001.png", 80)), "frame_00001.png", "cannot read image"),
    # LLFF
    "llff-npy-link-out": Bad("llff", link_outside(PB), PB, OUTSIDE),
    "llff-image-link-out": Bad("llff", link_outside("images/image_001.png"), "image_001.png", OUTSIDE),
    "llff-folder-link-out": Bad("llff", link_outside("images"), "image_000.png", OUTSIDE),
    "llff-broken-link": Bad("llff", chain(remove("images/image_002.png"), lambda r: (r / "images/image_002.png").symlink_to("gone.png")), "image_002.png", "does not exist (broken symlink)"),
    "llff-image-fifo": Bad("llff", fifo("images/image_001.png"), "image_001.png", "is not a regular file"),
    "llff-complex": Bad("llff", edit_npy(lambda raw: raw.astype(np.complex128)), PB, "must be an Nx17 numeric matrix, got a complex128 array of shape (3, 17)"),
    "llff-object": Bad("llff", edit_npy(lambda raw: raw.astype(object)), PB, "cannot read file (ValueError: Object arrays cannot be loaded"),
    "llff-bool": Bad("llff", edit_npy(lambda raw: raw > 0), PB, "got a bool array of shape (3, 17)"),
    "llff-flat": Bad("llff", edit_npy(lambda raw: raw.ravel()), PB, "got shape (51,)"),
    "llff-no-rows": Bad("llff", edit_npy(lambda raw: raw[:0]), PB, "holds no images (0 rows)"),
    "llff-npz": Bad("llff", lambda r: np.savez(r / "x.npz", a=np.zeros(3)) or os.replace(r / "x.npz", r / PB), PB, "got an .npz archive"),
    "llff-pose-nan": Bad("llff", set_entry((1, 3), np.nan), PB, "image 1: pose [R | t] has a non-finite value (nan)"),
    "llff-focal-inf": Bad("llff", set_entry((2, 14), np.inf), PB, "image 2: height, width, focal has a non-finite value (inf)"),
    "llff-near-nan": Bad("llff", set_entry((0, 15), np.nan), PB, "image 0: near/far bounds has a non-finite value (nan)"),
    "llff-near-tiny": Bad("llff", set_entry((slice(None), 15), 1e-320), PB, "pose after the bd_factor rescale and recentring"),
    "llff-one-image": Bad("llff", chain(remove("images/image_001.png", "images/image_002.png"), edit_npy(lambda raw: raw[:1])), PB, "the train split is empty (1 test)"),
    "llff-1x1-quarter": Bad("llff", llff_one_pixel, "image_000.png", "image is 1x1, which scale 0.25 reduces to 0x0 pixels (less than 1x1)", 0.25),
    "llff-nan-pixels": Bad("llff", save_image("images/image_001.png", NAN_TIFF, fmt="TIFF"), "image_001.png", "image has non-finite pixel values"),
    # DTU
    "dtu-npz-link-out": Bad("dtu", link_outside(CN), CN, OUTSIDE),
    "dtu-image-link-out": Bad("dtu", link_outside("image/000001.png"), "000001.png", OUTSIDE),
    "dtu-mask-link-out": Bad("dtu", link_outside("mask/002.png"), "002.png", OUTSIDE),
    "dtu-world-nan": Bad("dtu", edit_npz(lambda a: a["world_mat_1"].__setitem__((0, 0), np.nan)), CN, "'world_mat_1' has a non-finite value (nan)"),
    "dtu-scale-inf": Bad("dtu", edit_npz(lambda a: a["scale_mat_2"].__setitem__((0, 3), -np.inf)), CN, "'scale_mat_2' has a non-finite value (-inf)"),
    "dtu-complex": Bad("dtu", edit_npz(lambda a: a.update(world_mat_0=a["world_mat_0"] + 0j)), CN, "'world_mat_0' must be numeric, got a complex128 array of shape (4, 4)"),
    "dtu-bool": Bad("dtu", edit_npz(lambda a: a.update(scale_mat_3=np.eye(4, dtype=bool))), CN, "'scale_mat_3' must be numeric, got a bool array"),
    "dtu-object": Bad("dtu", edit_npz(lambda a: a.update(world_mat_0=np.array([1, "x"], dtype=object))), CN, "cannot read file"),
    "dtu-overflow": Bad("dtu", edit_npz(lambda a: a.update(world_mat_0=a["world_mat_0"] * 1e200, scale_mat_0=np.eye(4) * 1e200)), CN, "'world_mat_0' @ 'scale_mat_0' has a non-finite value"),
    "dtu-one-image": Bad("dtu", remove(*(f"image/{k:06d}.png" for k in (1, 2, 3)), *(f"mask/{k:03d}.png" for k in (1, 2, 3))), "image", "the train split is empty (1 test)"),
    "dtu-mask-truncated": Bad("dtu", truncate("mask/001.png", 40), "001.png", "cannot read image"),
    # COLMAP
    "colmap-cameras-link-out": Bad("txt", link_outside(CAMS_TXT), "cameras.txt", OUTSIDE),
    "colmap-images-link-out": Bad("bin", link_outside(IMS_BIN), "images.bin", OUTSIDE),
    "colmap-points-link-out": Bad("txt", link_outside(PTS_TXT), "points3D.txt", OUTSIDE),
    "colmap-image-link-out": Bad("bin", link_outside("images/image_001.png"), "images.bin", f"image name 'image_001.png' {OUTSIDE}"),
    "colmap-points-nan": Bad("txt", edit_lines(PTS_TXT, replace_field(3, 2, "nan")), "points3D.txt", "line 4: point X Y Z has a non-finite value (nan)"),
    "colmap-points-inf-bin": Bad("bin", patch_bytes("sparse/0/points3D.bin", 16, struct.pack("<d", math.inf)), "points3D.bin", "point 0: point X Y Z has a non-finite value (inf)"),
    "colmap-focal-nan": Bad("txt", edit_lines(CAMS_TXT, replace_field(1, 4, "nan")), "cameras.txt", "line 2: camera parameters has a non-finite value (nan)"),
    "colmap-qvec-nan": Bad("txt", edit_lines(IMS_TXT, replace_field(2, 1, "nan")), "images.txt", "image 'image_001.png': quaternion (qw, qx, qy, qz) has a non-finite value (nan)"),
    "colmap-tvec-inf-bin": Bad("bin", patch_bytes(IMS_BIN, 44, struct.pack("<d", -math.inf)), "images.bin", "image 'image_000.png': translation (tx, ty, tz) has a non-finite value (-inf)"),
    "colmap-nul-name": Bad("txt", edit_lines(IMS_TXT, replace_field(0, 9, "image_000\x00.png")), "images.txt", "contains a NUL byte"),
    "colmap-duplicate-name": Bad("txt", edit_lines(IMS_TXT, replace_field(2, 9, "image_000.png")), "images.txt", "image 'image_000.png' is listed twice (image ids 1 and 2)"),
    "colmap-duplicate-camera": Bad("txt", edit_lines(CAMS_TXT, replace_field(1, 0, "1")), "cameras.txt", "line 2: camera id 1 is defined twice"),
    "colmap-no-points2d-lines": Bad("txt", edit_lines(IMS_TXT, lambda lines: [x for x in lines if x]), "images.txt", "line 2: expected the POINTS2D line of image 1"),
    "colmap-one-image": Bad("txt", edit_lines(IMS_TXT, lambda lines: lines[:2]), "images.txt", "the train split is empty (1 test)"),
    "colmap-huge-translation": Bad("txt", edit_lines(IMS_TXT, replace_field(2, 5, "1e300")), "images.txt", "camera 1 (images/image_001.png): pose or intrinsics are not finite"),
    "colmap-cameras-fifo": Bad("txt", fifo(CAMS_TXT), "sparse/0", "no known dataset format found"),
}


def run_load(root: Path, scale):
    """``load_scene(root, scale)``, asserting it leaves every file under ``root.parent`` as
    it was."""
    before = listing(root.parent)
    try:
        return load_scene(root, scale=scale)
    finally:
        assert listing(root.parent) == before


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_line(bases, tmp_path, case):
    base, damage, names, phrase, scale = BAD[case]
    root = tmp_path / "scene"
    shutil.copytree(bases[base], root, symlinks=True)
    damage(root)
    with pytest.raises(DatasetError) as info:
        run_load(root, scale)
    message = str(info.value)
    assert message.isprintable(), message  # one line: no newline, NUL or other control
    assert names in message and phrase in message, message


# --------------------------------------------------------------------------- good rows


def alias(root: Path) -> Path:
    """A symlink to the whole dataset folder, from outside it: the path to load."""
    (root.parent / "alias").symlink_to(root, target_is_directory=True)
    return root.parent / "alias"


def same_as_base(bases, base):
    """Check: the scene equals the unchanged base dataset's scene."""

    def check(scene):
        want = load_scene(bases[base])
        np.testing.assert_array_equal(scene.images, want.images)
        np.testing.assert_array_equal(scene.cameras.c2w, want.cameras.c2w)

    return check


def image_is(index: int, want, mask=None):
    """Check: image ``index`` (and its alpha mask) match ``want`` ``[H, W, 3]``."""

    def check(scene):
        np.testing.assert_allclose(scene.images[index], want, atol=1e-6)
        if mask is not None:
            np.testing.assert_allclose(scene.masks[index], mask, atol=1e-6)

    return check


def colmap_box_not_flat(scene):
    lo, hi = scene.bbox
    assert np.all(hi - lo > 0) and np.isfinite(scene.near) and scene.near < scene.far


def one_bit_mask(scene):
    np.testing.assert_array_equal(scene.object_masks[1], np.eye(H, W, dtype=np.float32))


def cmyk_red(scene):
    assert scene.masks is None  # the K channel is no alpha
    np.testing.assert_allclose(scene.images[1], np.broadcast_to([1.0, 0, 0], (H, W, 3)), atol=0.02)


def flat_points(root):
    writers.write_colmap(root, cameras(4), pixels(4), points=np.c_[np.random.rand(50, 2), np.zeros(50)])


GRAY = GRAY16[..., 0] / 65535.0
LA = LA8 / 255.0
GOOD = {
    # (base, change(root) -> None or the path to load, check(scene) or "same" as the base)
    "b-image-link-inside": ("blender", link_inside("train/r_1.png", "assets/r_1.png"), "same"),
    "b-json-link-inside": ("blender", link_inside(TJ, "meta/train.json"), "same"),
    "b-root-is-link": ("blender", alias, "same"),
    "ns-json-link-inside": ("ns", link_inside(NS, "meta/transforms.json"), "same"),
    "ns-bom": ("ns", lambda r: (r / NS).write_bytes(b"\xef\xbb\xbf" + (r / NS).read_bytes()), "same"),
    "llff-folder-link-inside": ("llff", link_inside("images", "raw/images"), "same"),
    "llff-hidden-file": ("llff", write("images/._image_000.png", b"\x00\x05\x16\x07 resource fork"), "same"),
    "dtu-npz-link-inside": ("dtu", link_inside(CN, "calib/cameras.npz"), "same"),
    "colmap-model-link-inside": ("txt", link_inside(CAMS_TXT, "models/cameras.txt"), "same"),
    "colmap-bom": ("txt", lambda r: (r / IMS_TXT).write_bytes(b"\xef\xbb\xbf" + (r / IMS_TXT).read_bytes()), "same"),
    "b-png-gray16": ("blender", png16("train/r_1.png", GRAY16), image_is(1, np.stack([GRAY] * 3, -1), np.ones((8, 8)))),
    "b-png-gray-alpha": ("blender", save_image("train/r_2.png", LA8), image_is(2, np.stack([LA[..., 0] * LA[..., 1] + 1 - LA[..., 1]] * 3, -1), LA[..., 1])),
    "ns-png-rgb16": ("ns", png16("images/frame_00001.png", RGB16), image_is(1, RGB16 / 65535.0)),
    "llff-png-gray8": ("llff", save_image("images/image_002.png", np.full((H, W), 51, np.uint8)), image_is(2, np.full((H, W, 3), 0.2))),
    "llff-cmyk-jpeg": ("llff", save_image("images/image_001.png", np.full((H, W, 3), (255, 0, 0), np.uint8), "CMYK", "JPEG", quality=100), cmyk_red),
    "dtu-palette-png": ("dtu", save_image("image/000002.png", np.full((H, W, 3), (255, 0, 0), np.uint8), "P"), image_is(2, np.broadcast_to([1.0, 0, 0], (H, W, 3)))),
    "dtu-one-bit-mask": ("dtu", lambda r: Image.fromarray(np.eye(H, W, dtype=bool)).save(r / "mask/001.png"), one_bit_mask),
    "colmap-flat-points": ("txt", flat_points, colmap_box_not_flat),
}


@pytest.mark.parametrize("case", list(GOOD))
def test_good_input_loads(bases, tmp_path, case):
    base, change, check = GOOD[case]
    root = tmp_path / "scene"
    shutil.copytree(bases[base], root, symlinks=True)
    target = change(root)  # alias() returns the path to load instead
    scene = run_load(target if isinstance(target, Path) else root, 1.0)
    (same_as_base(bases, base) if check == "same" else check)(scene)
