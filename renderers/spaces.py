"""Scene parameterisations beyond the bounded box: where samples go along a ray, and the
coordinates the occupancy grid and the field see.

The default (no parameterisation) marches the scene box in world space (`render.march`).
A parameterisation instead maps each ray to samples ``t [R, S]`` with interval lengths
``deltas`` (the distances compositing uses) and points ``x [R, S, 3]`` in its *parameter
space*, a box (`param_box`) the occupancy grid covers and the field normalises to
``[0, 1]^3``: the grid and the encodings live in that space, never in world space.

- `NDC` (forward-facing captures, NeRF appendix C): rays start on the near plane
  ``z = -n`` and are mapped to normalised device coordinates, where the infinite frustum
  becomes ``[-1, 1]^3`` and ``t' in [0, 1]`` runs from the near plane to infinity (samples
  uniform in ``t'`` are uniform in disparity).
- `Contraction` (mip-NeRF 360, Barron et al. 2022, eq. 10, with the L-inf norm so the
  contracted space is a cube the grid fills): with ``y = (x - c) / h`` the point relative
  to the inner box (the scene box, centre ``c``, half-size ``h``),
  ``contract(y) = y`` if ``|y|_inf <= 1`` else ``(2 - 1 / |y|_inf) y / |y|_inf``, and the
  parameter point is ``c + h contract(y)``: world coordinates inside the box, the rest
  of space squeezed into a shell out to twice its size. Samples are uniform in ``t``
  inside the box and uniform in disparity ``1 / t`` beyond it, out to ``far``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..cameras import intersect_box
from .samplers import sample_stratified


@dataclasses.dataclass(frozen=True)
class NDC:
    """Normalised device coordinates of one reference camera at the world origin looking
    down -Z (LLFF poses after recentring), as NeRF uses for forward-facing scenes."""

    near: float = 1.0
    """Near plane n: rays start at world ``z = -n`` (LLFF's scaled nearest depth is 1/0.75)."""
    focal_x: float = 0.0
    """Reference focal length over image width, ``f_x / W`` (0: taken from the scene's
    first camera when training starts)."""
    focal_y: float = 0.0
    """``f_y / H`` likewise."""
    margin: float = 0.25
    """The grid and field cover ``x, y`` in ``[-1 - margin, 1 + margin]``: other cameras
    see a little past the reference frustum."""

    def param_box(self, bbox) -> Float[Array, "2 3"]:
        """``[2, 3]`` box of NDC points the grid and field cover (``bbox`` is unused)."""
        m = 1.0 + self.margin
        return jnp.array([[-m, -m, -1.0], [m, m, 1.0]], jnp.float32)

    def rays(self, origins: Float[Array, "R 3"], directions: Float[Array, "R 3"]):
        """NeRF's ``ndc_rays``: origins moved to the near plane, then
        ``o' = (-a o_x / o_z, -b o_y / o_z, 1 + 2 n / o_z)``,
        ``d' = (-a (d_x / d_z - o_x / o_z), -b (d_y / d_z - o_y / o_z), -2 n / o_z)``
        with ``a = 2 f_x / W``, ``b = 2 f_y / H``."""
        dz = jnp.where(jnp.abs(directions[:, 2]) < 1e-6, -1e-6, directions[:, 2])
        t = -(self.near + origins[:, 2]) / dz
        o = origins + t[:, None] * directions
        ox, oy, oz = o[:, 0], o[:, 1], o[:, 2]
        a, b = 2.0 * self.focal_x, 2.0 * self.focal_y
        o_ndc = jnp.stack([-a * ox / oz, -b * oy / oz, 1.0 + 2.0 * self.near / oz], -1)
        d_ndc = jnp.stack([-a * (directions[:, 0] / dz - ox / oz), -b * (directions[:, 1] / dz - oy / oz),
                           -2.0 * self.near / oz], -1)
        return o_ndc, d_ndc

    def sample(self, origins, directions, num_samples: int, key, bbox):
        """Stratified samples of ``t'`` in ``[0, 1]``: ``t`` and ``deltas`` in NDC units
        (``deltas = |d'| / S``, NeRF's NDC distances), points in NDC."""
        o, d = self.rays(origins, directions)
        zeros = jnp.zeros(o.shape[0])
        t, width = sample_stratified(zeros, zeros + 1.0, num_samples, key)
        x = o[:, None, :] + t[..., None] * d[:, None, :]
        deltas = width * jnp.linalg.norm(d, axis=-1, keepdims=True)
        return t, deltas, x, directions[:, 2] < 0

    def distortion_coords(self, t, deltas, diagonal: float):
        """``t'`` is already normalised to [0, 1]; its bins are ``1 / S`` wide."""
        return t, jnp.full_like(t, 1.0 / t.shape[-1])

    def density_scale(self, x, bbox) -> Array:
        """NDC densities are per NDC length already."""
        return jnp.ones(x.shape[:-1])


@dataclasses.dataclass(frozen=True)
class Contraction:
    """mip-NeRF 360's scene contraction around the scene box (L-inf norm), for
    unbounded scenes; the scene box must hold the cameras."""

    far: float = 1000.0
    """Farthest sample, in half-sizes of the scene box."""
    inner_fraction: float = 0.5
    """Share of the samples inside the box (uniform in t); the rest are uniform in
    disparity from the box's exit to ``far``."""

    def param_box(self, bbox) -> Float[Array, "2 3"]:
        """``[2, 3]``: the scene box grown to twice its size about its centre."""
        lo, hi = jnp.asarray(bbox[0], jnp.float32), jnp.asarray(bbox[1], jnp.float32)
        c, h = (lo + hi) / 2, (hi - lo) / 2
        return jnp.stack([c - 2 * h, c + 2 * h])

    def contract(self, x: Float[Array, "... 3"], bbox) -> Float[Array, "... 3"]:
        """World points -> parameter points (identity inside the scene box)."""
        lo, hi = jnp.asarray(bbox[0]), jnp.asarray(bbox[1])
        c, h = (lo + hi) / 2, (hi - lo) / 2
        y = (x - c) / h
        n = jnp.maximum(jnp.max(jnp.abs(y), axis=-1, keepdims=True), 1e-9)
        y = jnp.where(n <= 1.0, y, (2.0 - 1.0 / n) * y / n)
        return c + h * y

    def sample(self, origins, directions, num_samples: int, key, bbox):
        """``t`` and ``deltas`` in world units (bin widths), points contracted."""
        lo, hi = jnp.asarray(bbox[0]), jnp.asarray(bbox[1])
        t_in, t_out, hit = intersect_box(origins, directions, lo, hi)
        t_out = jnp.maximum(t_out, 1e-3)
        far = self.far * jnp.max(hi - lo) / 2
        n_in = max(1, int(round(num_samples * self.inner_fraction)))
        n_out = num_samples - n_in
        keys = (None, None) if key is None else _split_keys(key)
        t1, w1 = sample_stratified(jnp.where(hit, t_in, t_out), t_out, n_in, keys[0])
        s, ws = sample_stratified(1.0 / t_out, jnp.full_like(t_out, 1.0 / far), n_out, keys[1])
        # disparity bins [1/t_out + i ws, 1/t_out + (i + 1) ws] (ws < 0) as t intervals
        edges = 1.0 / jnp.maximum(1.0 / t_out[:, None] + jnp.arange(n_out + 1) * ws[:, :1], 1.0 / far)
        t = jnp.concatenate([t1, 1.0 / s], axis=-1)
        deltas = jnp.concatenate([w1, jnp.diff(edges, axis=-1)], axis=-1)
        x = self.contract(origins[:, None, :] + t[..., None] * directions[:, None, :], bbox)
        return t, deltas, x, jnp.ones_like(hit)

    def distortion_coords(self, t, deltas, diagonal: float):
        """mip-NeRF 360's normalised ray coordinate ``s = g(t)`` with a ray-independent
        ``g(t) = t / (t + r)`` (``r``: the box diagonal): linear near the cameras, bounded
        far away, so far-away intervals do not dominate the distortion loss."""
        return t / (t + diagonal), deltas * diagonal / (t + diagonal) ** 2

    def density_scale(self, x_param: Float[Array, "... 3"], bbox) -> Array:
        """World length per parameter length at ``x_param`` (radially ``|y|^2`` outside the
        box): turns densities into per-parameter-length values for the grid's threshold."""
        lo, hi = jnp.asarray(bbox[0]), jnp.asarray(bbox[1])
        m = jnp.max(jnp.abs((x_param - (lo + hi) / 2) / ((hi - lo) / 2)), axis=-1)
        return jnp.where(m <= 1.0, 1.0, 1.0 / jnp.maximum(2.0 - m, 1e-3) ** 2)


def _split_keys(key):
    """Two independent keys from one key or one key per ray (``[R, 2]``)."""
    if jnp.ndim(key) == 2:
        k = jax.vmap(lambda k: jax.random.split(k))(key)
        return k[:, 0], k[:, 1]
    return tuple(jax.random.split(key))
