"""Data-parallel scaling: training rays/s on 1, 2 and 4 devices (as many as there are).

    python benchmarks/scaling.py                     # the visible accelerators
    python benchmarks/scaling.py --cpu-devices 4     # 4 forced host devices: a dry run

Trains the demo scene (8 views, default config) on a ``data`` mesh over the first n
devices, with ``--rays-per-device`` rays per device (weak scaling: the batch grows with
the devices, as in data-parallel training) or, with ``--strong``, the default batch split
over them. Each count first takes ``--warm`` steps (the occupancy grid's warm-up and
compilation), then times ``--steps`` steps. Forced CPU devices share the host's cores, so
on CPU the figures check the machinery, not the speed-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time


def measure(n: int, args) -> dict:
    import jax
    import numpy as np

    from sparsefield import parallel
    from sparsefield.config import RunConfig
    from sparsefield.datasets import load_scene, select_views
    from sparsefield.datasets.synthetic import demo_scene_path
    from sparsefield.methods import TrainViews
    from sparsefield.methods.nerf import RadianceFieldMethod

    scene = load_scene(demo_scene_path(args.resolution))
    train_ids = scene.split("train")
    picked = select_views(np.asarray(scene.cameras.centers)[train_ids], n=8)
    rays = RunConfig().rays_per_batch if args.strong else args.rays_per_device * n
    config = RunConfig(steps=args.warm + args.steps, rays_per_batch=rays)
    budget = config.render.sample_budget * rays // RunConfig().rays_per_batch  # same per ray
    config = dataclasses.replace(config, render=dataclasses.replace(config.render, sample_budget=budget))
    method = RadianceFieldMethod(config, scene.bbox)
    method.mesh = parallel.data_mesh(jax.devices()[:n])
    state = method.place(method.fresh())
    data = method.data(TrainViews(scene, train_ids[picked]))
    step_fn = method.train_step(0)
    key = jax.random.PRNGKey(0)
    for i in range(args.warm):
        state, m = step_fn(state, data, jax.random.fold_in(key, i))
    jax.block_until_ready(m)
    done = 0.0
    t0 = time.perf_counter()
    for i in range(args.steps):
        state, m = step_fn(state, data, jax.random.fold_in(key, args.warm + i))
        done += float(m["rays"])
    seconds = time.perf_counter() - t0
    return {"devices": n, "rays_per_step": rays, "seconds_per_step": seconds / args.steps,
            "rays_per_s": done / seconds, "psnr_batch": float(m["psnr"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-devices", type=int, default=0, help="force this many host devices")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4], help="device counts")
    parser.add_argument("--rays-per-device", type=int, default=2**13)
    parser.add_argument("--strong", action="store_true", help="fixed batch (the default 8192 rays)")
    parser.add_argument("--warm", type=int, default=100, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--resolution", type=int, default=400, help="demo scene image size")
    args = parser.parse_args()
    if args.cpu_devices:  # before JAX starts
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.cpu_devices}")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax

    counts = [n for n in args.counts if n <= jax.device_count()]
    rows = [measure(n, args) for n in counts]
    print(f"{jax.devices()[0].device_kind}: {jax.device_count()} devices")
    print(f"{'devices':>7s} {'rays/step':>10s} {'s/step':>8s} {'rays/s':>12s} {'speed-up':>9s} {'efficiency':>11s}")
    for r in rows:
        speedup = r["rays_per_s"] / rows[0]["rays_per_s"]
        print(f"{r['devices']:7d} {r['rays_per_step']:10d} {r['seconds_per_step']:8.3f} {r['rays_per_s']:12,.0f} "
              f"{speedup:8.2f}x {speedup / r['devices'] * rows[0]['devices']:10.0%}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
