"""Each positional encoding on the demo scene with the same step budget.

    python benchmarks/encodings_scene.py                       # hash, simplex, voxel, frequency
    python benchmarks/encodings_scene.py --steps 500 --only hash simplex

Trains the built-in demo scene from 8 views once per encoding through the command line
(``sparsefield train ... field.encoding:NAME``), everything else at the defaults, and
prints test PSNR / SSIM / LPIPS, training seconds and the parameter count from each
run's ``metrics.json``. Runs go one after another, so their times compare on a quiet
machine; extra flags after ``--`` are passed to every run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ENCODINGS = ("hash", "simplex", "voxel", "frequency")


def encoding_flags(name: str) -> list[str]:
    """The simplex grid gets the default hash grid's table size T (equal parameters)."""
    if name != "simplex":
        return []
    from sparsefield.fields.field import FieldConfig

    return ["--field.encoding.log2-table-size", str(FieldConfig().encoding.log2_table_size)]


def train(name: str, steps: int, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "sparsefield.launch", "train", "--steps", str(steps),
           "--out", str(out), "--eval-every", str(10 * steps), *extra, f"field.encoding:{name}",
           *encoding_flags(name)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: training failed\n{proc.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--only", nargs="+", choices=ENCODINGS, default=list(ENCODINGS))
    parser.add_argument("extra", nargs="*", help="flags passed to every run (after --)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="sparsefield-encodings-"))
    print(f"demo scene, 8 views, {args.steps} steps; runs in {root}")
    print(f"{'encoding':10s} {'PSNR':>7s} {'SSIM':>6s} {'LPIPS':>6s} {'train s':>8s} {'params':>11s}")
    for name in args.only:
        m = train(name, args.steps, root / name, args.extra)
        print(f"{name:10s} {m['psnr']:7.2f} {m['ssim']:6.3f} {m['lpips']:6.3f} "
              f"{m['train_seconds']:8.1f} {m['num_params']:11,d}", flush=True)


if __name__ == "__main__":
    main()
