"""Few-shot quality: the synthetic demo scene trained from 3 and 8 views with no
regularizer, with each regularizer alone, and with the ``fewshot`` preset; prints
PSNR / SSIM / LPIPS on the 25 test views and the training time of each run.

    python benchmarks/fewshot.py                          # everything: 2 x 17 runs
    python benchmarks/fewshot.py --views 8 --only none,fewshot --steps 300
    python benchmarks/fewshot.py --views 8 --only fewshot,splat   # NeRF against 3D Gaussians

``none`` is the unregularized hash grid: the default preset with visual-hull carving
off (carving is one of the priors measured here, ``hull``). Each other row adds one
prior to it; ``fewshot`` is `sparsefield.config.PRESETS["fewshot"]`; ``splat`` and
``splat-*`` train 3D Gaussians instead (``--method splat``). All runs use the
same seed and the same views. Runs are written to ``--out/<name>-<views>v`` (replaced
if present) and the table to ``--out/results.json``. Total variation is left out: it
regularises dense voxel grids, not the hash grid compared here.
"""

from __future__ import annotations

if __name__ == "__main__":  # before JAX is imported: restart with a fast allocator
    from sparsefield.launch import ensure_fast_malloc

    ensure_fast_malloc()

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path


def configs(steps: int | None) -> dict:
    """``name -> RunConfig``: the baseline, one prior at a time, and the preset."""
    from sparsefield.fields.frequency import CoarseToFine
    from sparsefield.config import PRESETS
    from sparsefield.losses import regularizers as reg
    from sparsefield.renderers.samplers import SampleAnnealing

    default = PRESETS["default"]
    none = dataclasses.replace(
        default,
        field=dataclasses.replace(default.field, coarse_to_fine=None),
        render=dataclasses.replace(default.render, anneal=None),
        reg=reg.Regularizers(),
    )

    def with_reg(**terms):
        return dataclasses.replace(none, reg=reg.Regularizers(**terms))

    table = {
        "none": none,
        "frequency": dataclasses.replace(none, field=dataclasses.replace(none.field, coarse_to_fine=CoarseToFine())),
        "occlusion": with_reg(occlusion=reg.Occlusion()),
        "distortion": with_reg(distortion=reg.Distortion()),
        "entropy": with_reg(entropy=reg.RayEntropy()),
        "opacity": with_reg(opacity=reg.OpacityPrior()),
        "mask": with_reg(mask=reg.MaskLoss()),
        "depth": with_reg(depth_smoothness=reg.DepthSmoothness()),
        "anneal": dataclasses.replace(none, render=dataclasses.replace(none.render, anneal=SampleAnnealing())),
        "hull": dataclasses.replace(none, occupancy=dataclasses.replace(none.occupancy, carve_with_masks=True)),
        # occupancy cells seen by fewer than 3 training views stay empty (no masks needed)
        "min-views": dataclasses.replace(none, occupancy=dataclasses.replace(none.occupancy, min_views=3)),
        "fewshot": PRESETS["fewshot"],
        # The preset without FreeNeRF's coarse-to-fine mask (does the mask pay at 3 views?)
        "fewshot-noc2f": dataclasses.replace(
            PRESETS["fewshot"], field=dataclasses.replace(PRESETS["fewshot"].field, coarse_to_fine=None)),
        # 3D Gaussians on the same views (`sparsefield.methods.splat`): seeded in the visual hull,
        # 160 px crops; 700 steps take about the NeRF preset's 1000 here. The fewshot
        # variant adds the preset's mask loss, the depth variant depth smoothness on
        # unseen views.
        "splat": dataclasses.replace(default, method="splat", steps=700),
        "splat-fewshot": dataclasses.replace(PRESETS["fewshot"], method="splat", steps=700),
        "splat-depth": dataclasses.replace(
            default, method="splat", steps=700,
            reg=dataclasses.replace(default.reg, depth_smoothness=reg.DepthSmoothness())),
    }
    if steps is not None:
        table = {k: dataclasses.replace(c, steps=steps) for k, c in table.items()}
    return table


def run_one(train, config, out: Path) -> dict:
    """Train and evaluate one config from scratch; the run's metrics and wall time."""
    shutil.rmtree(out, ignore_errors=True)
    config = dataclasses.replace(
        config, out=out, eval_every=config.steps + 1, checkpoint_every=config.steps,
    )
    start = time.perf_counter()
    train.train(config)
    wall = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    keep = ("psnr", "ssim", "lpips", "train_seconds", "steps", "train_view_ids")
    return {k: metrics[k] for k in keep} | {"wall_seconds": wall}


def print_table(results: list[dict]) -> None:
    print(f"\n{'views':>5s}  {'config':14s} {'PSNR':>7s} {'dPSNR':>7s} {'SSIM':>6s} {'LPIPS':>6s} "
          f"{'train s':>8s} {'steps':>6s}")
    base = {r["views"]: r["psnr"] for r in results if r["name"] == "none"}
    for r in results:
        delta = f"{r['psnr'] - base[r['views']]:+7.2f}" if r["views"] in base else f"{'':7s}"
        print(f"{r['views']:5d}  {r['name']:14s} {r['psnr']:7.2f} {delta} {r['ssim']:6.3f} "
              f"{r['lpips']:6.3f} {r['train_seconds']:8.1f} {r['steps']:6d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: each config's own)")
    parser.add_argument("--views", type=int, nargs="+", default=[3, 8], help="view counts to run")
    parser.add_argument("--only", type=str, default=None,
                        help="comma-separated config names (none, frequency, occlusion, distortion, entropy, "
                             "opacity, mask, depth, anneal, hull, min-views, fewshot, fewshot-noc2f, splat, splat-fewshot, splat-depth)")
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: the synthetic demo scene)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-fewshot"), help="folder for the runs")
    args = parser.parse_args()

    table = configs(args.steps)
    names = list(table) if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"--only: unknown config(s) {', '.join(unknown)}; choose from {', '.join(table)}")
    if args.data is None:
        from sparsefield.datasets.synthetic import demo_scene_path

        args.data = demo_scene_path()
    from sparsefield import train

    results = []
    for views in args.views:
        for name in names:
            config = dataclasses.replace(table[name], data=args.data, views=views)
            print(f"\n=== {name}, {views} views, {config.steps} steps ===", flush=True)
            results.append({"name": name, "views": views, **run_one(train, config, args.out / f"{name}-{views}v")})
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)


if __name__ == "__main__":
    main()
