"""Adaptive density control of 3D Gaussian splatting (Kerbl et al. 2023, sec. 5.2) as a
pure strategy that runs outside jit.

The train step accumulates, per Gaussian, the norm of the loss gradient with respect to
its projected mean (the view-space positional gradient) and how often it was visible
(`accumulate`, inside jit). Every ``every`` steps `DensifyStrategy.update`:

- clones small Gaussians (largest scale <= ``percent_dense`` x scene extent) whose mean
  gradient exceeds ``grad_threshold`` (under-reconstruction),
- splits large ones above the threshold into two, drawn from the Gaussian itself, with
  scales divided by 1.6 (over-reconstruction),
- prunes the transparent (opacity < ``min_opacity``), the oversized, and those the
  caller marks in ``info["outside"]`` (means outside the visual hull of the training
  masks),
- and every ``reset_every`` steps clamps opacities to ``reset_opacity`` (so floaters
  that stay transparent are pruned next).

New Gaussians take free slots of the power-of-two capacity; when none are left the
capacity doubles (up to the config's maximum). Optimizer moments follow their Gaussians:
every optimizer-state array whose leading dimension is the capacity is re-indexed the
same way, with zeros for new and reset entries.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .splatting import quat_to_rotmat


@dataclasses.dataclass(frozen=True)
class DensifyConfig:
    """3DGS densification schedule and thresholds (its defaults, scaled to short runs)."""

    start: int = 100
    """First step that densifies (3DGS: 500)."""
    stop: float = 0.5
    """No densification after this fraction of the run's steps (3DGS: 15000 of 30000);
    the Gaussians settle in the rest."""
    every: int = 100
    """Steps between densifications (3DGS: 100)."""
    grad_threshold: float = 2e-4
    """tau_pos: mean view-space gradient norm (in NDC units, as 3DGS) that densifies."""
    percent_dense: float = 0.01
    """Clone when the largest scale <= this x scene extent, else split."""
    min_opacity: float = 0.005
    """Prune below this opacity (epsilon_alpha)."""
    max_scale: float = 0.1
    """Prune Gaussians larger than this x scene extent."""
    reset_every: int = 600
    """Steps between opacity resets (3DGS: 3000)."""
    reset_opacity: float = 0.01
    """Opacities are clamped to this at a reset."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DensifyState:
    """``grad_sum [N]``: summed view-space gradient norms; ``count [N]``: times visible."""

    grad_sum: jax.Array
    count: jax.Array


def accumulate(state: DensifyState, grad2d, visible, scale: float) -> DensifyState:
    """Add one view's positional gradient norms (times ``scale``, pixels -> NDC: W / 2)."""
    norm = jnp.linalg.norm(grad2d, axis=-1) * scale
    return DensifyState(state.grad_sum + jnp.where(visible, norm, 0.0), state.count + visible)


def reindex(tree, n: int, source: np.ndarray, fresh: np.ndarray):
    """Gather the rows ``source [M]`` of every array in ``tree`` with leading dim ``n``,
    zeroing the rows where ``fresh [M]`` (new or reset entries' optimizer moments)."""
    def one(x):
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] != n:
            return x
        out = x[source].copy()
        out[fresh] = 0
        return out
    return jax.tree_util.tree_map(one, tree)


@dataclasses.dataclass(frozen=True)
class DensifyStrategy:
    """The strategy for a run of ``steps`` steps: ``init(n) -> state``;
    ``update(params, opt_state, state, step, info) -> (params, opt_state, state)`` with ``info = {"alive", "extent", "max_capacity",
    "key"}`` and optionally ``"outside" [N]`` (Gaussians to prune regardless);
    ``update`` returns ``info["alive"]`` updated in place of the caller's."""

    config: DensifyConfig = DensifyConfig()
    steps: int = 0
    """The run's length (``stop`` is a fraction of it)."""

    def init(self, n: int) -> DensifyState:
        return DensifyState(jnp.zeros(n), jnp.zeros(n, jnp.int32))

    def due(self, step: int) -> bool:
        c = self.config
        return c.start <= step < c.stop * self.steps and step % c.every == 0

    def update(self, params, opt_state, state: DensifyState, step: int, info: dict):
        c = self.config
        p = {k: np.array(v) for k, v in params.items()}
        alive = np.array(info["alive"])
        n, extent = len(alive), info["extent"]
        avg = np.asarray(state.grad_sum) / np.maximum(np.asarray(state.count), 1)
        scales = np.exp(p["log_scales"]).max(-1)
        outside = np.asarray(info.get("outside", np.zeros(n, bool)))
        grow = alive & ~outside & (avg >= c.grad_threshold)
        clone = np.nonzero(grow & (scales <= c.percent_dense * extent))[0]
        split = np.nonzero(grow & (scales > c.percent_dense * extent))[0]
        opacity = 1.0 / (1.0 + np.exp(-p["logit_opacities"]))
        prune = alive & ((opacity < c.min_opacity) | (scales > c.max_scale * extent) | outside)
        prune[split] = False  # a split Gaussian is replaced in place
        alive = alive & ~prune
        parents = np.concatenate([clone, split])
        free = np.nonzero(~alive)[0]
        size = n
        while len(free) < len(parents) and size < info["max_capacity"]:
            size *= 2
            free = np.concatenate([free, np.arange(size // 2, size)])
        parents = parents[: len(free)]
        slots = free[: len(parents)]
        source = np.concatenate([np.arange(n), np.zeros(size - n, int)])
        source[slots] = parents
        fresh = np.zeros(size, bool)
        fresh[slots] = True
        fresh[split] = True
        p = reindex(p, n, source, np.zeros(size, bool))
        new_alive = np.concatenate([alive, np.zeros(size - n, bool)])
        new_alive[slots] = True
        self._split(p, split, slots[len(clone):][: len(split)], info["key"])
        if step % c.reset_every == 0:
            cap = np.log(c.reset_opacity / (1 - c.reset_opacity))
            p["logit_opacities"] = np.minimum(p["logit_opacities"], cap)
        opt_state = reindex(opt_state, n, source, fresh)
        params = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
        info["alive"] = jnp.asarray(new_alive)
        return params, jax.tree_util.tree_map(jnp.asarray, opt_state), self.init(size)

    @staticmethod
    def _split(p: dict, originals: np.ndarray, copies: np.ndarray, key: int) -> None:
        """Replace each original and its copy by two samples of the original Gaussian,
        scales / 1.6 (3DGS)."""
        if len(copies) == 0:
            return
        originals = originals[: len(copies)]
        rng = np.random.default_rng(key)
        rot = np.asarray(quat_to_rotmat(jnp.asarray(p["quats"][originals])))
        std = np.exp(p["log_scales"][originals])
        base = p["means"][originals].copy()
        for idx in (originals, copies):
            p["means"][idx] = base + np.einsum("nij,nj->ni", rot, rng.normal(size=std.shape) * std)
        for idx in (originals, copies):
            p["log_scales"][idx] = np.log(std / 1.6)
