"""Differentiable tile rasterization of 3D Gaussians in pure JAX (3D Gaussian splatting).

Pipeline (Kerbl et al. 2023, sec. 6): `project` maps each Gaussian to the image with the
EWA Jacobian (Zwicker et al. 2002) plus a small dilation, giving a screen-space mean,
conic (inverse 2D covariance) and an axis-aligned extent; `bin_tiles` lists, per
``B x B`` pixel tile, the nearest ``K`` Gaussians whose extent touches it, in depth
order (one global sort of the Gaussians by view depth, one sort of the (tile, rank)
pairs); `composite_tiles` blends those lists front to back with early termination.

Exactness rules, shared with the dense reference `render_dense` (the tests compare
both): a Gaussian contributes ``alpha = min(0.99, o exp(-d^T Sigma'^-1 d / 2))`` at a
pixel only when ``alpha >= 1/255``; the extent is the box of the ellipse where that can
happen, ``d^T Sigma'^-1 d <= 2 ln(255 o)`` (opacity-aware, so faint Gaussians touch fewer
tiles); a pixel stops at the first Gaussian that would take its transmittance below
``1e-4``. So the fast path equals the reference whenever no tile list overflows ``K``
and the pair budget holds (both are reported as ``overflow``).

Memory: ``O(N)`` for the Gaussians and pairs, and ``pixels x chunk`` inside the
compositing loop, never Gaussians x pixels. Compositing has a hand-written VJP: the
backward pass walks the lists front to back again, recomputing alphas and
transmittance, and uses ``R_i = C - sum_{j<=i} w_j f_j`` for what lies behind Gaussian
``i`` (no division by ``1 - alpha``), so nothing of size pixels x K is stored.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..cameras import Cameras

ALPHA_MIN = 1.0 / 255.0
"""Contributions below this alpha are skipped (3DGS)."""
ALPHA_MAX = 0.99
"""Alpha is clipped here, so transmittance never reaches 0 in one step."""
T_MIN = 1e-4
"""A pixel stops before the Gaussian that would take its transmittance below this."""


@dataclasses.dataclass(frozen=True)
class TileConfig:
    """How a tile rasterizer bins and composites its primitives (Gaussians or surfels)."""

    tile_size: int = 16
    """B: tiles are B x B pixels."""
    tile_capacity: int = 256
    """K: at most this many primitives (the nearest) per tile; a multiple of ``chunk``."""
    chunk: int = 32
    """Primitives per tile composited per loop iteration (memory: pixels x chunk)."""
    tile_group: int = 16
    """Tiles composited together; each group stops at its own longest list."""
    pairs_per_gaussian: float = 8.0
    """(tile, primitive) pair budget, times the capacity N, and at most tiles x K (more
    pairs than that overflow some tile anyway); the farthest pairs drop first."""
    near: float = 0.01
    """Primitives closer than this view depth (world units) are culled."""


@dataclasses.dataclass(frozen=True)
class SplatRenderConfig(TileConfig):
    """Rasterizer settings."""

    dilation: float = 0.3
    """Added to the 2D covariance's diagonal (pixels^2): a pixel-sized low-pass filter."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Projected:
    """Gaussians in screen space (``N`` of them).

    Attributes:
        mean2d: ``[N, 2]`` pixel position of the mean (pixel centres at ``i + 0.5``).
        conic: ``[N, 3]`` upper triangle ``(a, b, c)`` of the inverse 2D covariance.
        depth: ``[N]`` view depth ``z`` of the mean.
        extent: ``[N, 2]`` half-widths in pixels of the box where ``alpha >= 1/255``.
        opacity: ``[N]`` opacity, 0 where culled.
        visible: ``[N]`` not culled.
    """

    mean2d: Float[Array, "N 2"]
    conic: Float[Array, "N 3"]
    depth: Float[Array, " N"]
    extent: Float[Array, "N 2"]
    opacity: Float[Array, " N"]
    visible: jax.Array


def quat_to_rotmat(q: Float[Array, "N 4"]) -> Float[Array, "N 3 3"]:
    """Rotation matrices of quaternions ``(w, x, y, z)`` (normalised here)."""
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return jnp.stack([jnp.stack(r, -1) for r in rows], -2)


