"""Photometric consistency across the training views through the rendered geometry: what
the views themselves say about depth, with no pretrained network (the idea behind
multi-view stereo, and the cross-view terms of sparse-view methods such as
Binocular3DGS and CoR-GS)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..cameras import project_jnp
from .base import ConstantWeight, LossInputs


def bilinear(image: Float[Array, "H W C"], uv: Float[Array, "N 2"]) -> Float[Array, "N C"]:
    """``image`` sampled at pixel coordinates ``uv`` (pixel centres at ``+0.5``), bilinear,
    clamped at the border; differentiable in ``uv``."""
    h, w = image.shape[:2]
    x = jnp.clip(uv[:, 0] - 0.5, 0.0, w - 1.0)
    y = jnp.clip(uv[:, 1] - 0.5, 0.0, h - 1.0)
    x0, y0 = jnp.floor(x), jnp.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


@dataclasses.dataclass(frozen=True)
class CrossViewConsistency(ConstantWeight):
    """Each training ray's surface point ``x = o + (D / O) d`` (rendered depth ``D`` over
    opacity ``O``) is projected into the other training views ``j``; the ray's target
    colour ``c`` should be what view ``j`` sees there:
    ``L = sum_r w_r min_j |I_j(pi_j(x_r)) - c_r|_1 / sum_r w_r``, ``w_r = O_r a_r`` (held
    constant; ``a_r`` the pixel's alpha where masks exist), over the views where ``x``
    lands in front of the camera and inside the image. The minimum over views ignores the
    views in which the point is occluded; the gradient reaches the geometry through the
    image gradients of ``I_j``, so it moves depth where the views have texture.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"views"})

    weight: float = 0.05
    """Loss weight."""
    min_opacity: float = 0.5
    """Rays less opaque than this are not on a surface: left out."""

    def __call__(self, inputs: LossInputs) -> Array:
        rays, batch, views = inputs.rays, inputs.batch, inputs.views
        opacity = jax.lax.stop_gradient(rays.opacity)
        distance = rays.depth / jnp.maximum(rays.opacity, 1e-3)
        points = batch["origins"] + distance[:, None] * batch["directions"]
        uv, depth = project_jnp(points, views.cameras)
        h, w = views.images.shape[1:3]
        colours = jax.vmap(bilinear, in_axes=(0, 1), out_axes=1)(views.images, uv)  # [R, V, 3]
        inside = (depth > 0) & (uv[..., 0] >= 0) & (uv[..., 0] <= w) & (uv[..., 1] >= 0) & (uv[..., 1] <= h)
        usable = inside & (jnp.arange(views.images.shape[0])[None, :] != batch["view"][:, None])
        error = jnp.mean(jnp.abs(colours - batch["rgb"][:, None, :]), axis=-1)
        best = jnp.min(jnp.where(usable, error, jnp.inf), axis=-1)
        alpha = batch.get("alpha", jnp.ones_like(opacity))
        weight = jnp.where(jnp.isfinite(best) & (opacity > self.min_opacity) & rays.complete, opacity * alpha, 0.0)
        return jnp.sum(weight * jnp.where(jnp.isfinite(best), best, 0.0)) / jnp.maximum(jnp.sum(weight), 1.0)


@dataclasses.dataclass(frozen=True)
class ShiftedView:
    """What `BinocularConsistency` reads: the method's own render from a camera shifted
    sideways, sampled where each training ray's surface point lands in it (``colors
    [R, 3]``), and whether it lands inside that image in front of the camera (``valid [R]``)."""

    colors: Array
    valid: Array


@dataclasses.dataclass(frozen=True)
class BinocularConsistency(ConstantWeight):
    """Binocular self-consistency (Binocular3DGS, Han et al., NeurIPS 2024): the scene is
    rendered from a camera shifted sideways by a baseline ``b`` from a training camera;
    warping that render back through the training view's rendered depth must give the
    training image: ``L = sum_r w_r |I_shift(pi_shift(x_r)) - c_r|_1 / sum_r w_r`` with
    ``x_r = o + (D / O) d`` and ``w_r = O_r a_r`` (held constant). It constrains depth
    where one training view alone sees the surface, which cross-view terms cannot."""

    needs: ClassVar[frozenset[str]] = frozenset({"binocular"})

    weight: float = 0.05
    """Loss weight."""
    baseline: float = 0.03
    """b: the sideways shift, as a share of the scene box diagonal."""
    min_opacity: float = 0.5
    """Rays less opaque than this are not on a surface: left out."""

    def __call__(self, inputs: LossInputs) -> Array:
        rays, batch, shifted = inputs.rays, inputs.batch, inputs.binocular
        opacity = jax.lax.stop_gradient(rays.opacity)
        alpha = batch.get("alpha", jnp.ones_like(opacity))
        weight = jnp.where(shifted.valid & (opacity > self.min_opacity), opacity * alpha, 0.0)
        error = jnp.mean(jnp.abs(shifted.colors - batch["rgb"]), axis=-1)
        return jnp.sum(weight * error) / jnp.maximum(jnp.sum(weight), 1.0)
