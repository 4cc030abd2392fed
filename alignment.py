"""Test cameras aligned to their images before scoring (``sparsefield eval --align-poses``).

Where poses come from structure from motion (`sparsefield poses`), the test views' poses
carry the same error as the training views': a 0.4 degree rotation moves a 555 px focal
length image by about 4 px, and PSNR punishes the shift whether or not the scene is right.
Methods that recover or refine poses (BARF, NeRFmm, nerfstudio's camera optimiser) score
each test view after optimising its pose against its image with the scene frozen; this
module does that for every method that renders pixels differentiably
(`sparsefield.methods.base.Method.pixel_renderer`).

Each camera gets a correction ``delta = (w, v)`` in its own frame (`corrected_poses`:
rotation ``exp(w)``, translation ``v`` in units of the scene box diagonal), fitted by
L-BFGS (optax's, with its zoom line search) to the mean squared colour error of a fixed
random set of the image's pixels. A camera's rotation and a sideways move shift the image
alike, so the error has a long narrow valley; plain Adam crawled along it (1 degree of
error left 0.2 degrees after 300 steps on a test scene), L-BFGS reaches the bottom in about
20 iterations.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .cameras import Cameras, corrected_poses
from .errors import UsageError


@dataclasses.dataclass(frozen=True)
class PoseAlignment:
    """Photometric alignment of a test camera to its image (the scene frozen)."""

    steps: int = 40
    """L-BFGS iterations per camera (each one or a few renders of the pixels)."""
    pixels: int = 8192
    """Pixels of the image the error is measured on (drawn once per camera, favouring
    the ones with colour gradient: `pick_pixels`)."""
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Alignment:
    """What aligning one camera found: the corrected camera, its rotation in degrees and
    its centre's move (in box diagonals), and the colour error before and after."""

    camera: Cameras
    rotation_deg: float
    shift: float
    mse_before: float
    mse_after: float


def align_cameras(method, state: dict, cameras: Cameras, images: np.ndarray, background,
                  config: PoseAlignment) -> list[Alignment]:
    """Each of ``cameras`` aligned to its image in ``images [C, H, W, 3]`` (`PoseAlignment`).

    Raises:
        UsageError: the method cannot render pixels differentiably.
    """
    render = method.pixel_renderer(state)
    if render is None:
        raise UsageError(f"--align-poses: method {method.name!r} has no differentiable pixel renderer")
    scale = float(np.linalg.norm(method.bbox[1] - method.bbox[0]))
    fit, error = make_fit(render, scale, config.steps)
    background = jnp.asarray(background, jnp.float32)
    out = []
    for k in range(len(cameras)):
        camera = jax.tree_util.tree_map(jnp.asarray, cameras[k])
        height, width = np.shape(images[k])[:2]
        pick = pick_pixels(np.asarray(images[k], np.float32), config.pixels, config.seed + k)
        pixels = (jnp.asarray(pick % width), jnp.asarray(pick // width))
        target = jnp.asarray(images[k], jnp.float32)[pixels[1], pixels[0]]
        scene = (state, camera, pixels, target, background)
        before = float(error(jnp.zeros(6, jnp.float32), *scene))
        delta = fit(*scene)
        after = float(error(delta, *scene))
        fixed = dataclasses.replace(camera, c2w=corrected_poses(camera.c2w, delta, scale))
        delta = np.asarray(delta, np.float64)
        out.append(Alignment(fixed, float(np.degrees(np.linalg.norm(delta[:3]))), float(np.linalg.norm(delta[3:])),
                             before, after))
    return out


def pick_pixels(image: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` distinct flat pixel indices of ``image [H, W, 3]``, drawn in proportion to
    the colour gradient's magnitude plus its mean (as direct visual odometry keeps the
    pixels with gradient): flat regions, such as a plain background, say little about
    the pose."""
    gy, gx = np.gradient(image.mean(axis=-1))
    weight = np.hypot(gx, gy).ravel()
    weight = weight + weight.mean() + 1e-12
    count = min(count, weight.size)
    return np.random.default_rng(seed).choice(weight.size, count, replace=False, p=weight / weight.sum())


def make_fit(render, scale: float, steps: int):
    """Jitted ``fit(state, camera, pixels, target, background) -> delta`` (``steps``
    L-BFGS iterations from zero) and ``error(delta, state, camera, pixels, target,
    background)``, the colour error it minimises."""
    # Line searches start from the quasi-Newton step and give up after a few tries: near
    # the bottom, a radiance field's error is rough at the scale of a sample spacing, and
    # optax's default (15 tries, from the last step size) spent most of the time there.
    linesearch = optax.scale_by_zoom_linesearch(max_linesearch_steps=6, initial_guess_strategy="one")
    optimizer = optax.lbfgs(linesearch=linesearch)

    def error(delta, state, camera, pixels, target, background):
        moved = dataclasses.replace(camera, c2w=corrected_poses(camera.c2w, delta, scale))
        rgb, valid = render(state, moved, pixels[0], pixels[1], background)
        keep = valid.astype(jnp.float32)
        return jnp.sum(jnp.mean((rgb - target) ** 2, axis=-1) * keep) / jnp.maximum(jnp.sum(keep), 1.0)

    @jax.jit
    def fit(*scene):
        value_fn = lambda d: error(d, *scene)  # noqa: E731
        value_and_grad = optax.value_and_grad_from_state(value_fn)

        def iteration(_, carry):
            delta, opt_state = carry
            value, grad = value_and_grad(delta, state=opt_state)
            updates, opt_state = optimizer.update(grad, opt_state, delta, value=value, grad=grad, value_fn=value_fn)
            return optax.apply_updates(delta, updates), opt_state

        delta = jnp.zeros(6, jnp.float32)
        return jax.lax.fori_loop(0, steps, iteration, (delta, optimizer.init(delta)))[0]

    return fit, jax.jit(error)