def covariance3d(scales: Float[Array, "N 3"], quats: Float[Array, "N 4"]) -> Float[Array, "N 3 3"]:
    """``Sigma = R S S^T R^T`` with ``S = diag(scales)`` (3DGS eq. 6)."""
    m = quat_to_rotmat(quats) * scales[:, None, :]
    return m @ jnp.swapaxes(m, -1, -2)


def project(
    means: Float[Array, "N 3"],
    scales: Float[Array, "N 3"],
    quats: Float[Array, "N 4"],
    opacities: Float[Array, " N"],
    camera: Cameras,
    config: SplatRenderConfig,
    alive: jax.Array | None = None,
) -> Projected:
    """EWA projection of 3D Gaussians into one camera (Zwicker et al. 2002; 3DGS eq. 5).

    With ``W = diag(1, -1, -1) R^T`` (OpenGL camera to a +z-forward view frame) and the
    view point ``q = W (x - o)``: ``mean2d = (f_x q_x / q_z + c_x, f_y q_y / q_z + c_y)``,
    ``Sigma' = J W Sigma W^T J^T + dilation I`` with the perspective Jacobian ``J`` at
    ``q`` (its ``q_x / q_z`` clamped to 1.3 x the half field of view, as in 3DGS).
    """
    rot = camera.c2w[:3, :3]
    flip = jnp.array([1.0, -1.0, -1.0])
    w2v = flip[:, None] * rot.T
    q = (means - camera.c2w[:3, 3]) @ w2v.T
    z = q[:, 2]
    safe_z = jnp.where(z > config.near, z, 1.0)
    lim_x = 1.3 * 0.5 * camera.width / camera.fx
    lim_y = 1.3 * 0.5 * camera.height / camera.fy
    tx = jnp.clip(q[:, 0] / safe_z, -lim_x, lim_x) * safe_z
    ty = jnp.clip(q[:, 1] / safe_z, -lim_y, lim_y) * safe_z
    zeros = jnp.zeros_like(z)
    jac = jnp.stack([
        jnp.stack([camera.fx / safe_z, zeros, -camera.fx * tx / safe_z**2], -1),
        jnp.stack([zeros, camera.fy / safe_z, -camera.fy * ty / safe_z**2], -1),
    ], -2)
    t = jac @ w2v
    cov = t @ covariance3d(scales, quats) @ jnp.swapaxes(t, -1, -2)
    a = cov[:, 0, 0] + config.dilation
    b = cov[:, 0, 1]
    c = cov[:, 1, 1] + config.dilation
    det = a * c - b * b
    safe_det = jnp.where(det > 0, det, 1.0)
    conic = jnp.stack([c, -b, a], -1) / safe_det[:, None]
    mean2d = jnp.stack([camera.fx * q[:, 0] / safe_z + camera.cx,
                        camera.fy * q[:, 1] / safe_z + camera.cy], -1)
    level = 2.0 * jnp.log(jnp.maximum(opacities / ALPHA_MIN, 1.0))
    extent = jax.lax.stop_gradient(jnp.sqrt(level[:, None] * jnp.stack([a, c], -1)))
    on_screen = jnp.all((mean2d + extent > 0) & (mean2d - extent < jnp.array([camera.width, camera.height])), -1)
    visible = (z > config.near) & (det > 0) & (opacities >= ALPHA_MIN) & jax.lax.stop_gradient(on_screen)
    if alive is not None:
        visible = visible & alive
    return Projected(mean2d, conic, z, extent, jnp.where(visible, opacities, 0.0), visible)


def depth_order(depth: Float[Array, " N"], visible: jax.Array) -> Int[Array, " N"]:
    """Indices of the Gaussians sorted near to far, culled ones last."""
    key = jnp.where(visible, depth, jnp.inf)
    return jax.lax.sort_key_val(key, jnp.arange(depth.shape[0], dtype=jnp.int32))[1]


