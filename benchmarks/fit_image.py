"""2D image fitting, hash (cube) grid against simplex grid: time to reach a fixed PSNR.

    python benchmarks/fit_image.py                           # 2048^2 astronaut, 36 dB
    python benchmarks/fit_image.py --size 4096 --psnr 38 --max-steps 1000

The image is scikit-image's astronaut (512^2, shipped with the package, nothing
downloaded) upscaled bicubically to ``size^2``. Each encoding (equal L, F, T, same MLP:
equal parameter count) feeds a small MLP ``(x, y) -> rgb``; Adam fits random pixel
batches. The two models train in lockstep, one step each in turn, and only their own
steps are timed, so load from other work on a shared machine hits both alike. Every
``--eval-every`` steps each model's PSNR on a fixed set of pixels is checked; a model
stops when it reaches ``--psnr``. Prints the steps and train seconds each needed and the
hash / simplex time ratio (Wen et al. report 9.4% less time for the simplex grid on
gigapixel images with their CUDA kernels).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def load_image(size: int):
    """Astronaut upscaled to ``[size, size, 3]`` float32 in [0, 1]."""
    import numpy as np
    import skimage.data
    import skimage.transform

    image = skimage.data.astronaut().astype(np.float32) / 255.0
    return np.clip(skimage.transform.resize(image, (size, size), order=3), 0.0, 1.0).astype(np.float32)


def make_model(enc, hidden: int, layers: int):
    """``init(key) -> params`` and ``predict(params, x[N, 2]) -> rgb[N, 3]``."""
    import jax

    from sparsefield.fields.mlp import apply_mlp, init_mlp

    def init(key):
        k_enc, k_mlp = jax.random.split(key)
        return {"encoding": enc.init(k_enc), "mlp": init_mlp(k_mlp, [enc.out_dim] + [hidden] * layers + [3])}

    def predict(params, x):
        return jax.nn.sigmoid(apply_mlp(params["mlp"], enc.apply(params["encoding"], x)))

    return init, predict


def make_step(predict, image, batch: int, lr: float):
    """Jitted Adam step on ``batch`` random pixels (key from the step counter)."""
    import jax
    import jax.numpy as jnp
    import optax

    size = image.shape[0]
    pixels = jnp.asarray(image.reshape(-1, 3))
    opt = optax.adam(lr, b1=0.9, b2=0.99, eps=1e-15)

    def loss_fn(params, idx):
        xy = jnp.stack([idx % size, idx // size], -1).astype(jnp.float32)
        x = (xy + 0.5) / size
        return jnp.mean(jnp.square(predict(params, x) - pixels[idx]))

    @jax.jit
    def step(params, opt_state, key):
        idx = jax.random.randint(key, (batch,), 0, size * size)
        loss, grads = jax.value_and_grad(loss_fn)(params, idx)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return opt, step


def make_psnr(predict, image, n_eval: int):
    """PSNR on a fixed random set of ``n_eval`` pixels (chunked)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    size = image.shape[0]
    idx = np.random.default_rng(123).choice(size * size, n_eval, replace=False)
    x = jnp.asarray(np.stack([idx % size, idx // size], -1).astype(np.float32) + 0.5) / size
    target = jnp.asarray(image.reshape(-1, 3)[idx])
    pred = jax.jit(predict)

    def psnr(params):
        chunks = [pred(params, x[i : i + 2**16]) for i in range(0, n_eval, 2**16)]
        mse = float(jnp.mean(jnp.square(jnp.concatenate(chunks) - target)))
        return -10.0 * np.log10(mse)

    return psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels")
    parser.add_argument("--psnr", type=float, default=36.0, help="target PSNR (dB)")
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2**18, help="pixels per step")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--levels", type=int, default=16)
    parser.add_argument("--features", type=int, default=2)
    parser.add_argument("--log2-table-size", type=int, default=19)
    parser.add_argument("--base-res", type=int, default=16)
    parser.add_argument("--max-res", type=int, default=None, help="finest N_max (default: size / 2)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--eval-pixels", type=int, default=2**18)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sparsefield.launch import ensure_fast_malloc

    ensure_fast_malloc()
    import jax

    from sparsefield.fields.field import count_params
    from sparsefield.fields.grid import HashGrid
    from sparsefield.fields.simplex import SimplexGrid

    image = load_image(args.size)
    grid = dict(levels=args.levels, features=args.features, log2_table_size=args.log2_table_size,
                base_res=args.base_res, max_res=args.max_res or args.size // 2, dim=2)
    runs = {}
    for name, cls in (("hash", HashGrid), ("simplex", SimplexGrid)):
        init, predict = make_model(cls(**grid), args.hidden, args.layers)
        opt, step = make_step(predict, image, args.batch, args.lr)
        params = init(jax.random.PRNGKey(0))
        opt_state = opt.init(params)
        jax.block_until_ready(step(params, opt_state, jax.random.PRNGKey(99)))  # compile
        runs[name] = dict(params=params, opt_state=opt_state, step=step, psnr=make_psnr(predict, image, args.eval_pixels),
                          seconds=0.0, done=None, n_params=count_params(params), curve=[])
    base = jax.random.PRNGKey(1)
    for i in range(args.max_steps):
        for name, run in runs.items():
            if run["done"] is not None:
                continue
            t0 = time.perf_counter()
            run["params"], run["opt_state"], loss = run["step"](run["params"], run["opt_state"], jax.random.fold_in(base, i))
            jax.block_until_ready(loss)
            run["seconds"] += time.perf_counter() - t0
            if (i + 1) % args.eval_every == 0:
                value = run["psnr"](run["params"])
                run["curve"].append((i + 1, run["seconds"], value))
                if value >= args.psnr:
                    run["done"] = (i + 1, run["seconds"], value)
        if all(run["done"] is not None for run in runs.values()):
            break

    print(f"image {args.size}x{args.size}, target {args.psnr} dB, L={args.levels}, F={args.features}, "
          f"T=2^{args.log2_table_size}, N_max={grid['max_res']}, batch {args.batch}")
    for name, run in runs.items():
        curve = ", ".join(f"{s}:{p:.1f}" for s, _, p in run["curve"][:: max(1, len(run['curve']) // 8)])
        if run["done"] is None:
            last = run["curve"][-1] if run["curve"] else (0, run["seconds"], float("nan"))
            print(f"{name:8s} params {run['n_params']:,}: not reached in {last[0]} steps "
                  f"({last[1]:.1f} s, {last[2]:.2f} dB)  [{curve}]")
        else:
            steps, seconds, value = run["done"]
            print(f"{name:8s} params {run['n_params']:,}: {value:.2f} dB after {steps} steps, "
                  f"{seconds:.1f} s ({seconds / steps * 1e3:.0f} ms/step)  [{curve}]")
    if all(run["done"] is not None for run in runs.values()):
        ratio = runs["simplex"]["done"][1] / runs["hash"]["done"][1]
        print(f"time to {args.psnr} dB, simplex / hash: {ratio:.2f} ({(1 - ratio) * 100:+.1f}% less time)")


if __name__ == "__main__":
    main()
