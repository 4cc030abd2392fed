"""Saliency pruning (HollowNeRF) on the demo scene: test PSNR against parameter count,
checkpoint size before and after compaction, and the training time of mask and ADMM.

    python benchmarks/pruning.py                                  # the default sweep
    python benchmarks/pruning.py --steps 300 --unpruned 17 19 --pruned 17:0.8 18:0.8:0.1:0.5
    python benchmarks/pruning.py --overhead-only

Trains the built-in demo scene from 8 views through the command line, once per grid:
unpruned hash grids at several table sizes ``T = 2^n`` (``--unpruned n ...``) and pruned
ones (``--preset pruned``) at ``T`` and target sparsity (``--pruned n:s ...``), everything
else at the defaults. For each run it prints test PSNR and three parameter counts:

- ``allocated``: every table row, ``L T F`` + MLPs (what an unpruned run's metrics.json
  reports);
- ``reachable``: HollowNeRF's count, table rows some point with ``m(x) > 0`` can reach
  (for an unpruned grid: rows any point reaches; dense coarse levels use fewer than T)
  + MLPs + the mask's non-zeros (a pruned run's ``num_params``);
- ``% ref``: reachable parameters relative to the unpruned grid at ``--reference`` (2^19).

Checkpoint sizes: the run's last checkpoint (compacted for pruned runs) and the same
state saved densely. The overhead of the mask and ADMM is the time per training step of
the pruned config over the unpruned one at the same T, measured in one process,
alternating, after compilation (the machine may be shared and noisy).

Measured (2-core CPU, no GPU; demo scene, full resolution, 1000 steps, 8 views unless a
row says otherwise; ``python benchmarks/pruning.py --overhead-steps 0 --root ROOT`` in
three invocations over one ROOT; one seed per row, training is deterministic; train s
includes compilation, and other jobs shared the machine during some runs, so compare
times with the clean figures at the end):

    run                  PSNR   allocated   reachable  % ref  ckpt MB dense MB  train s
    T2^19               24.81  16,782,611  10,034,931  100.0    193.6    193.6    151.9
    T2^18               25.07   8,394,003   5,522,237   55.0     97.6     97.6    129.9
    T2^17               25.23   4,199,699   3,013,293   30.0     49.6     49.6    110.6
    T2^16               25.49   2,102,547   1,630,999   16.3     25.6     25.6    117.0
    T2^15               25.68   1,053,971     868,723    8.7     13.6     13.6    105.6
    T2^19 s0.9          25.19  17,057,236   7,156,655   71.3     89.4    198.8    164.3
    T2^18 s0.9          25.36   8,668,628   4,135,721   41.2     54.4    102.8    147.7
    T2^17 s0.9          25.52   4,474,324   2,348,153   23.4     33.7     54.8    131.8
    T2^16 s0.9          25.66   2,377,172   1,319,687   13.2     21.8     30.8    136.8
    T2^15 s0.9          25.78   1,328,596     730,868    7.3     15.0     18.8    120.2

- The pruned curve dominates: every pruned grid is better than every unpruned grid with
  as many or more parameters. Against unpruned T = 2^19: +0.71 dB at 23% of its
  parameters (T = 2^17) and +0.55 dB at 41% (T = 2^18); at the same T a pruned grid gains
  0.10 to 0.38 dB with 15-29% fewer parameters.
- From 8 views a larger table is worse (the unpruned curve falls from 25.68 at 2^15 to
  24.81 dB at 2^19): the views do not constrain that many parameters. So the gain is not
  capacity won back from collisions. It comes from the mask fixing where the scene is:
  after the threshold the occupancy grid keeps only cells with ``m > 0`` (5.5% of the
  64^3 cells against 6.7% unpruned at T = 2^18), so floaters that grow later have no room
  and a step trains 15% more whole rays within the same sample budget (6,103 against
  5,315 rays, mean over steps 700-1000). On top of ``--preset fewshot``, whose priors
  already keep floaters out, the mask gains nothing (26.85 against 27.00 dB, T = 2^17).
- Sparsity 0.8, 0.9 and 0.95 at T = 2^18 all give 25.36 dB: the occupied cells' corners
  are 6.4% of the mask vertices at the threshold, so 0.8 and 0.9 keep the same set (the
  gate binds) and 0.95 (5%) trims a few.

From all 100 views (``-- --views 100``, same settings) larger tables help a little, and
pruning matches the large grid with 40% of its parameters but gains nothing:

    T2^19               30.44  16,782,611  10,034,931  100.0    193.6    193.6    152.6
    T2^18               30.42   8,394,003   5,522,237   55.0     97.6     97.6    132.7
    T2^17               30.30   4,199,699   3,013,293   30.0     49.6     49.6    116.0
    T2^18 s0.9          30.46   8,668,628   3,962,255   39.5     52.4    102.8    150.7
    T2^17 s0.9          30.34   4,474,324   2,264,583   22.6     32.7     54.8    136.2

With an occupancy grid the field is rarely evaluated in empty space, so the rows that
empty space shares with the surface cost little; 30% to 100% of the parameters spans
0.14 dB here.

Earlier, at ``--steps 300 --scale 0.5``: the ADMM projection and the hard threshold rank
only the corners of cells the occupancy grid holds occupied (``ADMMPruner.occupancy_gate``).
Ranking by ``m`` alone kept the vertices no ray ever sampled: the L1 pull moves all of them
at Adam's rate to one tied value, above the surface's, so 17% of the surface's vertices
survived and 90% sparsity lost 9 dB (14.78 / 15.18 dB); with the gate 98 to 100% survive.
A later ADMM phase (30% to 70% of the steps instead of 10% to 50%: it starts after the
occupancy grid's warm-up, and the threshold sees a grid that has shed its early floaters)
gained 0.16 dB at T = 2^17 and 0.21 dB at T = 2^18.

Step time (``--overhead-only``: T = 2^17, scale 0.5, ADMM phase, 3 x 32 steps each,
alternating): unpruned 106.4 ms, pruned 120.1 ms, +12.9%. Nearly all of it is the mask
itself (a 65^3 trilinear lookup and its gradient at every sample), not the ADMM updates:
mask alone 120.0 ms against 108.0 ms unpruned, in a separate A/B. Multiplying the first
layer's product instead of the features (`apply_mlp`'s ``scale``) took the mask from
124.5 to 120.0 ms in that A/B: XLA had recomputed ``m(x)`` inside each of the grid
backward's 128 per-corner products. Over a whole 1000-step run (8 views, full
resolution, in one process, nothing else running, timed in blocks of 100 steps): 119.5 s
unpruned against 132.5 s pruned, +10.9%; every block costs 1.1-1.3 s more (11%) and the
first also 1.2 s more compilation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train(out: Path, log2_t: int, sparsity: float | None, steps: int, scale: float, extra: list[str],
          phases: list[str] = ()) -> dict:
    pruned = [] if sparsity is None else ["--preset", "pruned", "pruner:admm-pruner", "--pruner.sparsity", str(sparsity)]
    if phases:
        pruned += ["--pruner.start", phases[0], "--pruner.end", phases[1]]
    cmd = [sys.executable, "-m", "sparsefield.launch", "train", "--steps", str(steps),
           "--scale", str(scale), "--out", str(out), "--eval-every", str(10 * steps),
           "--checkpoint-every", str(10 * steps), *extra,
           "field.encoding:hash", "--field.encoding.log2-table-size", str(log2_t), *pruned]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{out.name}: training failed\n{proc.stderr[-3000:]}")
    return {**json.loads((out / "metrics.json").read_text()), "wall_seconds": time.perf_counter() - t0}


def measure(out: Path) -> dict:
    """Parameter counts and checkpoint sizes of a finished run."""
    import numpy as np

    from sparsefield import checkpoints
    from sparsefield.fields import pruning
    from sparsefield.runs import load_run

    loaded = load_run(out)
    enc, saliency = loaded.config.field.encoding, loaded.config.field.saliency
    if saliency is None:
        live = np.ones((64, 64, 64), bool)
    else:
        live = pruning.live_cells(saliency, loaded.state["params"]["saliency"]["mask"])
    keep = pruning.reachable_rows(enc.spec, live)
    unpacked = {k: v for k, v in loaded.state.items() if k != "rows"}
    with tempfile.TemporaryDirectory() as tmp:
        dense = checkpoints.write(Path(tmp), loaded.step, checkpoints.named_arrays(unpacked), "nerf").stat().st_size
    return {
        "allocated": loaded.facts.get("num_params_dense", loaded.facts["num_params"]),
        "reachable": pruning.count_pruned_params(loaded.state["params"], keep, enc.features),
        "ckpt": checkpoints.list_checkpoints(out)[-1].stat().st_size, "ckpt_dense": dense,
    }


def step_overhead(log2_t: int, sparsity: float, steps: int, rounds: int) -> tuple[float, float]:
    """Seconds per training step, unpruned and pruned (ADMM phase, z / u updates included)."""
    import jax
    import numpy as np

    from sparsefield.config import PRESETS
    from sparsefield.datasets import load_scene, select_views
    from sparsefield.datasets.batches import make_ray_data
    from sparsefield.datasets.synthetic import demo_scene_path
    from sparsefield.methods.nerf import RadianceFieldMethod

    scene = load_scene(demo_scene_path(), scale=0.5)
    ids = scene.split("train")
    data = make_ray_data(scene, ids[select_views(np.asarray(scene.cameras.centers)[ids], n=8)])
    base = PRESETS["default"]
    base = dataclasses.replace(base, field=dataclasses.replace(
        base.field, encoding=dataclasses.replace(base.field.encoding, log2_table_size=log2_t)))
    pruned = dataclasses.replace(
        PRESETS["pruned"], field=dataclasses.replace(PRESETS["pruned"].field, encoding=base.field.encoding),
        pruner=dataclasses.replace(PRESETS["pruned"].pruner, sparsity=sparsity, start=0.0, end=1.0))
    setups = []
    for config in (base, pruned):
        config = dataclasses.replace(config, steps=10**6)
        method = RadianceFieldMethod(config, scene.bbox)
        state, step_fn = method.fresh(), method.train_step(0)
        for i in range(20):  # compile, and past the occupancy grid's warm-up
            state, m = step_fn(state, data, jax.random.PRNGKey(i))
        jax.block_until_ready(m)
        setups.append([step_fn, state])
    times = [0.0, 0.0]
    for r in range(rounds):
        for j, setup in enumerate(setups):
            t0 = time.perf_counter()
            for i in range(steps):
                setup[1], m = setup[0](setup[1], data, jax.random.PRNGKey(1000 + r * steps + i))
            jax.block_until_ready(m)
            times[j] += time.perf_counter() - t0
    return times[0] / (rounds * steps), times[1] / (rounds * steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--unpruned", type=int, nargs="*", default=[15, 16, 17, 18, 19])
    parser.add_argument("--pruned", nargs="*", default=["17:0.9", "15:0.9", "16:0.9", "18:0.9", "19:0.9"],
                        help="n:sparsity or n:sparsity:start:end (ADMM phases, fractions of the steps)")
    parser.add_argument("--reference", type=int, default=19)
    parser.add_argument("--overhead-steps", type=int, default=32, help="0: skip the step timing")
    parser.add_argument("--overhead-rounds", type=int, default=3)
    parser.add_argument("--overhead-only", action="store_true")
    parser.add_argument("--root", type=Path, default=None,
                        help="run folder (default: a new temporary one); runs already finished there are reused")
    parser.add_argument("extra", nargs="*", help="flags passed to every run (after --)")
    args = parser.parse_args()

    if not args.overhead_only:
        root = args.root or Path(tempfile.mkdtemp(prefix="sparsefield-pruning-"))
        flags = " ".join(args.extra) or "8 views"
        print(f"demo scene, {flags}, scale {args.scale}, {args.steps} steps; runs in {root}")
        print(f"{'run':18s} {'PSNR':>6s} {'allocated':>11s} {'reachable':>11s} {'% ref':>6s} "
              f"{'ckpt MB':>8s} {'dense MB':>8s} {'train s':>8s}")
        jobs = [(f"T2^{n}", n, None, []) for n in args.unpruned]
        for spec in args.pruned:  # n:s, or n:s:start:end for other ADMM phases than the defaults
            n, s, *phases = spec.split(":")
            jobs.append((f"T2^{n} s{s}" + (f" {phases[0]}-{phases[1]}" if phases else ""), int(n), float(s), phases))
        ref = None
        for name, n, sparsity, phases in sorted(jobs, key=lambda j: (j[2] is not None, j[1] != args.reference)):
            out = root / name.replace(" ", "_").replace("^", "")
            done = (out / "metrics.json").is_file()  # --root: a finished run is read back
            m = (json.loads((out / "metrics.json").read_text()) if done
                 else train(out, n, sparsity, args.steps, args.scale, args.extra, phases)) | measure(out)
            if m["steps"] != args.steps:
                raise SystemExit(f"{out}: trained for {m['steps']} steps, not --steps {args.steps}")
            if sparsity is None and n == args.reference:
                ref = m["reachable"]
            share = f"{100 * m['reachable'] / ref:6.1f}" if ref else f"{'-':>6s}"
            print(f"{name:18s} {m['psnr']:6.2f} {m['allocated']:11,d} {m['reachable']:11,d} {share} "
                  f"{m['ckpt'] / 2**20:8.1f} {m['ckpt_dense'] / 2**20:8.1f} {m['train_seconds']:8.1f}", flush=True)

    if args.overhead_steps <= 0:
        return
    n, s = args.pruned[0].split(":")[:2] if args.pruned else (str(args.reference), "0.8")
    plain, pruned = step_overhead(int(n), float(s), args.overhead_steps, args.overhead_rounds)
    print(f"step time at T = 2^{n}: unpruned {plain * 1e3:.1f} ms, pruned (ADMM phase) "
          f"{pruned * 1e3:.1f} ms: overhead {100 * (pruned / plain - 1):+.1f}%")


if __name__ == "__main__":
    main()
