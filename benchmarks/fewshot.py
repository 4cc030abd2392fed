"""Few-shot quality over a suite of generated scenes: each recipe trained on each scene
from 3, 4, 6 and 8 views over several seeds; prints PSNR / SSIM / LPIPS (mean and spread
over scenes and seeds) and the training time, per recipe and view count, and (``--doc``)
writes the tables to ``docs/fewshot.md``.

    python benchmarks/fewshot.py                                    # the recipes in RECIPES, whole suite
    python benchmarks/fewshot.py --recipes nerf-fewshot splat-fewshot --views 3 8 --seeds 0
    python benchmarks/fewshot.py --scenes demo glossy --views 3 -- --steps 500   # flags after -- go to every run
    python benchmarks/fewshot.py --collect --doc docs/fewshot.md     # tabulate the finished runs only

A recipe is the command-line flags a user would type (`RECIPES`; ``--extra NAME=FLAGS``
adds one). Scenes are the demo scene and the generator's suite
(`sparsefield.datasets.synthetic.SUITE`: thin structures, a concave bowl, large
textureless surfaces, fine texture, glossy materials, a floating torus without ground, a
chair frame), generated at ``--resolution`` (200 px by default) with alpha masks. Views are
the standard selection (`sparsefield train --views N`). Each run is a fresh subprocess of
``sparsefield train`` writing ``--out/<recipe>/<scene>-<views>v-s<seed>``; a run whose
``metrics.json`` exists is not trained again, so an interrupted benchmark resumes.
Training time is the run's own (``train_seconds``: compilation included, evaluation
excluded).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RECIPES: dict[str, list[str]] = {
    "nerf-default": [],
    "fewshot": ["--preset", "fewshot"],
    "nerf-fewshot": ["--preset", "fewshot", "--method", "nerf"],
    "splat-fewshot": ["--preset", "fewshot", "--method", "splat"],
}
"""Recipe name -> flags. ``--extra NAME=FLAGS`` adds more (e.g. one regularizer each).
``fewshot`` is the recommended recipe as a user types it: its method is picked by the
number of views (`sparsefield.config.PRESET_METHODS`)."""

SCENES = ("demo", "thin_wires", "concave_bowl", "textureless", "fine_texture", "glossy", "floating_torus", "chair")


def scene_path(name: str, resolution: int) -> Path:
    from sparsefield.datasets.synthetic import demo_scene_path, suite_scene_path

    return demo_scene_path(resolution) if name == "demo" else suite_scene_path(name, resolution)


def run_one(flags: list[str], data: Path, views: int, seed: int, out: Path) -> dict:
    """Train and evaluate one run (or read back a finished one); its metrics."""
    if not (out / "metrics.json").exists():
        cmd = [sys.executable, "-m", "sparsefield.launch", "train", "--data", str(data), "--views", str(views),
               "--seed", str(seed), "--out", str(out), "--eval-every", "100000", *flags]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{out}: training failed\n{proc.stderr[-3000:]}")
        print(f"  {out.relative_to(out.parents[1])}: {time.perf_counter() - start:.0f} s wall", flush=True)
    m = json.loads((out / "metrics.json").read_text())
    return {k: m[k] for k in ("psnr", "ssim", "lpips", "train_seconds")}


def summarise(rows: list[dict]) -> dict:
    """Mean and standard deviation of each metric over the rows."""
    out = {}
    for key in ("psnr", "ssim", "lpips", "train_seconds"):
        values = np.array([r[key] for r in rows if r[key] is not None], np.float64)
        out[key] = (float(values.mean()), float(values.std())) if len(values) else (float("nan"), 0.0)
    return out


def table(results: list[dict], recipes: list[str], views: list[int]) -> str:
    """The markdown table: one row per recipe and view count, mean ± std over scenes and
    seeds, and the paired differences to the first recipe over the runs both have (PSNR
    mean ± std and how many runs gained; SSIM and LPIPS means), so that rows run on
    different subsets of the suite still compare like with like."""
    base = recipes[0]
    lines = [f"| recipe | views | PSNR (dB) | vs {base} (paired) | SSIM | LPIPS | paired SSIM, LPIPS | train s "
             "| runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v in views:
        ref = {(x["scene"], x["seed"]): x for x in results if x["recipe"] == base and x["views"] == v}
        for r in recipes:
            rows = [x for x in results if x["recipe"] == r and x["views"] == v]
            if not rows:
                continue
            s = summarise(rows)
            pairs = [(x, ref[x["scene"], x["seed"]]) for x in rows if (x["scene"], x["seed"]) in ref]
            paired, quality = "", ""
            if pairs and r != base:
                d = {k: np.array([x[k] - y[k] for x, y in pairs]) for k in ("psnr", "ssim", "lpips")}
                paired = (f"{d['psnr'].mean():+.2f} ± {d['psnr'].std():.2f} (better on {int((d['psnr'] > 0).sum())} "
                          f"of {len(pairs)})")
                quality = f"{d['ssim'].mean():+.3f}, {d['lpips'].mean():+.3f}"
            lines.append(f"| {r} | {v} | {s['psnr'][0]:.2f} ± {s['psnr'][1]:.2f} | {paired} | {s['ssim'][0]:.3f} ± "
                         f"{s['ssim'][1]:.3f} | {s['lpips'][0]:.3f} ± {s['lpips'][1]:.3f} | {quality} | "
                         f"{s['train_seconds'][0]:.0f} ± {s['train_seconds'][1]:.0f} | {len(rows)} |")
    return "\n".join(lines)


def per_scene(results: list[dict], recipes: list[str], views: list[int], scenes: list[str]) -> str:
    """PSNR per scene (mean over seeds), one row per recipe and view count."""
    lines = ["| recipe | views | " + " | ".join(scenes) + " |", "|---|---|" + "---|" * len(scenes)]
    for v in views:
        for r in recipes:
            cells = []
            for s in scenes:
                vals = [x["psnr"] for x in results if x["recipe"] == r and x["views"] == v and x["scene"] == s]
                cells.append(f"{np.mean(vals):.2f}" if vals else "")
            if any(cells):
                lines.append(f"| {r} | {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES),
                        help="recipe names to run (none: only the --extra ones)")
    parser.add_argument("--extra", nargs="*", default=[], help="more recipes as NAME=FLAGS (flags space-separated)")
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), help="scenes: demo and suite names")
    parser.add_argument("--views", type=int, nargs="+", default=[3, 4, 6, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--resolution", type=int, default=200, help="image side of the generated scenes")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-fewshot"))
    parser.add_argument("--doc", type=Path, default=None, help="also write the tables here (docs/fewshot.md)")
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: tabulate the finished runs under --out (a partial protocol)")
    parser.add_argument("flags", nargs="*", help="flags for every run (after --)")
    args = parser.parse_args()
    recipes = dict(RECIPES)
    for item in args.extra:
        name, _, flags = item.partition("=")
        recipes[name] = flags.split()
    names = [r for r in args.recipes if r in recipes] + [i.partition("=")[0] for i in args.extra]
    unknown = [r for r in args.recipes if r not in recipes]
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(recipes)}")
    results = []
    for views in args.views:
        for scene in args.scenes:
            data = scene_path(scene, args.resolution)
            for seed in args.seeds:
                for name in names:
                    out = args.out / name / f"{scene}-{views}v-s{seed}"
                    if args.collect and not (out / "metrics.json").exists():
                        continue
                    m = run_one(recipes[name] + args.flags, data, views, seed, out)
                    results.append({"recipe": name, "scene": scene, "views": views, "seed": seed, **m})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    summary, scenes = table(results, names, args.views), per_scene(results, names, args.views, args.scenes)
    print(summary + "\n\n" + scenes)
    if args.doc is None:
        return
    command = "python benchmarks/fewshot.py " + shlex.join(sys.argv[1:])
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(f"# Few-shot suite\n\n`{command}`\n\n{summary}\n\nTest PSNR per scene (mean over seeds):\n\n"
                        f"{scenes}\n\nRecipes:\n\n" + "\n".join(f"- `{n}`: `{' '.join(recipes[n]) or '(defaults)'}`"
                                                          for n in names) + "\n")


if __name__ == "__main__":
    main()
