"""Training throughput on the demo scene: samples/s, rays/s, seconds per step, samples
per ray with and without the occupancy grid, the allocator's effect, the bound a hash grid
plus a tiny MLP has on this machine by a simple cost model (from an MLP rate and a
gather + scatter-add rate measured in the same process; `bound_model`) and (optionally) the
wall time to reach a test PSNR.

    python benchmarks/train_speed.py                 # throughput, both allocators
    python benchmarks/train_speed.py --psnr 24       # also: time until test PSNR >= 24 dB

Each allocator is measured in its own subprocess (LD_PRELOAD must be set at process
start), back to back, and reported as a ratio: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(steps_warm: int, steps: int) -> dict:
    """Train the default config on the demo scene; time ``steps`` steps after warm-up."""
    import jax
    import numpy as np

    from sparsefield.config import RunConfig
    from sparsefield.datasets import load_scene, select_views
    from sparsefield.datasets.batches import make_ray_data
    from sparsefield.datasets.synthetic import demo_scene_path
    from sparsefield.methods.nerf import RadianceFieldMethod

    scene = load_scene(demo_scene_path())
    train_ids = scene.split("train")
    picked = select_views(np.asarray(scene.cameras.centers)[train_ids], n=8)
    data = make_ray_data(scene, train_ids[picked])
    result = {}
    for name, occupancy in (("grid", RunConfig().occupancy), ("no_grid", None)):
        config = RunConfig(occupancy=occupancy, steps=steps_warm + steps)
        method = RadianceFieldMethod(config, scene.bbox)
        state = method.fresh()
        step_fn = method.train_step(0)
        key = jax.random.PRNGKey(0)
        t0 = time.perf_counter()
        step_fn = step_fn.lower(state, data, key).compile()
        compile_seconds = time.perf_counter() - t0
        n_warm = steps_warm if occupancy is not None else 3
        for i in range(n_warm):
            state, m = step_fn(state, data, jax.random.fold_in(key, i))
        jax.block_until_ready(m)
        rays = samples = 0.0
        t0 = time.perf_counter()
        for i in range(steps):
            state, m = step_fn(state, data, jax.random.fold_in(key, n_warm + i))
            m = jax.device_get(m)
            rays += float(m["rays"])
            samples += float(m["samples"]) * float(m["rays"]) / config.rays_per_batch
        dt = (time.perf_counter() - t0) / steps
        result[name] = {
            "seconds_per_step": dt,
            "rays_per_s": rays / steps / dt,
            "samples_per_s": samples / steps / dt,
            "samples_per_ray": samples / max(rays, 1.0),
            "rays_per_step": rays / steps,
            "compile_seconds": compile_seconds,
        }
    result["field"] = field_speed(method.field(0), state["params"], scene.bbox, config.render.sample_budget, steps)
    result["bound"] = bound_model()
    return result


def field_speed(field, params, bbox, num_points: int, repeats: int) -> dict:
    """The field alone (encoding + MLPs), forward and backward on one step's sample budget
    of random points: the part of a training step that marching and compositing sit on."""
    import jax
    import jax.numpy as jnp

    k_x, k_d = jax.random.split(jax.random.PRNGKey(2))
    x = jax.random.uniform(k_x, (num_points, 3), minval=bbox[0], maxval=bbox[1])
    d = jax.random.normal(k_d, (num_points, 3))
    d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)

    @jax.jit
    def grads(params):
        def loss(p):
            sigma, rgb = field(p, x, d, 0.5)
            return jnp.sum(sigma) + jnp.sum(rgb)
        return jax.grad(loss)(params)

    dt = median_seconds(grads, params, repeats=repeats)
    return {"seconds": dt, "samples_per_s": num_points / dt}


def median_seconds(fn, *args, repeats: int) -> float:
    """Median wall time of ``fn(*args)`` after one warm-up (compile) call."""
    import jax
    import numpy as np

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bound_model(repeats: int = 10) -> dict:
    """A cost-model bound on training samples/s for a hash grid plus a tiny MLP, from two
    rates measured here: a 32-64-64-4 MLP forward + backward (points/s) and a gather of
    2^22 random rows of width 2 from a 2^19-row table with its scatter-add transpose
    (lookups/s). One sample costs one MLP pass and ``8 L`` lookups (L levels, 8 cube
    corners): ``1 / (1 / mlp + 8 L / lookups)``.

    It is a model, not a hard limit: the grid's backward pass adds each level's 65,536
    contributions into that level's slice of the table (`sparsefield.fields.grid`), far
    more cache-friendly than one scatter over 2^22 random rows, so the field alone can
    run faster than this bound."""
    import jax
    import jax.numpy as jnp

    def rate(fn, *args, count):
        return count / median_seconds(jax.jit(fn), *args, repeats=repeats)

    key = jax.random.PRNGKey(0)
    widths = (32, 64, 64, 4)
    weights = [jax.random.normal(jax.random.fold_in(key, i), (a, b)) * 0.1
               for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))]
    points = jax.random.normal(key, (2**18, 32))

    def mlp_loss(ws, x):
        for w in ws[:-1]:
            x = jax.nn.relu(x @ w)
        return jnp.sum(x @ ws[-1])

    mlp = rate(jax.grad(mlp_loss, argnums=(0, 1)), weights, points, count=points.shape[0])
    table = jax.random.normal(key, (2**19, 2))
    rows = jax.random.randint(key, (2**22,), 0, 2**19)
    cotangent = jax.random.normal(key, (2**22, 2))

    def lookup_pair(t, r, g):
        values, vjp = jax.vjp(lambda t: t[r], t)
        return values, vjp(g)

    lookups = rate(lookup_pair, table, rows, cotangent, count=rows.shape[0])
    from sparsefield.config import RunConfig

    levels = RunConfig().field.encoding.levels
    return {"mlp_points_per_s": mlp, "lookups_per_s": lookups, "levels": levels,
            "samples_per_s": 1.0 / (1.0 / mlp + 8 * levels / lookups)}


def time_to_psnr(target: float, max_steps: int, every: int) -> dict:
    """Wall time of training (evaluation excluded) until the test-view PSNR reaches target."""
    import jax
    import numpy as np

    from sparsefield import metrics
    from sparsefield.config import RunConfig
    from sparsefield.datasets import load_scene, select_views
    from sparsefield.datasets.batches import make_ray_data
    from sparsefield.datasets.synthetic import demo_scene_path
    from sparsefield.methods.nerf import RadianceFieldMethod

    scene = load_scene(demo_scene_path())
    train_ids = scene.split("train")
    picked = select_views(np.asarray(scene.cameras.centers)[train_ids], n=8)
    data = make_ray_data(scene, train_ids[picked])
    method = RadianceFieldMethod(RunConfig(steps=max_steps), scene.bbox)
    state = method.fresh()
    step_fn = method.train_step(0)
    test = scene.split("test")[:3]
    train_time, key = 0.0, jax.random.PRNGKey(1)
    for step in range(max_steps):
        t0 = time.perf_counter()
        state, m = step_fn(state, data, jax.random.fold_in(key, step))
        jax.block_until_ready(m)
        train_time += time.perf_counter() - t0
        if (step + 1) % every == 0:
            psnr = np.mean([
                float(metrics.psnr(method.render(state, scene.cameras[int(i)], scene.background)["rgb"],
                                   scene.images[i]))
                for i in test
            ])
            print(f"  step {step + 1}: test PSNR {psnr:.2f} dB after {train_time:.1f} s of training", flush=True)
            if psnr >= target:
                return {"target": target, "steps": step + 1, "train_seconds": train_time, "psnr": psnr}
    return {"target": target, "steps": None, "train_seconds": train_time}


def run_child(allocator: str | None, args) -> dict:
    env = dict(os.environ, SPARSEFIELD_MALLOC="system")
    env.pop("LD_PRELOAD", None)
    if allocator:
        env["LD_PRELOAD"] = allocator
    cmd = [sys.executable, __file__, "--child", "--warm", str(args.warm), "--steps", str(args.steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=320, help="steps before timing (grid warm-up)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--psnr", type=float, default=None, help="also time training to this PSNR")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.warm, args.steps)))
        return
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sparsefield.launch import find_allocator

    tcmalloc = find_allocator()
    rows = {"system malloc": run_child(None, args)}
    if tcmalloc:
        rows["tcmalloc"] = run_child(tcmalloc, args)
    print(f"{'allocator':14s} {'sampler':8s} {'s/step':>8s} {'rays/s':>10s} {'samples/s':>12s} {'samples/ray':>12s}")
    for name, res in rows.items():
        for sampler, r in res.items():
            if sampler in ("field", "bound"):
                continue
            print(f"{name:14s} {sampler:8s} {r['seconds_per_step']:8.3f} {r['rays_per_s']:10,.0f} "
                  f"{r['samples_per_s']:12,.0f} {r['samples_per_ray']:12.1f}")
    if tcmalloc:
        ratio = rows["system malloc"]["grid"]["seconds_per_step"] / rows["tcmalloc"]["grid"]["seconds_per_step"]
        print(f"tcmalloc speed-up of a training step: {ratio:.2f}x")
    for name, res in rows.items():
        grid, fld = res["grid"], res["field"]
        print(f"{name}: compiling the train step {grid['compile_seconds']:.1f} s; the field alone "
              f"(forward + backward, {fld['samples_per_s']:,.0f} samples/s) is "
              f"{fld['seconds'] / grid['seconds_per_step']:.0%} of a step")
        top = res["bound"]
        print(f"{name}: bound model {top['samples_per_s']:,.0f} samples/s (MLP 32-64-64-4 forward + backward "
              f"{top['mlp_points_per_s'] / 1e6:.2f} M points/s; gather + scatter-add "
              f"{top['lookups_per_s'] / 1e6:.0f} M lookups/s, {8 * top['levels']} per sample); the train step "
              f"reaches {grid['samples_per_s'] / top['samples_per_s']:.0%} of it, the field alone "
              f"{fld['samples_per_s'] / top['samples_per_s']:.0%}")
    if args.psnr is not None:
        print(json.dumps(time_to_psnr(args.psnr, max_steps=3000, every=100)))


if __name__ == "__main__":
    main()
