"""The surfel PLY (``*.surfel.ply``): the layout the 2D Gaussian splatting reference code
writes and reads (``point_cloud.ply``), binary little-endian, one float property each:

    x y z  nx ny nz  f_dc_0..2  f_rest_0..44  opacity  scale_0 scale_1  rot_0..3

as 3DGS's PLY (`sparsefield.fields.gaussians.write_ply`) with two log-scales instead of
three; ``f_rest_*`` channel-major, opacity as a logit, the quaternion ``(w, x, y, z)``.
The normals, zero in 2DGS's files, hold each disk's normal (the rotation's third column),
which point-cloud tools can show; 2DGS ignores them when it reads the file.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ..fields import gaussians as gs
from ..renderers.splatting import quat_to_rotmat


def write_ply(path: Path, params: dict, alive: np.ndarray) -> int:
    """Write the live surfels (parameters as `sparsefield.methods.surfel` holds them);
    returns their count."""
    quats = np.asarray(params["quats"], np.float32)[np.asarray(alive)]
    normals = np.asarray(quat_to_rotmat(jnp.asarray(quats))[:, :, 2]) if len(quats) else np.zeros((0, 3), np.float32)
    return gs.write_ply(path, params, alive, normals=normals)


def read_ply(path: Path) -> dict:
    """Read a surfel PLY (2DGS layout) into parameter arrays (``log_scales [N, 2]``) and
    ``normals [N, 3]``."""
    return gs.read_ply(path, with_normals=True)
