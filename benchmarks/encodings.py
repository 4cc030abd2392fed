"""Grid encoding throughput: hash (cube), simplex and dense voxel grids side by side.

    python benchmarks/encodings.py                     # L=16, F=2, T=2^19, 2^17 points
    python benchmarks/encodings.py --points 65536 --rounds 5

For D = 2 and D = 3, every grid gets the same L, F and T (the voxel grid's finest level
is the largest dense one that fits: ``(N_max + 1)^D <= T``). Prints points/s forward
and forward+backward (gradient with respect to the table, as in training), the vertices
gathered per point and level ``V`` (``2^D`` cube, ``D + 1`` simplex), the table bytes a
point moves: ``L V F 4`` read forward, twice that again for the backward scatter-add
(read and write), and the distinct 64-byte table lines those gathers touch (measured on
the points: a CPU loads lines, not rows, and a cube's corner pairs along axis 0 share one). Timings interleave the encodings round by round and keep each one's
median, so the ratios compare like with like on a shared machine.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time


def encodings(dim: int, levels: int, features: int, log2_t: int, base_res: int, max_res: int) -> dict:
    """Hash, simplex and voxel grids with equal L, F and T."""
    from sparsefield.fields.grid import HashGrid
    from sparsefield.fields.simplex import SimplexGrid
    from sparsefield.fields.voxel import VoxelGrid

    common = dict(levels=levels, features=features, log2_table_size=log2_t, base_res=base_res,
                  max_res=max_res, dim=dim)
    dense_res = int(math.floor(2 ** (log2_t / dim) + 1e-9)) - 1
    voxel = VoxelGrid(levels=levels, features=features, base_res=min(base_res, dense_res),
                      max_res=dense_res, progressive_steps=(), dim=dim)
    return {"hash": HashGrid(**common), "simplex": SimplexGrid(**common), "voxel": voxel}


def vertices_per_level(name: str, dim: int) -> int:
    return dim + 1 if name == "simplex" else 2**dim


def cache_lines_per_point(enc, x, line_bytes: int = 64) -> float:
    """Distinct ``line_bytes`` table lines a point's gathers touch, summed over levels."""
    import numpy as np

    by_level = {}
    for level, row, _ in enc.spec.corners(x):
        lines = np.asarray(row, np.int64) * enc.features * 4 // line_bytes
        by_level.setdefault(level, []).append(lines)
    total = 0
    for lines in by_level.values():
        lines = np.sort(np.stack(lines, -1), -1)
        total += np.sum(1 + np.count_nonzero(np.diff(lines, axis=-1), axis=-1))
    return total / x.shape[0]


def bench(dim: int, args) -> list[dict]:
    """Median seconds per call of forward and forward+backward for each encoding."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    encs = encodings(dim, args.levels, args.features, args.log2_table_size, args.base_res, args.max_res)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(args.points, dim)), jnp.float32)
    fns = {}
    for name, enc in encs.items():
        params = enc.init(jax.random.PRNGKey(0))
        cot = jnp.asarray(rng.normal(size=(args.points, enc.out_dim)), jnp.float32)
        fwd = jax.jit(enc.apply)
        grad = jax.jit(jax.grad(lambda p, y, c, e=enc: jnp.sum(e.apply(p, y) * c)))
        fns[name] = (lambda f=fwd, p=params: f(p, x), lambda g=grad, p=params, c=cot: g(p, x, c))
        for f in fns[name]:
            jax.block_until_ready(f())
    times = {(name, k): [] for name in fns for k in range(2)}
    for _ in range(args.rounds):
        for name, pair in fns.items():
            for k, f in enumerate(pair):
                t0 = time.perf_counter()
                jax.block_until_ready(f())
                times[(name, k)].append(time.perf_counter() - t0)
    rows = []
    for name, enc in encs.items():
        v = vertices_per_level(name, dim)
        fwd_s, both_s = (float(np.median(times[(name, k)])) for k in range(2))
        rows.append({
            "dim": dim, "encoding": name, "levels": enc.levels, "features": enc.features,
            "table": int(enc.table_size), "vertices": v,
            "fwd_pts_s": args.points / fwd_s, "fwd_bwd_pts_s": args.points / both_s,
            "lines": cache_lines_per_point(enc, x[:4096]),
            "fwd_bytes": enc.levels * v * enc.features * 4,
            "bwd_bytes": 2 * enc.levels * v * enc.features * 4,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2**17, help="points per call")
    parser.add_argument("--rounds", type=int, default=7, help="timed calls per encoding (median)")
    parser.add_argument("--levels", type=int, default=16)
    parser.add_argument("--features", type=int, default=2)
    parser.add_argument("--log2-table-size", type=int, default=19)
    parser.add_argument("--base-res", type=int, default=16)
    parser.add_argument("--max-res", type=int, default=512)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3])
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sparsefield.launch import ensure_fast_malloc

    ensure_fast_malloc()
    rows = [row for dim in args.dims for row in bench(dim, args)]
    print(f"{args.points} points, L={args.levels}, F={args.features}, T=2^{args.log2_table_size}, "
          f"allocator: {os.environ.get('LD_PRELOAD') or 'system'}")
    print(f"{'D':>2s} {'encoding':9s} {'V':>3s} {'T':>8s} {'fwd Mpts/s':>11s} {'fwd+bwd Mpts/s':>15s} "
          f"{'fwd B/pt':>9s} {'bwd B/pt':>9s} {'lines/pt':>9s} {'fwd vs hash':>12s} {'fwd+bwd vs hash':>16s}")
    for row in rows:
        ref = next(r for r in rows if r["dim"] == row["dim"] and r["encoding"] == "hash")
        print(f"{row['dim']:2d} {row['encoding']:9s} {row['vertices']:3d} {row['table']:8d} "
              f"{row['fwd_pts_s'] / 1e6:11.2f} {row['fwd_bwd_pts_s'] / 1e6:15.2f} "
              f"{row['fwd_bytes']:9d} {row['bwd_bytes']:9d} {row['lines']:9.1f} "
              f"{row['fwd_pts_s'] / ref['fwd_pts_s']:11.2f}x {row['fwd_bwd_pts_s'] / ref['fwd_bwd_pts_s']:15.2f}x")


if __name__ == "__main__":
    main()
