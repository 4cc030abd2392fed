"""Gaussian rasterizer speed: sparsefield's pure-JAX `rasterize` next to splax (JAX + Warp
kernels) on the same Gaussians and camera, forward and forward+backward, in one run.

    python benchmarks/splatting.py [--sizes 10000 50000 200000] [--repeats 3]

The rasterizer settings default to those ``--method splat`` trains with (8 x 8 tiles of
up to 1024 Gaussians); ``list overflow`` above 0 means entries were dropped, so the
image differs from splax's and the time is not comparable.

splax is optional and not a dependency (``pip install splax``; on a CPU-only machine
then ``pip uninstall jax-cuda12-plugin jax-cuda12-pjrt``, which it pulls in); without it
only sparsefield's timings are printed. sparsefield runs on all cores through XLA, splax's
Warp CPU kernels on about one. On a CPU splax needs two settings before use (its Warp
graph mode forced to NONE, and Warp's CPU blocks enabled), set here. splax must be
imported before scipy (it sets ``SCIPY_ARRAY_API``), so it is imported first.
"""

from __future__ import annotations

import argparse
import time

try:  # before anything imports scipy
    import warp

    _jax_callable = warp.jax_callable

    def _no_graph(*args, **kwargs):
        kwargs["graph_mode"] = warp.JaxCallableGraphMode.NONE
        return _jax_callable(*args, **kwargs)

    warp.jax_callable = _no_graph
    warp.config.enable_cpu_blocks = True
    import splax
except ImportError:
    splax = None

import jax
import jax.numpy as jnp
import numpy as np

from sparsefield.cameras import look_at, make_cameras
from sparsefield.renderers.splatting import SplatRenderConfig, rasterize

SH_C0 = 0.28209479177387814


def random_scene(n: int, seed: int = 0) -> dict:
    """``n`` Gaussians filling the cube [-1, 1]^3, sized to the mean spacing."""
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    spacing = 2.0 / n ** (1 / 3)
    return {
        "means": jax.random.uniform(k[0], (n, 3), minval=-1.0, maxval=1.0),
        "log_scales": jnp.log(0.4 * spacing) + 0.3 * jax.random.normal(k[1], (n, 3)),
        "quats": jax.random.normal(k[2], (n, 4)),
        "sh_dc": jax.random.uniform(k[3], (n, 1, 3), minval=-1.5, maxval=1.5),
        "logit_opacities": jax.random.normal(k[4], (n,)),
    }


def camera(size: int):
    cams = make_cameras(look_at([0.0, -3.5, 1.2], [0.0, 0.0, 0.0])[None], 0.69, size, size)
    return jax.tree_util.tree_map(jnp.asarray, cams)[0]


def ours(cam, config):
    bg = jnp.ones(3)

    def render(p):
        out = rasterize(p["means"], jnp.exp(p["log_scales"]), p["quats"], jax.nn.sigmoid(p["logit_opacities"]),
                        0.5 + SH_C0 * p["sh_dc"][:, 0], cam, bg, config)
        return out["rgb"], out["overflow"]

    return render


def theirs(cam):
    c2w = np.asarray(cam.c2w)
    w2v = np.diag([1.0, -1.0, -1.0]) @ c2w[:3, :3].T
    viewmat = np.eye(4, dtype=np.float32)
    viewmat[:3, :3], viewmat[:3, 3] = w2v, -w2v @ c2w[:3, 3]
    viewmat = jnp.asarray(viewmat)

    def render(p):
        img, _ = splax.render(p["means"], p["log_scales"], p["quats"], p["sh_dc"], p["logit_opacities"],
                              viewmat=viewmat, background=jnp.ones(3), img_shape=(cam.height, cam.width),
                              f=(float(cam.fx), float(cam.fy)), c=(float(cam.cx), float(cam.cy)))
        return img

    return render


def timed(fn, args, repeats: int) -> float:
    """Median wall time in ms of ``fn(*args)`` after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def bench(n: int, size: int, repeats: int, config: SplatRenderConfig) -> dict:
    cam, params = camera(size), random_scene(n)
    row = {"n": n}
    renderers = {"sparsefield": lambda p: ours(cam, config)(p)[0]}
    if splax is not None:
        renderers["splax"] = theirs(cam)
    images = {}
    for name, render in renderers.items():
        fwd = jax.jit(render)
        loss = jax.jit(jax.grad(lambda p, r=render: jnp.sum(r(p) * jnp.linspace(0.0, 1.0, 3))))
        row[f"{name}_fwd"] = timed(fwd, (params,), repeats)
        row[f"{name}_fwdbwd"] = timed(loss, (params,), repeats)
        images[name] = np.asarray(fwd(params))
    row["overflow"] = int(jax.jit(lambda p: ours(cam, config)(p)[1])(params))
    if "splax" in images:
        row["max_abs_diff"] = float(np.abs(images["sparsefield"] - np.clip(images["splax"], 0, None)).max())
        row["mean_abs_diff"] = float(np.abs(images["sparsefield"] - np.clip(images["splax"], 0, None)).mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--resolution", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile-size", type=int, default=8)
    parser.add_argument("--tile-capacity", type=int, default=1024)
    parser.add_argument("--pairs-per-gaussian", type=float, default=16.0)
    parser.add_argument("--tile-group", type=int, default=16,
                        help="tiles composited together (1 << 20: one group, every tile runs to the longest list)")
    args = parser.parse_args()
    config = SplatRenderConfig(tile_size=args.tile_size, tile_capacity=args.tile_capacity,
                               pairs_per_gaussian=args.pairs_per_gaussian, tile_group=args.tile_group)
    print(f"sparsefield {config}")
    print(f"{args.resolution}x{args.resolution}, median of {args.repeats}; ms (ratio sparsefield / splax)")
    for n in args.sizes:
        r = bench(n, args.resolution, args.repeats, config)
        line = f"N={n:>7,}  sparsefield fwd {r['sparsefield_fwd']:8.1f}  fwd+bwd {r['sparsefield_fwdbwd']:8.1f}"
        if splax is not None:
            line += (f"  | splax fwd {r['splax_fwd']:8.1f}  fwd+bwd {r['splax_fwdbwd']:8.1f}"
                     f"  | ratio fwd {r['sparsefield_fwd'] / r['splax_fwd']:.2f}"
                     f"  fwd+bwd {r['sparsefield_fwdbwd'] / r['splax_fwdbwd']:.2f}"
                     f"  | image diff max {r['max_abs_diff']:.3f} mean {r['mean_abs_diff']:.4f}")
        print(line + f"  | list overflow {r['overflow']}", flush=True)


if __name__ == "__main__":
    main()
