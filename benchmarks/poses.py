"""Poses for photos without them, end to end: 24 photos of the demo scene (an orbit at
30 degrees, on the white background, no alpha), their cameras recovered with ``sparsefield
poses``, then the same training on the recovered dataset and on one written with the true
poses; prints both test PSNRs and the SfM's figures.

    python benchmarks/poses.py                       # 400 px, 1000 steps, default preset
    python benchmarks/poses.py --resolution 200 -- --steps 300
    python benchmarks/poses.py --camera-model SIMPLE_RADIAL   # fit lens distortion too (real photos)
    python benchmarks/poses.py --known-focal                  # the focal length given, as EXIF gives it

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


def train(data: Path, out: Path, flags: list[str]) -> dict:
    cmd = [sys.executable, "-m", "sparsefield.launch", "train", "--data", str(data), "--views", "None",
           "--out", str(out), "--eval-every", "100000", *flags]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=400)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--camera-model", default="SIMPLE_PINHOLE",
                        help="COLMAP camera model of `sparsefield poses` (the photos are rendered by a pinhole "
                             "camera; SIMPLE_RADIAL, the default for real photos, also fits a distortion term)")
    parser.add_argument("--known-focal", action="store_true",
                        help="give SfM the true focal length (as a photo's EXIF would) instead of fitting it")
    parser.add_argument("flags", nargs="*", help="flags for both trainings (after --)")
    args = parser.parse_args()
    from sparsefield.datasets.sfm import SfmConfig, estimate_poses
    from sparsefield.datasets.writers import write_colmap

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
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
    print(f"SfM ({args.camera_model}, focal {'given' if args.known_focal else 'fitted'}): {len(result.registered)} of {args.photos} photos registered, {result.num_points:,} points, "
          f"mean reprojection error {result.mean_reprojection_error:.2f} px, {sfm_seconds:.0f} s")
    for name, m in rows.items():
        print(f"{name:9s} poses: test PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.3f}  LPIPS {m['lpips']:.3f}")
    print(f"difference: {rows['true']['psnr'] - rows['recovered']['psnr']:+.2f} dB")


if __name__ == "__main__":
    main()
