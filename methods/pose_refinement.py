"""Training cameras refined with the scene (``--pose-refine``), for poses from structure
from motion: each training view gets a correction ``(w, v)`` in its own frame (rotation
``exp(w)``, translation ``v`` in box diagonals; `sparsefield.cameras.corrected_poses`),
trained with the field by the same optimiser at its own learning rate, as nerfstudio's
camera optimiser (SO3 x R3) and BARF refine poses. The corrections start at zero, so a
run with exact poses barely moves them.

The corrections are ``params["poses"] [V, 6]``, one row per training view in the order of
``TrainViews.ids``; the rays a step draws are moved by their view's row (`refined_rays`).

Moving every camera by one similarity motion of the world changes no training image's fit, so
left free the corrections drift together and the test cameras, which are not refined, no
longer meet the scene (one run on 21 recovered views: 15.8 dB on the test views against
24.4 dB unrefined). The rays use the corrections with their common rigid motion
projected out (`without_common_motion`): the scene stays in the frame the poses came in.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..cameras import so3_exp


@dataclasses.dataclass(frozen=True)
class PoseRefinement:
    """Refine the training cameras' poses with the scene."""

    lr: float = 1e-3
    """Peak learning rate of the corrections (radians, and box diagonals for the
    translation); it follows the field's warm-up and decay."""


def refined_rays(
    deltas: Float[Array, "V 6"],
    view: Int[Array, " R"],
    c2w: Float[Array, "V 3 4"],
    origins: Float[Array, "R 3"],
    directions: Float[Array, "R 3"],
    scale: float,
) -> tuple[Float[Array, "R 3"], Float[Array, "R 3"]]:
    """Rays of views ``view`` moved with their cameras: for ``c2w = [R | c]`` and the
    correction ``(w, v)``, ``d' = R exp(w) R^T d`` and ``o' = o + R (scale v)`` (the
    rays of ``corrected_poses``)."""
    rot = c2w[view, :, :3]
    delta = deltas[view]
    local = jnp.einsum("rji,rj->ri", rot, directions)  # R^T d
    turned = jnp.einsum("rij,rj->ri", so3_exp(delta[:, :3]), local)
    new_dirs = jnp.einsum("rij,rj->ri", rot, turned)
    new_origins = origins + jnp.einsum("rij,rj->ri", rot, scale * delta[:, 3:])
    return new_origins, new_dirs


def common_motion_basis(c2w: Float[Array, "V 3 4"], scale: float) -> Float[Array, "V*6 7"]:
    """``J``: the corrections ``[V * 6]`` that a small similarity motion of the world,
    rotation ``W``, translation ``T`` and growth ``s`` (about the origin), gives the
    cameras, ``J (W, T, s)``: in camera ``i`` with ``c2w = [R | c]``, ``w_i = R^T W`` and
    ``v_i = R^T (W x c + T + s c) / scale``. (Growth is a motion too: the field can shrink
    with the cameras.)"""
    rot, centre = c2w[:, :, :3], c2w[:, :, 3]
    rt = jnp.swapaxes(rot, -1, -2)
    x, y, z = centre[:, 0], centre[:, 1], centre[:, 2]
    zero = jnp.zeros_like(x)
    minus_cross = jnp.stack([jnp.stack([zero, z, -y], -1), jnp.stack([-z, zero, x], -1),
                             jnp.stack([y, -x, zero], -1)], -2)  # -[c]x: W x c = -[c]x W
    top = jnp.concatenate([rt, jnp.zeros_like(rt)], axis=-1)
    grow = jnp.concatenate([jnp.zeros_like(centre), jnp.einsum("vij,vj->vi", rt, centre) / scale], axis=-1)
    bottom = jnp.concatenate([rt @ minus_cross, rt], axis=-1) / scale
    return jnp.concatenate([jnp.concatenate([top, bottom], axis=-2), grow[:, :, None]], axis=-1).reshape(-1, 7)


def without_common_motion(deltas: Float[Array, "V 6"], c2w: Float[Array, "V 3 4"], scale: float) -> Float[Array, "V 6"]:
    """``deltas`` less their least-squares common motion of the world (`common_motion_basis`),
    a linear projection, so the gradient has no part along it either. Unchanged with
    fewer than three cameras (the motion is not separable from the corrections)."""
    if deltas.shape[0] < 3:
        return deltas
    basis = common_motion_basis(c2w, scale)
    flat = deltas.reshape(-1)
    motion = jnp.linalg.solve(basis.T @ basis + 1e-9 * jnp.eye(7), basis.T @ flat)
    return (flat - basis @ motion).reshape(deltas.shape)


def correction_summary(deltas: np.ndarray) -> str:
    """One line: how far the refinement moved the training cameras."""
    deltas = np.asarray(deltas, np.float64)
    angles = np.degrees(np.linalg.norm(deltas[:, :3], axis=-1))
    shifts = np.linalg.norm(deltas[:, 3:], axis=-1)
    return (f"pose refinement: the {len(deltas)} training cameras turned {angles.mean():.3f} degrees on average "
            f"(most {angles.max():.3f}) and moved {shifts.mean():.3%} of the box diagonal")
