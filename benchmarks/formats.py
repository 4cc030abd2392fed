"""One capture, three tools' files, in an arbitrary world frame: does each load as the
same scene? Writes the same photos and cameras as a COLMAP model (pycolmap's own writer),
a nerfstudio ``transforms.json`` (``ns-process-data``'s layout: ``applied_transform``,
``sparse_pc.ply``) and an instant-ngp ``transforms.json`` (``colmap2nerf.py``'s layout,
``aabb_scale`` 32, beside the ``colmap_text/`` model it converts), trains each with the
same short run, and prints test PSNR / SSIM / LPIPS with the box each loader chose;
``--doc`` writes the table to ``docs/formats.md``.

    python benchmarks/formats.py --doc                 # 200 px, 300 steps, 8 views
    python benchmarks/formats.py --steps 500 --rows colmap ngp ngp-contract

The capture: the demo scene rendered at ``--resolution`` from 48 cameras (the generator's
train band, seed 0), flattened on white like photos (no alpha), and 4000 of its surface
points (plus 1% stray points, as SfM leaves) as the sparse points. The whole capture is
then moved by a random rotation, a translation and a scale of 7.5 (`ARBITRARY`), as the
world of real COLMAP output is arbitrary; the ``aligned`` row is the COLMAP model in the
generator's own frame, for reference. Every row uses COLMAP's split (every 8th image by
name is a test view: 6 test, 42 train); the two JSON files list it in
``train_filenames`` / ``test_filenames`` so that all rows train on the same 8 views
(``--views 8``: farthest-point selection, which no similarity changes) and test on the
same 6. Each run is a fresh ``sparsefield train`` subprocess in ``--out/runs/<row>``; a run
whose ``metrics.json`` exists is read back, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pycolmap
from scipy.spatial.transform import Rotation

from sparsefield.datasets import load_scene, writers
from sparsefield.datasets.poses import opencv_to_opengl, transform_points, transform_poses
from sparsefield.datasets.synthetic import generate_scene

ROWS = {
    "colmap": ("colmap", []),
    "nerfstudio": ("nerfstudio", []),
    "ngp": ("ngp", []),
    "ngp-alone": ("ngp-alone", []),
    "aligned": ("aligned", []),
    "ngp-contract": ("ngp-alone", ["--render.space", "contract"]),
}
"""Row -> (dataset, extra ``train`` flags). ``ngp-alone`` is the instant-ngp file without
the ``colmap_text/`` model beside it (the box is then ngp's unit cube); ``ngp-contract``
models what lies beyond that cube in mip-NeRF 360's contracted space instead of as the
background colour."""
DATASETS = ("colmap", "nerfstudio", "ngp", "ngp-alone", "aligned")
MAIN = ("colmap", "nerfstudio", "ngp")
"""The rows that must agree: the same capture in each tool's file. "vs best" is against
the best of these."""
APPLIED = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0]]
"""nerfstudio's ``applied_transform`` for a COLMAP world (``colmap_to_json``)."""
N_VIEWS, N_POINTS = 48, 4000


def arbitrary(seed: int = 7, scale: float = 7.5) -> np.ndarray:
    """``[4, 4]`` similarity: a random rotation, a translation in [-20, 20]^3, ``scale``."""
    out = np.eye(4)
    out[:3, :3] = scale * Rotation.random(random_state=seed).as_matrix()
    out[:3, 3] = np.random.default_rng(seed).uniform(-20.0, 20.0, 3)
    return out


ARBITRARY = arbitrary()


def capture(folder: Path, resolution: int):
    """Photos ``[N, H, W, 3]`` uint8 on white, their `Cameras`, names and ``[P, 3]`` points."""
    blender = generate_scene(folder / "blender", "demo", resolution, n_train=N_VIEWS, n_val=0,
                             n_test=1)
    scene = load_scene(blender)
    ids = scene.split("train")
    photos = np.round(scene.images[ids] * 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    surface = np.load(blender / "surface_points.npy")
    points = surface[rng.choice(len(surface), N_POINTS, replace=False)]
    stray = rng.normal(0.0, 3.0, (N_POINTS // 100, 3))
    names = [f"frame_{k + 1:05d}.png" for k in range(len(ids))]
    return photos, scene.cameras[ids], names, np.concatenate([points, stray])


def write_pycolmap(root: Path, cameras, c2w, names, points, photos=None, binary=True) -> Path:
    """A COLMAP model written by pycolmap (one shared PINHOLE camera, the given names) to
    ``root/sparse/0``, or as text straight to ``root`` without ``photos``."""
    rec = pycolmap.Reconstruction()
    params = [float(cameras.fx[0]), float(cameras.fy[0]), float(cameras.cx[0]), float(cameras.cy[0])]
    rec.add_camera_with_trivial_rig(pycolmap.Camera(
        model="PINHOLE", width=cameras.width, height=cameras.height, params=params, camera_id=1))
    for k, pose in enumerate(opencv_to_opengl(c2w)):
        rot = pose[:, :3].T
        image = pycolmap.Image(name=names[k], camera_id=1, image_id=k + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(np.c_[rot, -rot @ pose[:, 3]]))
    for p in points:
        rec.add_point3D(p, pycolmap.Track(), np.array([128, 128, 128], np.uint8))
    folder = root if photos is None else root / "sparse" / "0"
    folder.mkdir(parents=True, exist_ok=True)
    (rec.write_binary if binary else rec.write_text)(str(folder))
    for name, pixels in zip(names, [] if photos is None else photos):
        writers.save_png(root / "images" / name, pixels)
    return root


def add_splits(root: Path, names: list[str], prefix: str) -> None:
    """COLMAP's split (every 8th name is a test view) as ``*_filenames`` lists."""
    meta = json.loads((root / "transforms.json").read_text())
    meta["train_filenames"] = [prefix + n for k, n in enumerate(names) if k % 8]
    meta["test_filenames"] = [prefix + n for k, n in enumerate(names) if k % 8 == 0]
    (root / "transforms.json").write_text(json.dumps(meta, indent=2))


def write_datasets(out: Path, resolution: int) -> dict[str, Path]:
    """The `DATASETS` under ``out`` (those already written are kept)."""
    data = {name: out / name for name in DATASETS}
    if all(p.exists() for p in data.values()):
        return data
    photos, cams, names, points = capture(out, resolution)
    c2w = np.asarray(cams.c2w, np.float64)
    moved, moved_points = transform_poses(ARBITRARY, c2w), transform_points(ARBITRARY, points)
    applied = np.vstack([APPLIED, [0.0, 0.0, 0.0, 1.0]])
    ngp_cams = dataclasses.replace(cams, c2w=moved.astype(np.float32))
    write = {
        "aligned": lambda root: write_pycolmap(root, cams, c2w, names, points, photos),
        "colmap": lambda root: write_pycolmap(root, cams, moved, names, moved_points, photos),
        "nerfstudio": lambda root: writers.write_nerfstudio(
            root, dataclasses.replace(cams, c2w=transform_poses(applied, moved).astype(np.float32)),
            photos, names=names, distortion={"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0},
            points=transform_points(applied, moved_points), extra={"applied_transform": APPLIED}),
        "ngp-alone": lambda root: writers.write_ngp(root, ngp_cams, photos, names=names, aabb_scale=32),
        "ngp": lambda root: write_pycolmap(  # colmap2nerf's output beside the model it read
            writers.write_ngp(root, ngp_cams, photos, names=names, aabb_scale=32) / "colmap_text",
            cams, moved, names, moved_points, binary=False),
    }
    for name, root in data.items():
        if not root.exists():
            write[name](root)
            if name != "aligned" and name != "colmap":
                add_splits(root, names, "./images/" if name.startswith("ngp") else "images/")
    return data


def run_one(data: Path, out: Path, steps: int, seed: int, flags: list[str]) -> dict:
    """Train and evaluate one run (or read back a finished one): metrics and its box."""
    if not (out / "metrics.json").exists():
        cmd = [sys.executable, "-m", "sparsefield.launch", "train", "--data", str(data),
               "--steps", str(steps), "--views", "8", "--seed", str(seed), "--out", str(out),
               "--eval-every", "100000", *flags]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{out}: training failed\n{proc.stderr[-3000:]}")
        print(f"  {out.name}: {time.perf_counter() - start:.0f} s wall", flush=True)
    metrics = json.loads((out / "metrics.json").read_text())
    box = np.asarray(json.loads((out / "config.json").read_text())["bbox"])
    return {**{k: metrics[k] for k in ("psnr", "ssim", "lpips")}, "box": box}


def table(results: dict[str, dict]) -> list[str]:
    """Markdown rows. Box sides are in the loaded scene's units: every loader puts the
    cameras at a mean distance of about 4 (the levelled frames and colmap2nerf's exactly,
    the generator's own frame 3.9), so the sides compare across rows."""
    best = max([r["psnr"] for name, r in results.items() if name in MAIN]
               or [r["psnr"] for r in results.values()])
    lines = ["| file | PSNR (dB) | SSIM | LPIPS | box sides | vs best |",
             "|---|---:|---:|---:|---|---:|"]
    for name, r in results.items():
        sides = " x ".join(f"{s:.2f}" for s in np.diff(r["box"], axis=0)[0])
        lines.append(f"| {LABELS[name]} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['lpips']:.3f} "
                     f"| {sides} | {round(r['psnr'] - best, 2) + 0.0:+.2f} |")
    return lines


LABELS = {"colmap": "COLMAP (pycolmap)", "nerfstudio": "nerfstudio transforms.json",
          "ngp": "instant-ngp transforms.json, aabb_scale 32, beside colmap_text/",
          "ngp-alone": "instant-ngp transforms.json, aabb_scale 32, alone (unit cube)",
          "aligned": "COLMAP, generator's frame (reference)",
          "ngp-contract": "instant-ngp alone, `--render.space contract`"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-formats"))
    parser.add_argument("--resolution", type=int, default=200)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--doc", action="store_true", help="write docs/formats.md")
    args = parser.parse_args()
    data = write_datasets(args.out / "data", args.resolution)
    results = {row: run_one(data[ROWS[row][0]], args.out / "runs" / row, args.steps, args.seed,
                            ROWS[row][1]) for row in args.rows}
    lines = table(results)
    print("\n".join(lines))
    if args.doc:
        write_doc(lines, args)


def write_doc(lines: list[str], args) -> None:
    """``docs/formats.md``: the command, the settings and the table."""
    command = (f"python benchmarks/formats.py --resolution {args.resolution} --steps {args.steps} "
               f"--seed {args.seed} --doc")
    path = Path(__file__).resolve().parents[1] / "docs" / "formats.md"
    body = path.read_text() if path.exists() else ""
    marker = "<!-- formats table -->"
    block = "\n".join([marker, "", f"    {command}", "", *lines, "", marker])
    start = body.find(marker)
    end = body.find(marker, start + 1) if start >= 0 else -1
    if end >= 0:
        body = body[:start] + block + body[end + len(marker):]
    else:
        body = body + "\n" + block + "\n"
    path.write_text(body)


if __name__ == "__main__":
    main()
