"""The surfel scene's jitted train step: the Gaussian path's step
(`sparsefield.methods.splat_step.TrainStep`: crops and the coarse phase, the 3DGS colour
loss, the loss terms a rasterizer serves, Adam with per-parameter rates, densification
statistics) with the surfel rasterizer (`sparsefield.renderers.surfels`) and 2DGS's two
geometric terms on every crop:

- depth distortion (2DGS eq. 13), ``L_d = mean_x sum_{i,j} w_i w_j (z_i - z_j)^2 / D^2``
  over the intersections along each pixel's ray (``D`` the scene box diagonal, so the
  weight does not depend on the scene's scale), from ``--surfel.distortion-from``;
- normal consistency (2DGS eq. 14), ``L_n = mean_x sum_i w_i (1 - n_i^T N)`` with ``n_i``
  each surfel's camera-facing normal and ``N`` the normal of the rendered depth map
  (`sparsefield.renderers.surfels.depth_normals`), from ``--surfel.normal-from``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..cameras import Cameras
from ..renderers.surfels import depth_normals, rasterize
from .splat_step import TrainStep


def normal_consistency(out: dict, camera: Cameras):
    """``mean_x sum_i w_i (1 - n_i^T N(x)) = mean_x (A(x) - n(x)^T N(x))`` over the pixels
    off the border, with ``A = sum_i w_i`` and ``n = sum_i w_i n_i`` the rendered opacity
    and normal (2DGS eq. 14)."""
    normals = depth_normals(out["depth"], out["opacity"], camera)
    per_pixel = out["opacity"] - jnp.sum(out["normal"] * normals, -1)
    return jnp.mean(per_pixel[1:-1, 1:-1])


def geometry_losses(sc, out: dict, camera: Cameras, diagonal: float, step, steps: int) -> dict:
    """The weighted 2DGS terms of one render (``sc``: `SurfelConfig`), each 0 before its
    start."""
    on = lambda start, weight: jnp.where(step >= start * steps, weight, 0.0)  # noqa: E731
    return {"distortion": on(sc.distortion_from, sc.distortion_weight) * jnp.mean(out["distortion"]) / diagonal**2,
            "normal": on(sc.normal_from, sc.normal_weight) * normal_consistency(out, camera)}


def make_train_step(config, bbox, terms: dict, factor: int = 1):
    """``train_step(state, data, key) -> (state, metrics)``, jitted with the state donated;
    ``factor``: crops ``factor`` times larger rendered at 1 / ``factor`` resolution."""
    return jax.jit(SurfelStep(config, np.asarray(bbox, np.float64), terms, factor), donate_argnums=0)


@dataclasses.dataclass(frozen=True, eq=False)
class SurfelStep(TrainStep):
    """The Gaussian step with ``--surfel.*`` settings, surfel rendering and 2DGS's terms."""

    @property
    def splat(self):
        """The settings the shared step reads (`sparsefield.methods.surfel.SurfelConfig`)."""
        return self.config.surfel

    rasterizer = staticmethod(rasterize)

    def render_losses(self, out: dict, cam: Cameras, step) -> dict:
        """Depth distortion and normal consistency (each 0 before its start)."""
        diagonal = float(np.linalg.norm(self.bbox[1] - self.bbox[0]))
        return geometry_losses(self.splat, out, cam, diagonal, step, self.config.steps)
