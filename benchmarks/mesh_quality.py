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

Completeness (recall, and its half of the Chamfer distance) counts only the true points
that some camera of the scene's rig (its train, val and test cameras) sees: the outer
surface also holds faces no photo shows, such as the underside of a floor plate shot
from above or the patch of floor an object stands on, and no method can recover those
(DTU's evaluation masks out unseen points the same way). Accuracy (precision) measures
against the whole true surface. The columns marked "whole" score completeness against
every true point too.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import trimesh

THRESHOLDS = (0.005, 0.01)
"""Distance thresholds of precision / recall / F, as shares of the box diagonal."""

SCORING = 3
"""Version of the scoring kept in ``mesh_ROUTE.json``; rows of another version are redone
(2: completeness against the seen surface, `seen_truth`; 3: the tsdf route meshes only
what a training camera saw from the front)."""


@functools.cache
def seen_truth(data: Path) -> np.ndarray:
    """``[M]`` bool: the points of ``data/surface_points.npy`` that a camera of the
    generated dataset ``data`` sees (`sparsefield.datasets.synthetic.truth.visible_from`)."""
    from sparsefield.datasets.synthetic import SCENES, SUITE
    from sparsefield.datasets.synthetic.truth import visible_from

    match = re.fullmatch(r"synthetic-(?:suite-(\w+?)|(\w+?))-v\d+-\d+px", data.name)
    if match is None or (match[1] or match[2]) not in (SUITE if match[1] else SCENES):
        raise SystemExit(f"error: {data}: not a folder the scene generator names (synthetic-<scene>-v<N>-<R>px)")
    scene = SUITE[match[1]]() if match[1] else SCENES[match[2]]
    frames = [json.loads((data / f"transforms_{split}.json").read_text()) for split in ("train", "val", "test")]
    c2w = np.concatenate([np.asarray([f["transform_matrix"] for f in meta["frames"]]) for meta in frames])
    return visible_from(scene, np.load(data / "surface_points.npy"), c2w, frames[0]["camera_angle_x"])


def score_run(run: Path, route: str, resolution: int, points: int, keep_mesh: bool = False) -> dict:
    """One run's mesh by ``route`` scored against the truth; kept in ``mesh_ROUTE.json``
    beside the run, so that a second call with the same settings reads it back.
    ``keep_mesh`` scores a ``mesh_ROUTE.ply`` already there instead of exporting again."""
    saved = run / f"mesh_{route}.json"
    old = json.loads(saved.read_text()) if saved.exists() else {}
    if (old.get("resolution"), old.get("points"), old.get("scoring")) == (resolution, points, SCORING):
        return old
    from sparsefield.outputs import ExportArgs, export_mesh
    from sparsefield.renderers.mesh import sample_points, surface_scores
    from sparsefield.runs import load_config

    config, facts = load_config(run)
    truth_file = Path(config.data) / "surface_points.npy"
    if not truth_file.exists():
        raise SystemExit(f"error: {truth_file}: no ground-truth surface points (only generated scenes have them)")
    diagonal = float(np.linalg.norm(np.subtract(*np.asarray(facts["bbox"])[::-1])))
    out = run / f"mesh_{route}.ply"
    if keep_mesh and out.exists() and old.get("resolution") == resolution:
        seconds = old["seconds"]
    else:
        start = time.perf_counter()
        export_mesh(ExportArgs(run=run, out=out, resolution=resolution, route=route))
        seconds = time.perf_counter() - start
    samples, truth = sample_points(trimesh.load(out, process=False), points), np.load(truth_file)
    thresholds = tuple(t * diagonal for t in THRESHOLDS)
    named = {}
    for suffix, seen in (("", seen_truth(Path(config.data))), ("_whole", None)):
        scores = surface_scores(samples, truth, thresholds, seen)
        named[f"chamfer{suffix}"] = 100 * scores.pop("chamfer") / diagonal
        for t in THRESHOLDS:
            for key in ("precision", "recall", "f"):
                named[f"{key}{suffix}@{100 * t:g}%"] = scores[f"{key}@{t * diagonal:g}"]
    train_seconds = json.loads((run / "metrics.json").read_text()).get("train_seconds", float("nan"))
    row = {"recipe": run.parent.name, "method": config.method, "views": len(facts["train_view_ids"]),
            "scene": Path(config.data).name, "route": route, "seconds": seconds, "train_seconds": train_seconds,
            "resolution": resolution, "points": points, "scoring": SCORING, **named}
    saved.write_text(json.dumps(row))
    return row


def table(rows: list[dict]) -> str:
    keys = ["chamfer", *(f"{k}@{100 * t:g}%" for t in THRESHOLDS for k in ("precision", "recall", "f")),
            "chamfer_whole", "f_whole@0.5%"]
    names = ["Chamfer %", *keys[1:-2], "whole: Chamfer %", "whole: f@0.5%"]
    head = "| recipe (method) | route | views | runs | " + " | ".join(names) + " | train s | export s |"
    lines = [head, "|" + "---|" * (len(keys) + 6)]
    groups = sorted({(r["views"], r["recipe"], r["method"], r["route"]) for r in rows})
    for views, recipe, method, route in groups:
        sel = [r for r in rows if (r["views"], r["recipe"], r["method"], r["route"]) == (views, recipe, method, route)]
        chamfer = [r["chamfer"] for r in sel]
        cells = [f"{np.mean(chamfer):.2f} ± {np.std(chamfer):.2f}"]
        cells += [f"{np.mean([r[k] for r in sel]):.{2 if k.startswith('chamfer') else 3}f}" for k in keys[1:]]
        lines.append(f"| {recipe} ({method}) | {route} | {views} | {len(sel)} | " + " | ".join(cells)
                     + f" | {np.mean([r['train_seconds'] for r in sel]):.0f} | {np.mean([r['seconds'] for r in sel]):.0f} |")
    return "\n".join(lines)


def per_scene(rows: list[dict]) -> str:
    """Chamfer % and F@0.5% of each run: scene x (recipe, route, views)."""
    columns = sorted({(r["views"], r["recipe"], r["route"]) for r in rows})
    scenes = sorted({r["scene"] for r in rows})
    lines = ["| scene | " + " | ".join(f"{rc} {rt} {v}v" for v, rc, rt in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for scene in scenes:
        cells = []
        for v, rc, rt in columns:
            sel = [r for r in rows if (r["scene"], r["views"], r["recipe"], r["route"]) == (scene, v, rc, rt)]
            cells.append(f"{np.mean([r['chamfer'] for r in sel]):.2f} / {np.mean([r['f@0.5%'] for r in sel]):.2f}"
                         if sel else "")
        lines.append(f"| {scene} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders, or folders holding runs")
    parser.add_argument("--routes", nargs="+", default=["tsdf", "density"], choices=["tsdf", "density"])
    parser.add_argument("--resolution", type=int, default=256, help="grid points along the box's longest axis")
    parser.add_argument("--points", type=int, default=200_000, help="points sampled on each mesh")
    parser.add_argument("--keep-meshes", action="store_true",
                        help="score the mesh_ROUTE.ply files already beside the runs instead of exporting again")
    parser.add_argument("--doc", type=Path, default=None, help="also write the table here")
    parser.add_argument("--recipes", nargs="+", default=None, help="only runs under folders of these names")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="only runs of these seeds (folders named ...-s<seed>, as benchmarks/fewshot.py writes)")
    parser.add_argument("--views", type=int, nargs="+", default=None,
                        help="only runs of these view counts (folders named ...-<N>v-s<seed>)")
    args = parser.parse_args()
    runs = sorted({m.parent for root in args.runs for m in ([root / "metrics.json"] if (root / "metrics.json").exists()
                                                               else root.rglob("metrics.json"))})
    if args.recipes is not None:
        runs = [run for run in runs if run.parent.name in args.recipes]
    if args.seeds is not None:
        runs = [run for run in runs if any(run.name.endswith(f"-s{seed}") for seed in args.seeds)]
    if args.views is not None:
        runs = [run for run in runs if any(f"-{views}v-s" in run.name for views in args.views)]
    rows = []
    for run in runs:
        for route in args.routes:
            rows.append({"run": str(run), **score_run(run, route, args.resolution, args.points, args.keep_meshes)})
            print(json.dumps(rows[-1]), flush=True)
    text = table(rows) + "\n\nPer scene, Chamfer % / F@0.5%:\n\n" + per_scene(rows)
    print(text)
    if args.doc is not None:
        command = "python benchmarks/mesh_quality.py " + shlex.join(sys.argv[1:])
        args.doc.write_text(f"# Meshes\n\n`{command}`\n\n{text}\n")


if __name__ == "__main__":
    from sparsefield.launch import ensure_fast_malloc

    ensure_fast_malloc()
    main()
