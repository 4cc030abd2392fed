"""Sample placement along rays and packing of the samples worth evaluating.

Samples are fixed-size ``[R, S]`` per ray inside the scene box; an occupancy test marks
the ones worth evaluating, and `pack_samples` moves them into a fixed-budget buffer of
``K`` entries (``jnp.nonzero(..., size=K)``) so the field runs on ``K`` points instead of
``R * S``. Rays whose samples do not all fit in the budget are reported incomplete; the
train step drops them, which keeps the gradient unbiased because rays are in random order
(Instant-NGP's dynamic batch, with static shapes).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


def sample_stratified(
    t_near: Float[Array, " R"],
    t_far: Float[Array, " R"],
    num_samples: int,
    key: jax.Array | None,
) -> tuple[Float[Array, "R S"], Float[Array, "R S"]]:
    """``S`` samples in equal bins of ``[t_near, t_far]``, one per bin.

    ``t_i = t_near + (i + u) (t_far - t_near) / S`` with one offset ``u ~ U[0, 1)`` per
    ray when ``key`` is given (training) and ``u = 1/2`` otherwise (bin midpoints,
    deterministic). Every sample is still uniform within its bin; sharing the offset
    along a ray (as Instant-NGP and nerfacc march) draws ``R`` numbers instead of
    ``R * S``: per-sample offsets cost 5% of a training step on a 2-core CPU.
    ``key`` may also be one key per ray (``[R, 2]``): each ray's draw then depends on its
    own key only, not on how the rays are batched or sharded over devices.

    Returns:
        sample distances ``t [R, S]`` and interval lengths ``delta [R, S]`` (the bin width).
    """
    shape = (t_near.shape[0], num_samples)
    if key is None:
        u = 0.5
    elif jnp.ndim(key) == 2:
        u = jax.vmap(lambda k: jax.random.uniform(k, (1,)))(key)
    else:
        u = jax.random.uniform(key, (shape[0], 1))
    width = (t_far - t_near) / num_samples
    t = t_near[:, None] + (jnp.arange(num_samples) + u) * width[:, None]
    return t, jnp.broadcast_to(width[:, None], shape)


@dataclasses.dataclass(frozen=True)
class SampleAnnealing:
    """RegNeRF's sample-space annealing (Niemeyer et al., CVPR 2022, sec. 3.3): early in
    training the samples of each ray lie in a short range around its midpoint, which then
    grows to the full ray, so geometry starts at the scene centre instead of as floaters
    in front of the cameras.

    With ray bounds ``t_n, t_f`` (here the ray's entry and exit of the scene box),
    midpoint ``t_m = t_n + mid (t_f - t_n)`` and training step ``i``:
    ``t_n(i) = t_m - (t_m - t_n) eta(i)``, ``t_f(i) = t_m + (t_f - t_m) eta(i)``,
    ``eta(i) = min(max(i / N_t, p_s), 1)``.
    """

    steps: int = 256
    """N_t: steps until the full range is used (RegNeRF's configs: 256)."""
    start: float = 0.5
    """p_s: share of the range used at step 0."""
    mid: float = 0.5
    """Position of the midpoint t_m within [t_n, t_f] (RegNeRF: 0.5)."""

    def eta(self, step) -> Float[Array, ""]:
        """``eta(i) = min(max(i / N_t, p_s), 1)``."""
        frac = jnp.asarray(step, jnp.float32) / max(self.steps, 1)
        return jnp.clip(frac, self.start, 1.0)

    def bounds(
        self, t_near: Float[Array, " R"], t_far: Float[Array, " R"], step
    ) -> tuple[Float[Array, " R"], Float[Array, " R"]]:
        """The annealed ray bounds ``(t_n(i), t_f(i))``."""
        eta = self.eta(step)
        t_mid = t_near + self.mid * (t_far - t_near)
        return t_mid - (t_mid - t_near) * eta, t_mid + (t_far - t_mid) * eta


def pack_samples(
    mask: Bool[Array, "R S"], budget: int
) -> tuple[Int[Array, " K"], Bool[Array, " K"], Bool[Array, " R"]]:
    """Flat indices of the first ``budget`` True entries of ``mask`` (row-major).

    Each marked sample's slot is its ray's offset (an exclusive prefix sum of the counts
    per ray) plus its rank within the ray; the rank is a product with a triangular
    matrix of ones, which a CPU runs several times faster than the flat prefix sum of
    ``jnp.nonzero`` over ``R * S`` entries (exact: counts stay far below 2^24).

    Returns:
        ``index [K]`` into ``mask.ravel()`` (0 where unused), ``valid [K]``, and
        ``complete [R]``: True for rays all of whose marked samples got a slot.
    """
    num_rays, num_samples = mask.shape
    upper = jnp.triu(jnp.ones((num_samples, num_samples), jnp.float32))
    rank = (mask.astype(jnp.float32) @ upper).astype(jnp.int32)  # inclusive count along the ray
    counts = rank[:, -1]
    ends = jnp.cumsum(counts)  # marked samples up to and including ray r
    slot = jnp.where(mask, (ends - counts)[:, None] + rank - 1, budget)
    flat = jnp.arange(num_rays * num_samples, dtype=jnp.int32)
    index = jnp.zeros(budget, jnp.int32).at[slot.ravel()].set(flat, mode="drop", unique_indices=True)
    valid = jnp.arange(budget) < ends[-1]
    return index, valid, ends <= budget


def unpack(values: Array, index: Int[Array, " K"], valid: Bool[Array, " K"], shape) -> Array:
    """Scatter packed values ``[K, ...]`` back into a dense zero array ``[*shape, ...]``."""
    trailing = values.shape[1:]
    size = 1
    for n in shape:
        size *= n
    values = jnp.where(valid.reshape((-1,) + (1,) * len(trailing)), values, 0)
    dense = jnp.zeros((size,) + trailing, values.dtype).at[index].add(values)
    return dense.reshape(tuple(shape) + trailing)
