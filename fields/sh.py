"""Real spherical harmonics of view directions, up to degree 4 (16 coefficients at
degree 4, as in Instant-NGP's direction encoding).

Constants follow the standard real SH basis (Sloan, "Stupid Spherical Harmonics Tricks").
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def spherical_harmonics(d: Float[Array, "... 3"], degree: int) -> Float[Array, "... K"]:
    """Real SH basis ``Y_lm(d)`` for ``l < degree`` (``K = degree^2``), d a unit vector."""
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    xx, yy, zz = x * x, y * y, z * z
    out = [jnp.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.94617469575755997 * zz - 0.31539156525251999,
            -1.0925484305920792 * x * z,
            0.54627421529603959 * (xx - yy),
        ]
    if degree > 3:
        out += [
            0.59004358992664352 * y * (-3.0 * xx + yy),
            2.8906114426405538 * x * y * z,
            0.45704579946446572 * y * (1.0 - 5.0 * zz),
            0.3731763325901154 * z * (5.0 * zz - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * zz),
            1.4453057213202769 * z * (xx - yy),
            0.59004358992664352 * x * (-xx + 3.0 * yy),
        ]
    if degree > 4:
        raise ValueError(f"spherical harmonics degree {degree} > 4 is not supported")
    return jnp.stack(out, axis=-1)


@dataclasses.dataclass(frozen=True)
class SphericalHarmonics:
    """Direction encoding by real spherical harmonics of ``degree`` bands."""

    degree: int = 4
    """Number of SH bands; out_dim = degree^2."""

    @property
    def out_dim(self) -> int:
        return self.degree**2

    def init(self, key: jax.Array) -> dict:
        del key
        return {}

    def apply(self, params: dict, x: Float[Array, "... 3"]) -> Float[Array, "... K"]:
        """``x = (d + 1) / 2`` in ``[0, 1]^3``, like every encoding's input."""
        del params
        return spherical_harmonics(2.0 * x - 1.0, self.degree)
