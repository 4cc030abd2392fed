"""Empty-space skipping with the occupancy grid against the learned occupancy network
(LeC2O): test PSNR, samples per ray, training time and the memory of each.

    python benchmarks/occupancy.py --data DIR --steps 300 -- [extra train flags]

Trains the scene twice through the command line, once per ``--sampler``, everything else
equal, and reads each run's ``metrics.json``. The grid runs without visual-hull carving
(``--occupancy.no-carve-with-masks``) so both learn occupancy from the field alone.
Memory is what each keeps between steps: the grid's ``G^3`` density (float32) and two
bit fields (bool), at the run's and at higher resolutions, against the network's
parameters (float32; Adam's two moments triple both the network's and any trained part).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SAMPLERS = {"grid": ["--sampler", "grid", "--occupancy.no-carve-with-masks"], "occupancy-net": ["--sampler", "occupancy-net"]}


def train(sampler: str, args, out: Path) -> dict:
    cmd = [sys.executable, "-m", "sparsefield.launch", "train", "--steps", str(args.steps), "--out", str(out),
           "--eval-every", str(10 * args.steps), *(["--data", str(args.data)] if args.data else []),
           *args.extra, *SAMPLERS[sampler]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{sampler}: training failed\n{proc.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def memory_bytes() -> dict:
    """Bytes of the grid at several resolutions and of the default occupancy network."""
    import jax
    import numpy as np

    from sparsefield.samplers.network import OccupancyNetConfig

    params, _ = OccupancyNetConfig().init(jax.random.PRNGKey(0))
    net = 4 * int(sum(np.prod(np.shape(p)) for p in jax.tree_util.tree_leaves(params)))
    return {"net": net, **{f"grid {g}^3": g**3 * (4 + 1 + 1) for g in (64, 128, 256, 512)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: the demo scene)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("extra", nargs="*", help="flags for every run (after --)")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in SAMPLERS:
            rows[sampler] = train(sampler, args, Path(tmp) / sampler)
    print(f"{'sampler':14s} {'PSNR':>7s} {'SSIM':>6s} {'samples/ray':>12s} {'train s':>8s}")
    for sampler, m in rows.items():
        spr = sum(f["samples_per_ray"] for f in m["per_frame"]) / len(m["per_frame"])
        print(f"{sampler:14s} {m['psnr']:7.2f} {m['ssim']:6.3f} {spr:12.1f} {m['train_seconds']:8.1f}")
    for name, size in memory_bytes().items():
        print(f"memory {name:12s} {size / 2**20:8.2f} MiB")


if __name__ == "__main__":
    main()
