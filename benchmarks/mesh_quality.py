"""Chamfer distance between an exported mesh and the demo scene's ground-truth surface.

    python benchmarks/mesh_quality.py --run runs/demo          # a trained run
    python benchmarks/mesh_quality.py                          # trains the default config first

The mesh is exported exactly as ``sparsefield export`` does (marching cubes over the
density, floaters removed); points sampled uniformly on it are compared with the points
the generator sampled on the scene's outer surface (``surface_points.npy``). The figure
is the symmetric Chamfer distance (mean of accuracy and completeness, not squared),
also as a percentage of the scene box diagonal; the target is under 1%.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import trimesh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="trained run (default: train one now)")
    parser.add_argument("--resolution", type=int, default=256, help="marching-cubes points per axis")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[5.0, 10.0, 20.0],
                        help="density iso-levels to compare (the export default is 10)")
    parser.add_argument("--points", type=int, default=200_000, help="points sampled on the mesh")
    args = parser.parse_args()

    from sparsefield.outputs import ExportArgs, export_mesh
    from sparsefield.renderers.mesh import chamfer_distance, sample_points
    from sparsefield.runs import load_run

    run = args.run
    if run is None:  # the default config, trained through the command line
        run = Path(tempfile.mkdtemp(prefix="sparsefield-mesh-")) / "run"
        subprocess.run([sys.executable, "-m", "sparsefield.launch", "train", "--out", str(run)], check=True)
    loaded = load_run(run)
    truth_file = Path(loaded.config.data) / "surface_points.npy"
    if not truth_file.exists():
        raise SystemExit(f"error: {truth_file}: no ground-truth surface points (only generated scenes have them)")
    truth = np.load(truth_file)
    lo, hi = np.asarray(loaded.facts["bbox"], np.float64)
    diagonal = float(np.linalg.norm(hi - lo))
    print(f"run {run}, box diagonal {diagonal:.3f}, {len(truth):,} ground-truth points")
    print(f"{'threshold':>9s} {'vertices':>9s} {'chamfer':>9s} {'% of diag':>9s}")
    for threshold in args.thresholds:
        out = Path(run) / f"mesh_t{threshold:g}.ply"
        export_mesh(ExportArgs(run=Path(run), out=out, resolution=args.resolution, threshold=threshold))
        mesh = trimesh.load(out, process=False)
        cd = chamfer_distance(sample_points(mesh, args.points), truth)
        print(f"{threshold:9g} {len(mesh.vertices):9,d} {cd:9.4f} {100 * cd / diagonal:8.2f}%", flush=True)


if __name__ == "__main__":
    from sparsefield.launch import ensure_fast_malloc

    ensure_fast_malloc()
    main()
