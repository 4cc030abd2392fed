"""Meshes against the ground truth: each exported mesh's Chamfer distance, precision,
recall and F-score at 0.5% and 1% of the box diagonal, per method, export route and view
count, over generated scenes whose true surface is known.

    python benchmarks/mesh_quality.py --runs runs/bench-fewshot             # every run under a folder
    python benchmarks/mesh_quality.py --runs RUN --routes tsdf density      # one run, both routes
    python benchmarks/mesh_quality.py --runs runs/bench-fewshot --doc docs/meshes.md

A run is any folder holding ``metrics.json`` (for instance the runs `benchmarks/fewshot.py`
trains over the scene suite); its dataset must be a generated one, which keeps the
surface samples of the outer surface (``surface_points.npy``). Each mesh is exported
exactly as ``sparsefield export --route ROUTE`` does, then sampled uniformly and compared
with those points. Distances are in percent of the scene box diagonal; the time is the
export's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import trimesh

THRESHOLDS = (0.005, 0.01)
"""Distance thresholds of precision / recall / F, as shares of the box diagonal."""


def score_run(run: Path, route: str, resolution: int, points: int) -> dict:
    from sparsefield.outputs import ExportArgs, export_mesh
    from sparsefield.renderers.mesh import sample_points, surface_scores
    from sparsefield.runs import load_config

    config, facts = load_config(run)
    truth_file = Path(config.data) / "surface_points.npy"
    if not truth_file.exists():
        raise SystemExit(f"error: {truth_file}: no ground-truth surface points (only generated scenes have them)")
    diagonal = float(np.linalg.norm(np.subtract(*np.asarray(facts["bbox"])[::-1])))
    out = run / f"mesh_{route}.ply"
    start = time.perf_counter()
    export_mesh(ExportArgs(run=run, out=out, resolution=resolution, route=route))
    seconds = time.perf_counter() - start
    scores = surface_scores(sample_points(trimesh.load(out, process=False), points), np.load(truth_file),
                            tuple(t * diagonal for t in THRESHOLDS))
    named = {"chamfer": 100 * scores.pop("chamfer") / diagonal}
    for t in THRESHOLDS:
        for key in ("precision", "recall", "f"):
            named[f"{key}@{100 * t:g}%"] = scores[f"{key}@{t * diagonal:g}"]
    return {"method": config.method, "views": len(facts["train_view_ids"]), "scene": Path(config.data).name,
            "route": route, "seconds": seconds, **named}


def table(rows: list[dict]) -> str:
    keys = ["chamfer", *(f"{k}@{100 * t:g}%" for t in THRESHOLDS for k in ("precision", "recall", "f"))]
    head = "| method | route | views | runs | Chamfer % | " + " | ".join(keys[1:]) + " | export s |"
    lines = [head, "|" + "---|" * (len(keys) + 5)]
    groups = sorted({(r["method"], r["route"], r["views"]) for r in rows})
    for method, route, views in groups:
        sel = [r for r in rows if (r["method"], r["route"], r["views"]) == (method, route, views)]
        cells = [f"{np.mean([r[k] for r in sel]):.3f}" for k in keys]
        lines.append(f"| {method} | {route} | {views} | {len(sel)} | " + " | ".join(cells)
                     + f" | {np.mean([r['seconds'] for r in sel]):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders, or folders holding runs")
    parser.add_argument("--routes", nargs="+", default=["tsdf", "density"], choices=["tsdf", "density"])
    parser.add_argument("--resolution", type=int, default=256, help="grid points along the box's longest axis")
    parser.add_argument("--points", type=int, default=200_000, help="points sampled on each mesh")
    parser.add_argument("--doc", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    runs = sorted({m.parent for root in args.runs for m in ([root / "metrics.json"] if (root / "metrics.json").exists()
                                                               else root.rglob("metrics.json"))})
    rows = []
    for run in runs:
        for route in args.routes:
            rows.append({"run": str(run), **score_run(run, route, args.resolution, args.points)})
            print(json.dumps(rows[-1]), flush=True)
    text = table(rows)
    print(text)
    if args.doc is not None:
        args.doc.write_text(f"# Meshes\n\n`python benchmarks/mesh_quality.py {' '.join(map(str, args.runs))}`\n\n{text}\n")


if __name__ == "__main__":
    from sparsefield.launch import ensure_fast_malloc

    ensure_fast_malloc()
    main()
