"""Poses for photos without them, end to end: 24 photos of the demo scene (an orbit at
30 degrees, on the white background, no alpha), their cameras recovered with ``sparsefield
poses``, then the same training on the recovered dataset and on one written with the true
poses; prints both test PSNRs and the SfM's figures.

    python benchmarks/poses.py                       # 400 px, 1000 steps, default preset
    python benchmarks/poses.py --resolution 200 -- --steps 300
    python benchmarks/poses.py --camera-model SIMPLE_RADIAL   # fit lens distortion too (real photos)
    python benchmarks/poses.py --known-focal                  # the focal length given, as EXIF gives it
    python benchmarks/poses.py --refine     # also train on the recovered poses with --pose-refine

Each run is scored twice: with the test poses as given, and with each test camera aligned
to its image first (``sparsefield eval --align-poses``).

Both datasets hold the same 24 images in the COLMAP layout (every 8th image is a test
view), so the training and test views are the same; only the poses differ.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def photos(root: Path, resolution: int, count: int):
    """``count`` photos of the demo scene on an even orbit, and their true cameras."""
    from sparsefield.datasets import load_scene
    from sparsefield.datasets.synthetic import generate_scene

    scene = load_scene(generate_scene(root / "scene", "demo", resolution, n_train=1, n_val=0, n_test=count))
    folder = root / "photos"
    folder.mkdir()
    ids = scene.split("test")
    for i in ids:
        Image.fromarray(np.round(scene.images[i] * 255).astype(np.uint8)).save(folder / Path(scene.names[i]).name)
    return folder, scene, ids


def sparsefield(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "sparsefield.launch", *args], check=True, capture_output=True, text=True)


def train(data: Path, out: Path, flags: list[str]) -> dict:
    """Train on ``data``; the test metrics as trained, then with the test poses aligned."""
    sparsefield("train", "--data", str(data), "--views", "None", "--out", str(out), "--eval-every", "100000", *flags)
    sparsefield("eval", "--run", str(out))  # (train scores a --pose-refine run aligned)
    plain = json.loads((out / "metrics.json").read_text())
    sparsefield("eval", "--run", str(out), "--align-poses")
    return {"plain": plain, "aligned": json.loads((out / "metrics.json").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=400)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--camera-model", default="SIMPLE_PINHOLE",
                        help="COLMAP camera model of `sparsefield poses` (the photos are rendered by a pinhole "
                             "camera; SIMPLE_RADIAL, the default for real photos, also fits a distortion term)")
    parser.add_argument("--known-focal", action="store_true",
                        help="give SfM the true focal length (as a photo's EXIF would) instead of fitting it")
    parser.add_argument("--refine", action="store_true",
                        help="also train on the recovered poses with --pose-refine (the row 'refined')")
    parser.add_argument("--keep", type=Path, help="keep the datasets and runs in this new folder")
    parser.add_argument("flags", nargs="*", help="flags for both trainings (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(args, Path(tmp) if args.keep is None else args.keep)


def run(args, tmp: Path) -> None:
    from sparsefield.datasets.sfm import SfmConfig, estimate_poses
    from sparsefield.datasets.writers import write_colmap

    folder, scene, ids = photos(tmp, args.resolution, args.photos)
    start = time.perf_counter()
    focal = float(np.asarray(scene.cameras.fx).reshape(-1)[0]) if args.known_focal else None
    result = estimate_poses(folder, tmp / "recovered", SfmConfig(camera_model=args.camera_model, focal=focal))
    sfm_seconds = time.perf_counter() - start
    names = [Path(scene.names[i]).name for i in ids]
    surface = np.load(scene.root / "surface_points.npy")  # true sparse points, as many as SfM finds
    picked = surface[np.random.default_rng(0).choice(len(surface), max(result.num_points, 100), replace=False)]
    write_colmap(tmp / "true", scene.cameras[ids], scene.images[ids], names=names, points=picked)
    rows = {name: train(tmp / name, tmp / f"run-{name}", args.flags) for name in ("true", "recovered")}
    if args.refine:
        rows["refined"] = train(tmp / "recovered", tmp / "run-refined", [*args.flags, "--pose-refine", "pose-refinement"])
    print(f"SfM ({args.camera_model}, focal {'given' if args.known_focal else 'fitted'}): {len(result.registered)} of {args.photos} photos registered, {result.num_points:,} points, "
          f"mean reprojection error {result.mean_reprojection_error:.2f} px, {sfm_seconds:.0f} s")
    for scoring in ("plain", "aligned"):
        print(f"test poses {'aligned to their images' if scoring == 'aligned' else 'as given'}:")
        for name, m in rows.items():
            m = m[scoring]
            moved = ""
            if scoring == "aligned":
                moved = f"  (moved {np.mean([f['align_rotation_deg'] for f in m['per_frame']]):.2f} deg on average)"
            print(f"  {name:9s} poses: test PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.3f}  LPIPS {m['lpips']:.3f}{moved}")
        for name in [n for n in rows if n != "true"]:
            print(f"  true - {name}: {rows['true'][scoring]['psnr'] - rows[name][scoring]['psnr']:+.2f} dB")


if __name__ == "__main__":
    main()
