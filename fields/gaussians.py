"""Gaussian scene parameters (3D Gaussian splatting), their initialisation, view-dependent
colour and the standard 3DGS PLY file.

A scene is a dict of arrays at a power-of-two capacity ``N`` plus an ``alive [N]`` mask
(slots past the live Gaussians are culled by the rasterizer), so densification changes
values, never shapes, until the capacity doubles:

    means [N, 3]        world positions
    log_scales [N, 3]   log of the per-axis standard deviations
    quats [N, 4]        rotations (w, x, y, z), normalised when used
    logit_opacities [N] opacity o = sigmoid(.)
    sh_dc [N, 3]        degree-0 SH colour coefficient
    sh_rest [N, 15, 3]  degrees 1..3, switched on one degree at a time

Initialisations for sparse views: points inside the visual hull of the training masks
(GaussianObject), points where a trained field's density is high (``--init-from RUN``), or
uniform in the scene box; `remove_outliers` drops isolated points (GaussianObject's
floater elimination, as a statistical outlier filter).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from scipy.spatial import cKDTree

from ..cameras import project_points
from .sh import spherical_harmonics

SH_C0 = 0.28209479177387814
"""``Y_00``: a degree-0 coefficient ``c`` gives colour ``0.5 + SH_C0 c`` (3DGS)."""
MAX_DEGREE = 3
PARAM_NAMES = ("means", "log_scales", "quats", "logit_opacities", "sh_dc", "sh_rest")


@dataclasses.dataclass(frozen=True)
class GaussianConfig:
    """Gaussian scene: size, initialisation and colour model."""

    init: Literal["hull", "box", "points", "carve", "carve-surface"] = "hull"
    """Seed points: inside the training masks' visual hull (box when there are no masks),
    uniform in the scene box, the training views' triangulated SIFT points with the rest
    from the hull (``points``), inside the photo hull (``carve``: the visual hull carved
    down to where the views agree on the colour, `sparsefield.fields.photo_hull`) or on
    its surface (``carve-surface``). ``--init-from RUN`` (a trained run) overrides them."""
    init_points: int = 2**14
    """Gaussians at the start."""
    max_capacity: int = 2**17
    """Densification stops adding Gaussians at this many slots (a power of two)."""
    init_opacity: float = 0.1
    """Opacity of the seeded Gaussians (3DGS: 0.1)."""
    sh_degree: int = 3
    """Highest SH degree of the colour (0..3); ``(d + 1)^2`` coefficients per channel."""
    sh_every: int = 250
    """Raise the active SH degree by one every this many steps (3DGS: 1000 of 30k)."""
    carve_resolution: int = 96
    """``carve*``: voxels per side of the scene box."""
    carve_tolerance: float = 0.12
    """``carve*``: the RMS colour difference (0..1) between views that carves a voxel."""
    outlier_neighbours: int = 8
    """Floater removal at init: k of the k-nearest-neighbour distance."""
    outlier_std: float = 2.0
    """Drop seed points whose mean neighbour distance exceeds mean + this x std."""


def capacity_for(n: int) -> int:
    """The smallest power of two >= n."""
    return 1 << max(0, int(n - 1).bit_length())


def active_degree(config: GaussianConfig, step) -> jax.Array:
    """SH degree in use at ``step``: one more every ``sh_every`` steps, up to ``sh_degree``."""
    return jnp.minimum(jnp.asarray(step) // max(config.sh_every, 1), config.sh_degree)


def gaussian_colors(params: dict, center: Float[Array, " 3"], degree) -> Float[Array, "N 3"]:
    """View-dependent colour ``max(0, 0.5 + sum_{l <= degree, m} c_lm Y_lm(d))`` with
    ``d`` the unit direction from the camera centre to each mean (3DGS's SH colour)."""
    d = params["means"] - center
    d = d / jnp.maximum(jnp.linalg.norm(d, axis=-1, keepdims=True), 1e-9)
    basis = spherical_harmonics(d, MAX_DEGREE + 1)  # [N, 16]
    on = (jnp.arange(1, 16) < (degree + 1) ** 2).astype(basis.dtype)
    rest = jnp.einsum("nk,nkc->nc", basis[:, 1:] * on, params["sh_rest"])
    return jnp.maximum(0.5 + SH_C0 * params["sh_dc"] + rest, 0.0)


def activated(params: dict) -> tuple:
    """``(means, scales, quats, opacities)`` as the rasterizer takes them."""
    return (params["means"], jnp.exp(params["log_scales"]), params["quats"],
            jax.nn.sigmoid(params["logit_opacities"]))


def make_params(points: np.ndarray, colors: np.ndarray, capacity: int, opacity: float) -> tuple[dict, np.ndarray]:
    """Gaussians at ``points [M, 3]`` with ``colors [M, 3]``, padded to ``capacity`` slots.

    Scales are isotropic, the mean distance to the 3 nearest neighbours (3DGS);
    rotations identity; SH above degree 0 zero.

    Returns:
        ``params`` (numpy arrays) and ``alive [capacity]``.
    """
    m = len(points)
    dist, _ = cKDTree(points).query(points, k=min(4, m))
    scale = np.maximum(np.mean(np.atleast_2d(dist)[:, 1:], axis=-1) if m > 1 else np.ones(m), 1e-4)
    pad = capacity - m
    params = {
        "means": np.concatenate([points, np.zeros((pad, 3))]),
        "log_scales": np.concatenate([np.repeat(np.log(scale)[:, None], 3, 1), np.full((pad, 3), -10.0)]),
        "quats": np.tile([1.0, 0.0, 0.0, 0.0], (capacity, 1)),
        "logit_opacities": np.concatenate([np.full(m, np.log(opacity / (1 - opacity))), np.full(pad, -20.0)]),
        "sh_dc": np.concatenate([(np.clip(colors, 0, 1) - 0.5) / SH_C0, np.zeros((pad, 3))]),
        "sh_rest": np.zeros((capacity, 15, 3)),
    }
    alive = np.arange(capacity) < m
    return {k: v.astype(np.float32) for k, v in params.items()}, alive


# ---- initialisation ----------------------------------------------------------------------


def hull_test(points: np.ndarray, cameras, masks: np.ndarray | None = None, images: np.ndarray | None = None,
              min_views: int = 1):
    """Which ``points [M, 3]`` lie inside the visual hull of ``masks [C, H, W]``: every
    view that sees a point has mask >= 0.5 at its pixel, and at least ``min_views``
    views (capped at C) see it. Without masks only the view count is tested.

    A point inside one view's frustum only has no depth constraint from the other views:
    Gaussians there are free to float in front of novel views.

    Returns:
        ``inside [M]``, and with ``images [C, H, W, 3]`` also each point's mean colour
        over the views that see it (``None`` otherwise).
    """
    inside = np.ones(len(points), bool)
    seen = np.zeros(len(points), int)
    rgb = np.zeros((len(points), 3)) if images is not None else None
    num = len(cameras)
    h, w = (masks.shape[1:] if masks is not None else (cameras.height, cameras.width))
    for k in range(num):
        u, v, depth = project_points(points, cameras, k)
        on = (depth > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        ui, vi = np.clip(u.astype(int), 0, w - 1), np.clip(v.astype(int), 0, h - 1)
        if masks is not None:
            inside &= ~on | (masks[k, vi, ui] >= 0.5)
        seen += on
        if images is not None:
            rgb += np.where(on[:, None], images[k, vi, ui], 0.0)
    inside &= seen >= max(1, min(min_views, num))
    return inside, (None if rgb is None else rgb / np.maximum(seen, 1)[:, None])


def visual_hull_points(key: int, cameras, masks: np.ndarray, images: np.ndarray, bbox: np.ndarray,
                       n: int, tries: int = 64, min_views: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random points inside the visual hull of ``masks [C, H, W]`` (`hull_test`,
    seen by ``min_views`` views) and their mean colour over the views (GaussianObject's
    initialisation); candidates are drawn uniformly in ``bbox`` in rounds."""
    rng = np.random.default_rng(key)
    kept, colors = [], []
    for _ in range(tries):
        cand = rng.uniform(bbox[0], bbox[1], size=(max(4 * n, 2**16), 3))
        ok, rgb = hull_test(cand, cameras, masks, images, min_views)
        kept.append(cand[ok])
        colors.append(rgb[ok])
        if sum(len(p) for p in kept) >= n:
            break
    points, colors = np.concatenate(kept)[:n], np.concatenate(colors)[:n]
    if len(points) == 0:
        raise ValueError("the visual hull of the training masks is empty")
    return points, colors


def remove_outliers(points: np.ndarray, colors: np.ndarray, k: int, std: float):
    """Drop points whose mean distance to their ``k`` nearest neighbours exceeds the
    mean of that distance by ``std`` standard deviations (statistical outlier removal)."""
    if len(points) <= k:
        return points, colors
    dist, _ = cKDTree(points).query(points, k=k + 1)
    mean = dist[:, 1:].mean(-1)
    keep = mean <= mean.mean() + std * mean.std()
    return points[keep], colors[keep]


# ---- PLY (the layout of the 3D Gaussian splatting reference code) -------------------------


def ply_fields(sh_rest: int = 45, scales: int = 3) -> list[str]:
    """Property names in file order (``scales``: 3 for 3D Gaussians, 2 for surfels)."""
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(sh_rest)]
            + ["opacity", *(f"scale_{i}" for i in range(scales)), "rot_0", "rot_1", "rot_2", "rot_3"])


def write_ply(path: Path, params: dict, alive: np.ndarray, normals: np.ndarray | None = None) -> int:
    """Write the live Gaussians as a binary little-endian 3DGS PLY; returns their count.

    Columns: position, normals (zero unless given for the live ones), ``f_dc_*``,
    ``f_rest_*`` channel-major (all 15 coefficients of red, then green, then blue), opacity
    logit, log-scales (as many as ``params`` holds: 3, or 2 for surfels), quaternion
    ``(w, x, y, z)``: what 3DGS viewers read.
    """
    p = {k: np.asarray(v, np.float32)[np.asarray(alive)] for k, v in params.items()}
    n = len(p["means"])
    rest = p["sh_rest"].transpose(0, 2, 1).reshape(n, -1)
    normals = np.zeros((n, 3), np.float32) if normals is None else np.asarray(normals, np.float32).reshape(n, 3)
    columns = np.concatenate([p["means"], normals, p["sh_dc"], rest,
                              p["logit_opacities"][:, None], p["log_scales"], p["quats"]], -1)
    names = ply_fields(rest.shape[1], p["log_scales"].shape[1])
    header = "ply\nformat binary_little_endian 1.0\nelement vertex {}\n{}end_header\n".format(
        n, "".join(f"property float {name}\n" for name in names))
    data = np.ascontiguousarray(columns, "<f4")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(data.tobytes())
    return n


def read_ply(path: Path, with_normals: bool = False) -> dict:
    """Read a 3DGS PLY (binary little-endian, float properties) into parameter arrays
    (``log_scales`` with as many columns as the file has ``scale_*``; ``normals [N, 3]``
    too with ``with_normals``)."""
    with open(path, "rb") as f:
        names, n = [], None
        while (line := f.readline().decode("ascii").strip()) != "end_header":
            parts = line.split()
            if parts[:2] == ["element", "vertex"]:
                n = int(parts[2])
            elif parts[:1] == ["property"]:
                if parts[1] != "float":
                    raise ValueError(f"{path}: property {parts[2]} is {parts[1]}, expected float")
                names.append(parts[2])
            elif parts[:1] == ["format"] and parts[1] != "binary_little_endian":
                raise ValueError(f"{path}: {parts[1]} PLY is not supported")
        data = np.frombuffer(f.read(4 * n * len(names)), "<f4").reshape(n, len(names))
    col = {name: data[:, i] for i, name in enumerate(names)}
    pick = lambda prefix, k: np.stack([col[f"{prefix}{i}"] for i in range(k)], -1)  # noqa: E731
    count = lambda prefix: sum(name.startswith(prefix) for name in names)  # noqa: E731
    rest = count("f_rest_")
    params = {
        "means": np.stack([col["x"], col["y"], col["z"]], -1),
        "log_scales": pick("scale_", count("scale_")),
        "quats": pick("rot_", 4),
        "logit_opacities": col["opacity"].copy(),
        "sh_dc": pick("f_dc_", 3),
        "sh_rest": pick("f_rest_", rest).reshape(n, 3, rest // 3).transpose(0, 2, 1),
    }
    return params | ({"normals": np.stack([col["nx"], col["ny"], col["nz"]], -1)} if with_normals else {})