def bin_tiles(proj: Projected, width: int, height: int, config: SplatRenderConfig):
    """Per-tile lists of the nearest ``K`` Gaussians touching each tile, near to far
    (`bin_boxes` of the projected extents)."""
    return bin_boxes(proj.mean2d, proj.extent, proj.depth, proj.visible, width, height, config)


def bin_boxes(center: Float[Array, "N 2"], extent: Float[Array, "N 2"], depth: Float[Array, " N"],
              visible: jax.Array, width: int, height: int, config):
    """Per-tile lists of the nearest ``K`` primitives whose screen box ``center +- extent``
    (pixels) touches each tile, near to far by ``depth``; ``config`` gives ``tile_size``,
    ``tile_capacity`` and ``pairs_per_gaussian`` (`SplatRenderConfig`, or the surfel
    rasterizer's config).

    Every visible primitive emits one pair per tile its box touches, in global
    depth order, into a budget of ``P = min(pairs_per_gaussian N, T K)`` pairs (a crop of a
    large scene needs far fewer than the whole view); pairs are sorted by
    the single integer key ``tile << b | depth_rank`` (``2^b >= N``), which keeps depth
    order inside each tile.

    Returns:
        ``ids [T, K]`` primitive indices, ``valid [T, K]``, and ``overflow``: pairs lost to
        the budget plus list entries beyond ``K`` (0 means the lists are exact).
    """
    n = depth.shape[0]
    size, cap = config.tile_size, config.tile_capacity
    tiles_x, tiles_y = -(-width // size), -(-height // size)
    num_tiles = tiles_x * tiles_y
    bits = max(1, math.ceil(math.log2(n)))
    if num_tiles << bits >= 2**31:
        raise ValueError(f"{num_tiles} tiles x 2^{bits} Gaussians do not fit a 32-bit sort key")
    budget = max(min(int(config.pairs_per_gaussian * n), num_tiles * cap), num_tiles)
    lo = jnp.floor((center - extent) / size).astype(jnp.int32)
    hi = jnp.floor((center + extent) / size).astype(jnp.int32)
    lo = jnp.clip(lo, 0, jnp.array([tiles_x - 1, tiles_y - 1]))
    hi = jnp.clip(hi, 0, jnp.array([tiles_x - 1, tiles_y - 1]))
    span = hi - lo + 1
    order = depth_order(depth, visible)
    count = jnp.where(visible, span[:, 0] * span[:, 1], 0)[order]
    ends = jnp.cumsum(count)
    starts = ends - count
    rank_of_pair = jax.lax.cummax(
        jnp.full(budget, -1, jnp.int32).at[jnp.where(count > 0, starts, budget)].max(
            jnp.arange(n, dtype=jnp.int32), mode="drop"), axis=0)
    pair = jnp.arange(budget, dtype=jnp.int32)
    rank = jnp.maximum(rank_of_pair, 0)
    g = order[rank]
    local = pair - starts[rank]
    tx = lo[g, 0] + local % span[g, 0]
    ty = lo[g, 1] + local // span[g, 0]
    keys = jnp.where(pair < ends[-1], ((ty * tiles_x + tx) << bits) | rank, jnp.iinfo(jnp.int32).max)
    keys = jax.lax.sort(keys)
    tile_of = keys >> bits
    first = jnp.searchsorted(tile_of, jnp.arange(num_tiles, dtype=jnp.int32), side="left")
    last = jnp.searchsorted(tile_of, jnp.arange(num_tiles, dtype=jnp.int32), side="right")
    slot = jnp.arange(cap, dtype=jnp.int32)
    valid = slot[None, :] < (last - first)[:, None]
    idx = jnp.minimum(first[:, None] + slot[None, :], budget - 1)
    ids = jnp.where(valid, order[keys[idx] & ((1 << bits) - 1)], 0)
    overflow = jnp.maximum(ends[-1] - budget, 0) + jnp.sum(jnp.maximum(last - first - cap, 0))
    return ids, valid, overflow


def tile_pixels(width: int, height: int, size: int) -> Float[Array, "T P 2"]:
    """Pixel centres ``(x + 0.5, y + 0.5)`` of every tile, ``[tiles, B*B, 2]``, tile-major
    row by row (pixels past the image edge included; they are cropped afterwards)."""
    tiles_x, tiles_y = -(-width // size), -(-height // size)
    ty, tx, py, px = jnp.meshgrid(jnp.arange(tiles_y), jnp.arange(tiles_x), jnp.arange(size),
                                  jnp.arange(size), indexing="ij")
    xy = jnp.stack([tx * size + px, ty * size + py], -1).astype(jnp.float32) + 0.5
    return xy.reshape(tiles_x * tiles_y, size * size, 2)


def _chunk_alpha(pix, mean, conic, opac, valid):
    """``alpha [T, P, c]``, the Gaussian value ``G`` and the pixel offsets for one chunk."""
    d = pix[:, :, None, :] - mean[:, None, :, :]
    dx, dy = d[..., 0], d[..., 1]
    a, b, c = (conic[:, None, :, i] for i in range(3))
    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
    # unused list slots hold arbitrary Gaussians: exp(-inf) = 0 keeps inf * 0 out of the VJP
    gauss = jnp.exp(jnp.where(valid[:, None, :], jnp.minimum(power, 0.0), -jnp.inf))
    raw = opac[:, None, :] * gauss
    keep = valid[:, None, :] & (raw >= ALPHA_MIN)
    return jnp.where(keep, jnp.minimum(raw, ALPHA_MAX), 0.0), gauss, dx, dy, raw


def chunk_weights(alpha, log_t, done, tri):
    """Front-to-back weights ``w_i = alpha_i T_i`` of one chunk given the transmittance
    before it; also returns which entries count, ``T_i``, and the carried state.

    ``log T_i^incl = log T + sum_{j<=i} log(1 - alpha_j)`` (a triangular matmul);
    Gaussian ``i`` counts while ``T_i^incl >= T_MIN`` and the pixel is not done.
    """
    lg = jnp.log1p(-alpha)
    incl = log_t[..., None] + lg @ tri
    use = (incl >= math.log(T_MIN)) & ~done[..., None]
    trans = jnp.where(use, jnp.exp(incl - lg), 0.0)
    log_t = log_t + jnp.sum(jnp.where(use, lg, 0.0), -1)
    done = done | jnp.any(incl < math.log(T_MIN), -1)
    return alpha * trans, use, trans, log_t, done


def _slice(x, start, size):
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=1)


def group_tiles(group, count, *arrays):
    """Tiles reordered by list length, longest first, and padded to whole groups of
    ``group`` tiles (at most all of them; padding tiles have empty lists): the group
    size, ``order``, the gather indices ``take`` (``order`` padded), the padded counts,
    and the arrays' ``[T, ...]`` leading axes gathered likewise."""
    tiles = count.shape[0]
    group = min(group, tiles)
    padded = -(-tiles // group) * group
    order = jnp.argsort(-count)
    take = jnp.concatenate([order, jnp.zeros(padded - tiles, order.dtype)])
    real = jnp.arange(padded) < tiles
    count = jnp.where(real, count[take], 0)
    return group, order, take, count, tuple(x[take] for x in arrays)


def ungroup_tiles(order, x, tiles):
    """Inverse of `group_tiles` on an output ``[padded, ...]``."""
    return jnp.zeros((tiles, *x.shape[1:]), x.dtype).at[order].set(x[:tiles])


def _rows(x, start, size):
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def composite_tiles(chunk, group, pix, mean, conic, opac, feat, valid, background):
    """Front-to-back compositing of per-tile lists (3DGS eq. 3) with early termination.

    Tiles are composited ``group`` at a time, longest lists first, each group looping
    over its own lists ``chunk`` entries at a time until its longest list ends or all
    its pixels are saturated; so the work follows each tile's list length and depth
    complexity rather than the busiest tile's (a CUDA rasterizer's thread blocks do the
    same).

    Args:
        chunk: list entries per loop iteration (static).
        group: tiles per group (static).
        pix: ``[T, P, 2]`` pixel centres per tile.
        mean, conic, opac, feat: ``[T, K, 2]``, ``[T, K, 3]``, ``[T, K]``, ``[T, K, F]``
            the listed Gaussians' screen parameters and features (colour, depth ...).
        valid: ``[T, K]`` list entries in use (a prefix of each list).
        background: ``[F]`` added with the final transmittance.

    Returns:
        ``out [T, P, F] = sum_i w_i f_i + T_final background`` with
        ``w_i = alpha_i prod_{j<i} (1 - alpha_j)``, and ``T_final [T, P]``.
    """
    return _composite_fwd(chunk, group, pix, mean, conic, opac, feat, valid, background)[0]


def _composite_fwd(chunk, group, pix, mean, conic, opac, feat, valid, background):
    tiles, pixels = pix.shape[:2]
    tri = jnp.triu(jnp.ones((chunk, chunk), pix.dtype))
    group, order, take, count, (gpix, gmean, gconic, gopac, gfeat, gvalid) = group_tiles(
        group, jnp.sum(valid, -1), pix, mean, conic, opac, feat, valid)
    nf = feat.shape[-1]

    def one_group(b, outs):
        r = b * group
        p, m, cn, op, ft, v = (_rows(x, r, group) for x in (gpix, gmean, gconic, gopac, gfeat, gvalid))
        bound = (count[r] + chunk - 1) // chunk  # the group's longest list comes first

        def body(carry):
            k, acc, log_t, done = carry
            s = k * chunk
            alpha = _chunk_alpha(p, _slice(m, s, chunk), _slice(cn, s, chunk), _slice(op, s, chunk),
                                 _slice(v, s, chunk))[0]
            w, _, _, log_t, done = chunk_weights(alpha, log_t, done, tri)
            acc = acc + jnp.einsum("tpc,tcf->tpf", w, _slice(ft, s, chunk))
            return k + 1, acc, log_t, done

        init = (jnp.int32(0), jnp.zeros((group, pixels, nf), pix.dtype),
                jnp.zeros((group, pixels), pix.dtype), jnp.zeros((group, pixels), bool))
        _, acc, log_t, _ = jax.lax.while_loop(lambda c: (c[0] < bound) & ~jnp.all(c[3]), body, init)
        out_acc, out_t = outs
        return (jax.lax.dynamic_update_slice_in_dim(out_acc, acc, r, 0),
                jax.lax.dynamic_update_slice_in_dim(out_t, log_t, r, 0))

    padded = count.shape[0]
    acc, log_t = jax.lax.fori_loop(0, padded // group, one_group, (
        jnp.zeros((padded, pixels, nf), pix.dtype), jnp.zeros((padded, pixels), pix.dtype)))
    t_final = jnp.exp(ungroup_tiles(order, log_t, tiles))
    out = ungroup_tiles(order, acc, tiles) + t_final[..., None] * background
    grouped = (gpix, gmean, gconic, gopac, gfeat, gvalid)
    return (out, t_final), (order, take, count, grouped, background, out, t_final)


def _composite_bwd(chunk, group, res, cotangents):
    """Front to back again, group by group: ``dL/dalpha_i = T_i (g.f_i) - (g.R_i + g_T T_final)
    / (1 - alpha_i)`` with ``R_i = C - sum_{j<=i} w_j f_j`` (what lies behind ``i``,
    background included)."""
    order, take, count, (gpix, gmean, gconic, gopac, gfeat, gvalid), background, out, t_final = res
    g_out, g_t = cotangents
    tiles, pixels = out.shape[:2]
    group = min(group, tiles)
    tri = jnp.triu(jnp.ones((chunk, chunk), gpix.dtype))
    gg_out, gg_c, gg_tt = (x[take] for x in (g_out, jnp.sum(g_out * out, -1), g_t * t_final))

    def one_group(b, grads):
        r = b * group
        p, m_all, cn_all, op_all, ft_all, v_all, go, gc, gt = (
            _rows(x, r, group) for x in (gpix, gmean, gconic, gopac, gfeat, gvalid, gg_out, gg_c, gg_tt))
        bound = (count[r] + chunk - 1) // chunk

        def body(carry):
            k, log_t, done, before, acc = carry
            s = k * chunk
            m, cn, op, ft = (_slice(x, s, chunk) for x in (m_all, cn_all, op_all, ft_all))
            alpha, gauss, dx, dy, raw = _chunk_alpha(p, m, cn, op, _slice(v_all, s, chunk))
            w, use, t_i, log_t_next, done = chunk_weights(alpha, log_t, done, tri)
            gf = jnp.einsum("tpf,tcf->tpc", go, ft)
            behind = gc[..., None] - before[..., None] - (w * gf) @ tri
            d_alpha = t_i * gf - (behind + gt[..., None]) / (1.0 - alpha)
            d_alpha = jnp.where(use & (alpha > 0) & (raw < ALPHA_MAX), d_alpha, 0.0)
            d_raw = d_alpha * raw  # d alpha / d power = alpha
            d_mean = jnp.stack([jnp.sum(d_raw * (cn[:, None, :, 0] * dx + cn[:, None, :, 1] * dy), 1),
                                jnp.sum(d_raw * (cn[:, None, :, 2] * dy + cn[:, None, :, 1] * dx), 1)], -1)
            d_conic = jnp.stack([jnp.sum(-0.5 * d_raw * dx * dx, 1), jnp.sum(-d_raw * dx * dy, 1),
                                 jnp.sum(-0.5 * d_raw * dy * dy, 1)], -1)
            d_opac = jnp.sum(d_alpha * gauss, 1)
            d_feat = jnp.einsum("tpc,tpf->tcf", w, go)
            before = before + jnp.sum(w * gf, -1)
            acc = tuple(jax.lax.dynamic_update_slice_in_dim(a, d, s, axis=1)
                        for a, d in zip(acc, (d_mean, d_conic, d_opac, d_feat)))
            return k + 1, log_t_next, done, before, acc

        zeros = tuple(jnp.zeros_like(x) for x in (m_all, cn_all, op_all, ft_all))
        init = (jnp.int32(0), jnp.zeros((group, pixels), gpix.dtype), jnp.zeros((group, pixels), bool),
                jnp.zeros((group, pixels), gpix.dtype), zeros)
        *_, acc = jax.lax.while_loop(lambda c: (c[0] < bound) & ~jnp.all(c[2]), body, init)
        return tuple(jax.lax.dynamic_update_slice_in_dim(g, a, r, 0) for g, a in zip(grads, acc))

    grads = tuple(jnp.zeros_like(x) for x in (gmean, gconic, gopac, gfeat))
    grads = jax.lax.fori_loop(0, count.shape[0] // group, one_group, grads)
    grads = tuple(ungroup_tiles(order, g, tiles) for g in grads)
    d_background = jnp.sum(g_out * t_final[..., None], (0, 1))
    return (None, *grads, None, d_background)


composite_tiles.defvjp(_composite_fwd, _composite_bwd)


def rasterize(
    means: Float[Array, "N 3"],
    scales: Float[Array, "N 3"],
    quats: Float[Array, "N 4"],
    opacities: Float[Array, " N"],
    colors: Float[Array, "N 3"],
    camera: Cameras,
    background: Float[Array, " 3"],
    config: SplatRenderConfig = SplatRenderConfig(),
    alive: jax.Array | None = None,
    mean2d_offset: Float[Array, "N 2"] | None = None,
    distortion: bool = False,
) -> dict:
    """Render one camera (jit-able; the image size is static in ``camera``).

    Args:
        means, scales, quats, opacities, colors: activated Gaussian parameters
            (``scales`` in world units, quaternions ``(w, x, y, z)``, ``o`` in ``[0, 1]``).
        background: ``[3]`` colour behind the Gaussians.
        alive: ``[N]`` slots in use (capacity padding is culled).
        mean2d_offset: ``[N, 2]`` zeros whose gradient is the view-space positional
            gradient that 3DGS densification thresholds.
        distortion: also blend ``z_i^2`` and return the depth distortion.

    Returns:
        ``rgb [H, W, 3]``, ``depth [H, W]`` (``sum_i w_i z_i``), ``opacity [H, W]``
        (``1 - T_final``), ``overflow`` (see `bin_tiles`) and ``visible [N]``; with
        ``distortion``, ``distortion [H, W]``: ``sum_{i,j} w_i w_j (z_i - z_j)^2 =
        2 (A S_2 - S_1^2)`` (2DGS eq. 13 over the Gaussians' centre depths; ``A``
        the opacity, ``S_k = sum_i w_i z_i^k``).
    """
    proj = project(means, scales, quats, opacities, camera, config, alive)
    ids, valid, overflow = bin_tiles(jax.tree_util.tree_map(jax.lax.stop_gradient, proj),
                                     camera.width, camera.height, config)
    mean2d = proj.mean2d if mean2d_offset is None else proj.mean2d + mean2d_offset
    moments = [proj.depth[:, None], proj.depth[:, None] ** 2] if distortion else [proj.depth[:, None]]
    feat = jnp.concatenate([colors, *moments], -1)
    bg = jnp.concatenate([background, jnp.zeros(len(moments), background.dtype)])
    pix = tile_pixels(camera.width, camera.height, config.tile_size)
    out, t_final = composite_tiles(config.chunk, config.tile_group, pix, mean2d[ids], proj.conic[ids], proj.opacity[ids],
                                   feat[ids], valid, bg)
    image = untile(jnp.concatenate([out, 1.0 - t_final[..., None]], -1), camera, config.tile_size)
    depth, opacity = image[..., 3], image[..., -1]
    result = {"rgb": image[..., :3], "depth": depth, "opacity": opacity, "overflow": overflow, "visible": proj.visible}
    if distortion:
        result["distortion"] = 2.0 * (opacity * image[..., 4] - depth**2)  # image[..., 4]: sum_i w_i z_i^2
    return result


def untile(x: Float[Array, "T P F"], camera: Cameras, size: int) -> Float[Array, "H W F"]:
    """Tile-major pixels back to an ``[H, W, F]`` image, cropped to the camera's size."""
    tiles_x, tiles_y = -(-camera.width // size), -(-camera.height // size)
    img = x.reshape(tiles_y, tiles_x, size, size, -1).transpose(0, 2, 1, 3, 4)
    return img.reshape(tiles_y * size, tiles_x * size, -1)[: camera.height, : camera.width]


def render_dense(means, scales, quats, opacities, colors, camera: Cameras, background,
                 config: SplatRenderConfig = SplatRenderConfig(), alive=None) -> dict:
    """Slow reference: every Gaussian against every pixel, ``O(N H W)`` memory.

    The same projection, alpha rule and early termination as `rasterize`, without tiles,
    capacities or a custom VJP (plain autodiff through a cumulative sum).
    """
    proj = project(means, scales, quats, opacities, camera, config, alive)
    order = depth_order(proj.depth, proj.visible)
    j, i = jnp.meshgrid(jnp.arange(camera.height), jnp.arange(camera.width), indexing="ij")
    pix = jnp.stack([i, j], -1).reshape(-1, 2).astype(means.dtype) + 0.5
    d = pix[:, None, :] - proj.mean2d[order][None]
    a, b, c = (proj.conic[order][None, :, k] for k in range(3))
    raw = proj.opacity[order][None] * jnp.exp(-0.5 * (a * d[..., 0] ** 2 + c * d[..., 1] ** 2) - b * d[..., 0] * d[..., 1])
    alpha = jnp.where(raw >= ALPHA_MIN, jnp.minimum(raw, ALPHA_MAX), 0.0)
    lg = jnp.log1p(-alpha)
    incl = jnp.cumsum(lg, -1)
    w = jnp.where(incl >= math.log(T_MIN), alpha * jnp.exp(incl - lg), 0.0)
    t_final = jnp.exp(jnp.sum(jnp.where(incl >= math.log(T_MIN), lg, 0.0), -1))
    feat = jnp.concatenate([colors, proj.depth[:, None]], -1)[order]
    out = w @ feat + t_final[:, None] * jnp.concatenate([background, jnp.zeros(1, background.dtype)])
    shape = (camera.height, camera.width)
    return {"rgb": out[:, :3].reshape(*shape, 3), "depth": out[:, 3].reshape(shape),
            "opacity": (1.0 - t_final).reshape(shape)}
