"""Differentiable tile rasterization of 2D Gaussian surfels in pure JAX (2D Gaussian
splatting, Huang et al. 2024).

A surfel is a flat Gaussian disk: centre ``p_k``, tangents ``t_u, t_v`` (the first two
columns of its rotation ``R``), scales ``s_u, s_v``, normal ``t_w = t_u x t_v``; its
points are ``P(u, v) = p_k + s_u t_u u + s_v t_v v`` (2DGS eq. 4-5) with the value
``G(u, v) = exp(-(u^2 + v^2) / 2)`` (eq. 6).

Ray-splat intersection (2DGS sec. 4.2, eq. 8-10): with the pixel-from-world matrix
``K W`` of the camera, ``T = K W [s_u t_u, s_v t_v, p_k - o]`` (3 x 3, rows ``T_u, T_v,
T_w``) maps ``(u, v, 1)`` to ``(x z, y z, z)``. The ray through pixel ``(x, y)`` is the
meet of the planes ``h_x = x T_w - T_u`` and ``h_y = y T_w - T_v`` in ``uv`` space, so
the intersection is ``(u, v, 1) ~ h_x x h_y`` (eq. 10: ``u = (h_x^2 h_y^4 - h_x^4
h_y^2) / (h_x^1 h_y^2 - h_x^2 h_y^1)``, ``v`` likewise) and its view depth is ``z = T_w .
(u, v, 1)``. The object-space low-pass filter (eq. 11) takes ``G^ = max(G(u, v),
G((x - c) / sigma))``, ``c`` the projected centre and ``sigma = sqrt(2) / 2`` pixels, so
a disk seen edge-on or smaller than a pixel still covers its centre's pixel; the depth
there is the centre's. Compositing is front to back as in 3DGS (eq. 12), with the
Gaussian rasterizer's tiles, binning, chunks, early termination and exactness rules
(`sparsefield.renderers.splatting`: ``alpha = min(0.99, o G^)``, kept when ``>= 1/255``;
a surfel's screen box bounds where that can happen).

Per pixel, besides colour and opacity: the expected view depth ``sum_i w_i z_i``, the
blended normal ``sum_i w_i n_i`` (each ``n_i`` turned to face the camera) and the depth
distortion ``sum_{i,j} w_i w_j (z_i - z_j)^2 = 2 (A S_2 - S_1^2)`` with ``A = sum w_i``,
``S_k = sum w_i (z_i - z_0)^k`` (2DGS eq. 13 with the squared distance its reference code
uses; ``z_0`` is any common depth, here the visible centres' mean, for precision).

Compositing has a hand-written VJP (`composite_kernel`): the compositing recurrence is
differentiated by hand as in `sparsefield.renderers.splatting`, the per-entry alpha and
per-pixel features by ``jax.vjp`` of the intersection kernel, one chunk at a time, so
memory stays ``pixels x chunk``. `render_dense` is the slow reference: an explicit
world-space ray-plane intersection against every surfel at every pixel.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..cameras import Cameras, image_rays
from .splatting import (
    ALPHA_MAX, ALPHA_MIN, T_MIN, TileConfig, bin_boxes, chunk_weights, depth_order, group_tiles, quat_to_rotmat,
    tile_pixels, ungroup_tiles, untile,
)

FLIP = (1.0, -1.0, -1.0)
"""OpenGL camera axes to the +z-forward view frame (x right, y down)."""


@dataclasses.dataclass(frozen=True)
class SurfelRenderConfig(TileConfig):
    """Surfel rasterizer settings (tiles and lists as `SplatRenderConfig`'s; ``near`` also
    culls intersections)."""

    filter_sigma: float = math.sqrt(0.5)
    """sigma of the screen-space low-pass filter in pixels (2DGS: sqrt(2) / 2)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ProjectedSurfels:
    """Surfels in one camera (``N`` of them).

    Attributes:
        transform: ``[N, 3, 3]`` rows ``T_u, T_v, T_w``: ``(u, v, 1) -> (x z, y z, z)``.
        normal: ``[N, 3]`` world normal ``t_w``, turned to face the camera.
        center: ``[N, 2]`` pixel position of the centre (the low-pass filter's ``c``).
        depth: ``[N]`` view depth of the centre.
        box_center, extent: ``[N, 2]`` the screen box where ``alpha >= 1/255`` can occur.
        opacity: ``[N]`` opacity, 0 where culled.
        visible: ``[N]`` not culled.
    """

    transform: Float[Array, "N 3 3"]
    normal: Float[Array, "N 3"]
    center: Float[Array, "N 2"]
    depth: Float[Array, " N"]
    box_center: Float[Array, "N 2"]
    extent: Float[Array, "N 2"]
    opacity: Float[Array, " N"]
    visible: jax.Array


def surfel_transforms(means, scales, quats, camera: Cameras):
    """``T = K W [s_u t_u, s_v t_v, p - o]`` (2DGS eq. 9: ``W H`` restricted to the rows
    ``x z, y z, z``) and the camera-facing normals ``n = -sign(t_w . (p - o)) t_w``."""
    rot = quat_to_rotmat(quats)
    w2v = jnp.asarray(FLIP)[:, None] * camera.c2w[:3, :3].T
    zero, one = jnp.zeros_like(camera.fx), jnp.ones_like(camera.fx)
    intrinsics = jnp.stack([jnp.stack([camera.fx, zero, camera.cx]), jnp.stack([zero, camera.fy, camera.cy]),
                            jnp.stack([zero, zero, one])])
    rel = means - camera.c2w[:3, 3]
    columns = jnp.stack([rot[:, :, 0] * scales[:, :1], rot[:, :, 1] * scales[:, 1:2], rel], -1)
    normal = rot[:, :, 2]
    normal = jnp.where(jnp.sum(normal * rel, -1, keepdims=True) > 0, -normal, normal)
    return (intrinsics @ w2v) @ columns, normal


def project(means, scales, quats, opacities, camera: Cameras, config: SurfelRenderConfig,
            alive=None, mean2d_offset=None) -> ProjectedSurfels:
    """Surfels in one camera: `surfel_transforms`, culling and screen boxes.

    With ``r^2 = 2 ln(o / alpha_min)``, where ``G(u, v) o >= alpha_min``, the disk
    ``u^2 + v^2 <= r^2`` projects to the conic whose dual is ``D = T diag(r^2, r^2, -1)
    T^T``; its bounding box is centred at ``(D_02, D_12) / D_22`` with half-widths
    ``sqrt(centre^2 - (D_00, D_11) / D_22)``, joined with the low-pass filter's disk of
    radius ``sigma r`` around ``c``. ``D_22 < 0`` says the whole disk lies in front of the
    camera; surfels that cross the camera plane are culled. ``mean2d_offset [N, 2]``
    shifts each surfel's image by that many pixels (``T_u += dx T_w``, ``T_v += dy
    T_w``): zeros whose gradient is the view-space positional gradient of densification.
    """
    m, normal = surfel_transforms(means, scales, quats, camera)
    if mean2d_offset is not None:
        m = m + jnp.concatenate([mean2d_offset[:, :, None] * m[:, 2:3, :], jnp.zeros_like(m[:, :1])], 1)
    depth = m[:, 2, 2]
    safe = jnp.where(depth > config.near, depth, 1.0)
    center = m[:, :2, 2] / safe[:, None]
    level = jax.lax.stop_gradient(2.0 * jnp.log(jnp.maximum(opacities / ALPHA_MIN, 1.0)))
    g = jax.lax.stop_gradient(m)
    dual = lambda a, b: level * (g[:, a, 0] * g[:, b, 0] + g[:, a, 1] * g[:, b, 1]) - g[:, a, 2] * g[:, b, 2]  # noqa: E731
    d22 = dual(2, 2)
    bounded = d22 < 0
    d22 = jnp.where(bounded, d22, -1.0)
    box = jnp.stack([dual(0, 2), dual(1, 2)], -1) / d22[:, None]
    half = jnp.sqrt(jnp.maximum(box**2 - jnp.stack([dual(0, 0), dual(1, 1)], -1) / d22[:, None], 0.0))
    radius = config.filter_sigma * jnp.sqrt(level)[:, None]
    c = jax.lax.stop_gradient(center)
    lo, hi = jnp.minimum(box - half, c - radius), jnp.maximum(box + half, c + radius)
    box_center, extent = 0.5 * (lo + hi), 0.5 * (hi - lo)
    on_screen = jnp.all((hi > 0) & (lo < jnp.array([camera.width, camera.height])), -1)
    visible = (depth > config.near) & bounded & (opacities >= ALPHA_MIN) & on_screen
    if alive is not None:
        visible = visible & alive
    return ProjectedSurfels(m, normal, center, depth, box_center, extent, jnp.where(visible, opacities, 0.0),
                            visible)


def intersection_geometry(transform: Float[Array, "N 3 3"], center: Float[Array, "N 2"],
                          ref) -> Float[Array, "N 14"]:
    """Per surfel, what `surfel_alpha` needs: the adjugate ``adj(T) = [T_v x T_w, T_w x
    T_u, T_u x T_v]`` (row-major), ``det T``, the projected centre ``c``, its depth
    ``T_w^3`` and the reference depth ``z_0``.

    The meet of the pixel planes is linear in the pixel: ``h = (x T_w - T_u) x (y T_w -
    T_v) = adj(T) (x, y, 1)`` (eq. 10's numerators and denominator), and since ``T (u, v,
    1) = z (x, y, 1)``, ``h = det(T) (u, v, 1) / z``: the intersection is ``u = h_0 /
    h_2``, ``v = h_1 / h_2`` at view depth ``z = det(T) / h_2``.
    """
    tu, tv, tw = transform[:, 0], transform[:, 1], transform[:, 2]
    adj = jnp.stack([jnp.cross(tv, tw), jnp.cross(tw, tu), jnp.cross(tu, tv)], -1)
    det = jnp.sum(tw * jnp.cross(tu, tv), -1)
    return jnp.concatenate([adj.reshape(-1, 9), det[:, None], center, tw[:, 2:],
                            jnp.broadcast_to(ref, det.shape)[:, None]], -1)


def surfel_alpha(pix, geom, opac, valid, *, filter_sigma: float, near: float):
    """Alpha and per-pixel features of one chunk of listed surfels (2DGS eq. 10-11).

    Args:
        pix: ``[t, P, 2]`` pixel centres.
        geom: ``[t, c, 14]`` each surfel's `intersection_geometry`.
        opac, valid: ``[t, c]``.

    Returns:
        ``alpha [t, P, c]`` and ``[t, P, c, 2]``: ``z - z_0`` and ``(z - z_0)^2`` of each
        intersection (0 where alpha is).
    """
    g = geom[:, None]  # [t, 1, c, 14]
    x, y = pix[:, :, None, 0], pix[:, :, None, 1]  # [t, P, 1]
    h0, h1, h2 = (x * g[..., 3 * j] + y * g[..., 3 * j + 1] + g[..., 3 * j + 2] for j in range(3))
    # a ray (nearly) parallel to the plane meets it at |u|, |v| > 1e6: the filter decides
    ok = h2 * h2 > 1e-12 * (h0 * h0 + h1 * h1)
    inv = 1.0 / jnp.where(ok, h2, 1.0)
    u, v = h0 * inv, h1 * inv
    rho3d = jnp.where(ok, u * u + v * v, jnp.inf)
    dx, dy = x - g[..., 10], y - g[..., 11]
    rho2d = (dx * dx + dy * dy) / filter_sigma**2
    flat = rho3d <= rho2d
    z = jnp.where(flat, g[..., 9] * inv, g[..., 12])
    raw = opac[:, None, :] * jnp.exp(-0.5 * jnp.where(flat, rho3d, rho2d))
    keep = valid[:, None, :] & (raw >= ALPHA_MIN) & (z > near)
    dz = jnp.where(keep, z - g[..., 13], 0.0)
    return jnp.where(keep, jnp.minimum(raw, ALPHA_MAX), 0.0), jnp.stack([dz, dz * dz], -1)


def _cut(x, start, size):
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=1)


def _rows(x, start, size):
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def composite_kernel(kernel, chunk, group, pix, geom, opac, feat, valid, background):
    """Front-to-back compositing of per-tile lists whose alpha comes from ``kernel``.

    Args:
        kernel: ``(pix [t, P, 2], geom [t, c, G], opac [t, c], valid [t, c]) -> (alpha
            [t, P, c], pixel features [t, P, c, Fp])`` (static; e.g. `surfel_alpha`).
        chunk, group: list entries per loop iteration, tiles per group (static).
        pix: ``[T, P, 2]``; geom, opac, feat, valid: ``[T, K, G]``, ``[T, K]``, ``[T, K, F]``,
            ``[T, K]`` (entries in use are a prefix of each list).
        background: ``[F + Fp]`` added with the final transmittance.

    Returns:
        ``out [T, P, F + Fp] = sum_i w_i (f_i, f_i(x)) + T_final background`` with
        ``w_i = alpha_i prod_{j<i} (1 - alpha_j)``, and ``T_final [T, P]``.
    """
    return _fwd(kernel, chunk, group, pix, geom, opac, feat, valid, background)[0]


def _fwd(kernel, chunk, group, pix, geom, opac, feat, valid, background):
    tiles, pixels = pix.shape[:2]
    tri = jnp.triu(jnp.ones((chunk, chunk), pix.dtype))
    group, order, take, count, grouped = group_tiles(group, jnp.sum(valid, -1), pix, geom, opac, feat, valid)
    nf = background.shape[0]

    def one_group(b, outs):
        r = b * group
        p, gm, op, ft, v = (_rows(x, r, group) for x in grouped)
        bound = (count[r] + chunk - 1) // chunk  # the group's longest list comes first

        def body(carry):
            k, acc, log_t, done = carry
            s = k * chunk
            alpha, pf = kernel(p, _cut(gm, s, chunk), _cut(op, s, chunk), _cut(v, s, chunk))
            w, _, _, log_t, done = chunk_weights(alpha, log_t, done, tri)
            acc = acc + jnp.concatenate([jnp.einsum("tpc,tcf->tpf", w, _cut(ft, s, chunk)),
                                         jnp.einsum("tpc,tpcf->tpf", w, pf)], -1)
            return k + 1, acc, log_t, done

        init = (jnp.int32(0), jnp.zeros((group, pixels, nf), pix.dtype),
                jnp.zeros((group, pixels), pix.dtype), jnp.zeros((group, pixels), bool))
        _, acc, log_t, _ = jax.lax.while_loop(lambda c: (c[0] < bound) & ~jnp.all(c[3]), body, init)
        return tuple(jax.lax.dynamic_update_slice_in_dim(o, x, r, 0) for o, x in zip(outs, (acc, log_t)))

    padded = count.shape[0]
    acc, log_t = jax.lax.fori_loop(0, padded // group, one_group, (
        jnp.zeros((padded, pixels, nf), pix.dtype), jnp.zeros((padded, pixels), pix.dtype)))
    t_final = jnp.exp(ungroup_tiles(order, log_t, tiles))
    out = ungroup_tiles(order, acc, tiles) + t_final[..., None] * background
    return (out, t_final), (order, take, count, grouped, background, out, t_final)


def _bwd(kernel, chunk, group, res, cotangents):
    """Front to back again: ``dL/dalpha_i = T_i (g.f_i) - (g.R_i + g_T T_final) / (1 -
    alpha_i)`` with ``R_i = C - sum_{j<=i} w_j f_j`` (`splatting.composite_tiles`), and
    ``dL/df_i(x) = w_i g``; both pulled back through ``kernel`` by ``jax.vjp``."""
    order, take, count, grouped, background, out, t_final = res
    g_out, g_t = cotangents
    tiles, pixels = out.shape[:2]
    group = min(group, tiles)
    nc = grouped[3].shape[-1]
    tri = jnp.triu(jnp.ones((chunk, chunk), out.dtype))
    extra = tuple(x[take] for x in (g_out, jnp.sum(g_out * out, -1), g_t * t_final))

    def one_group(b, grads):
        r = b * group
        p, gm, op, ft, v, go, gc, gt = (_rows(x, r, group) for x in (*grouped, *extra))
        bound = (count[r] + chunk - 1) // chunk

        def body(carry):
            k, log_t, done, before, acc = carry
            s = k * chunk
            f = _cut(ft, s, chunk)
            (alpha, pf), pull = jax.vjp(lambda g_, o_: kernel(p, g_, o_, _cut(v, s, chunk)),
                                        _cut(gm, s, chunk), _cut(op, s, chunk))
            w, use, t_i, log_t_next, done = chunk_weights(alpha, log_t, done, tri)
            gf = jnp.einsum("tpf,tcf->tpc", go[..., :nc], f) + jnp.einsum("tpf,tpcf->tpc", go[..., nc:], pf)
            behind = gc[..., None] - before[..., None] - (w * gf) @ tri
            d_alpha = jnp.where(use, t_i * gf - (behind + gt[..., None]) / (1.0 - alpha), 0.0)
            d_geom, d_opac = pull((d_alpha, w[..., None] * go[:, :, None, nc:]))
            d_feat = jnp.einsum("tpc,tpf->tcf", w, go[..., :nc])
            before = before + jnp.sum(w * gf, -1)
            acc = tuple(jax.lax.dynamic_update_slice_in_dim(a, d, s, axis=1)
                        for a, d in zip(acc, (d_geom, d_opac, d_feat)))
            return k + 1, log_t_next, done, before, acc

        init = (jnp.int32(0), jnp.zeros((group, pixels), out.dtype), jnp.zeros((group, pixels), bool),
                jnp.zeros((group, pixels), out.dtype), tuple(jnp.zeros_like(x) for x in (gm, op, ft)))
        *_, acc = jax.lax.while_loop(lambda c: (c[0] < bound) & ~jnp.all(c[2]), body, init)
        return tuple(jax.lax.dynamic_update_slice_in_dim(g, a, r, 0) for g, a in zip(grads, acc))

    grads = tuple(jnp.zeros_like(x) for x in grouped[1:4])
    grads = jax.lax.fori_loop(0, count.shape[0] // group, one_group, grads)
    grads = tuple(ungroup_tiles(order, g, tiles) for g in grads)
    return (None, *grads, None, jnp.sum(g_out * t_final[..., None], (0, 1)))


composite_kernel.defvjp(_fwd, _bwd)


def _outputs(image, ref) -> dict:
    """``[..., 3 rgb, 3 normal, S_1, S_2, opacity]`` -> the named maps."""
    s1, s2, opacity = image[..., 6], image[..., 7], image[..., 8]
    return {"rgb": image[..., :3], "normal": image[..., 3:6], "depth": s1 + ref * opacity, "opacity": opacity,
            "distortion": 2.0 * (opacity * s2 - s1 * s1)}


def rasterize(means, scales, quats, opacities, colors, camera: Cameras, background,
              config: SurfelRenderConfig = SurfelRenderConfig(), alive=None, mean2d_offset=None) -> dict:
    """Render one camera (jit-able; the image size is static in ``camera``).

    Args:
        means [N, 3], scales [N, 2] (world units), quats [N, 4] ``(w, x, y, z)``,
        opacities [N], colors [N, 3]: activated surfel parameters.
        background: ``[3]`` colour behind the surfels.
        alive: ``[N]`` slots in use.
        mean2d_offset: ``[N, 2]`` zeros; their gradient is the screen-space positional one.

    Returns:
        ``rgb [H, W, 3]``, ``depth [H, W]`` (``sum_i w_i z_i``, view depth), ``opacity``
        (``1 - T_final``), ``normal [H, W, 3]`` (``sum_i w_i n_i``, world), ``distortion
        [H, W]`` (``sum_{i,j} w_i w_j (z_i - z_j)^2``), ``overflow`` and ``visible [N]``.
    """
    proj = project(means, scales, quats, opacities, camera, config, alive, mean2d_offset)
    ids, valid, overflow = bin_boxes(proj.box_center, proj.extent, jax.lax.stop_gradient(proj.depth), proj.visible,
                                     camera.width, camera.height, config)
    vis = proj.visible.astype(means.dtype)
    ref = jax.lax.stop_gradient(jnp.sum(proj.depth * vis) / jnp.maximum(jnp.sum(vis), 1.0))
    geom = intersection_geometry(proj.transform, proj.center, ref)
    feat = jnp.concatenate([colors, proj.normal], -1)
    bg = jnp.concatenate([background, jnp.zeros(5, background.dtype)])
    kernel = functools.partial(surfel_alpha, filter_sigma=config.filter_sigma, near=config.near)
    out, t_final = composite_kernel(kernel, config.chunk, config.tile_group,
                                    tile_pixels(camera.width, camera.height, config.tile_size).astype(means.dtype),
                                    geom[ids], proj.opacity[ids], feat[ids], valid, bg)
    image = untile(jnp.concatenate([out, 1.0 - t_final[..., None]], -1), camera, config.tile_size)
    return _outputs(image, ref) | {"overflow": overflow, "visible": proj.visible}


def render_dense(means, scales, quats, opacities, colors, camera: Cameras, background,
                 config: SurfelRenderConfig = SurfelRenderConfig(), alive=None) -> dict:
    """Slow reference: every surfel against every pixel by world-space ray-plane
    intersection, ``O(N^2 H W)`` memory (the distortion as the explicit double sum).

    The ray ``o + t d`` meets the plane ``(x - p) . t_w = 0`` at ``t = (p - o) . t_w / d .
    t_w``; ``u = (x - p) . t_u / s_u``, ``v`` likewise; the same culling, low-pass filter,
    alpha rule, order and early termination as `rasterize`, plain autodiff.
    """
    proj = project(means, scales, quats, opacities, camera, config, alive)
    order = depth_order(proj.depth, proj.visible)
    o, d = (x.reshape(-1, 3) for x in image_rays(camera))
    rot = quat_to_rotmat(quats)[order]
    p, s = means[order], scales[order]
    cos = d @ rot[:, :, 2].T  # [P, N]
    ok = jnp.abs(cos) > 1e-7
    t = jnp.sum((p - o[0]) * rot[:, :, 2], -1) / jnp.where(ok, cos, 1.0)
    rel = o[:, None] + t[..., None] * d[:, None] - p  # x - p
    u = jnp.einsum("pnk,nk->pn", rel, rot[:, :, 0]) / s[:, 0]
    v = jnp.einsum("pnk,nk->pn", rel, rot[:, :, 1]) / s[:, 1]
    rho3d = jnp.where(ok, u * u + v * v, jnp.inf)
    j, i = jnp.meshgrid(jnp.arange(camera.height), jnp.arange(camera.width), indexing="ij")
    pix = jnp.stack([i, j], -1).reshape(-1, 2).astype(means.dtype) + 0.5
    rho2d = jnp.sum((pix[:, None] - proj.center[order]) ** 2, -1) / config.filter_sigma**2
    flat = rho3d <= rho2d
    forward = -camera.c2w[:3, 2]
    z = jnp.where(flat, t * (d @ forward)[:, None], proj.depth[order])
    raw = proj.opacity[order] * jnp.exp(-0.5 * jnp.where(flat, rho3d, rho2d))
    alpha = jnp.where((raw >= ALPHA_MIN) & (z > config.near), jnp.minimum(raw, ALPHA_MAX), 0.0)
    lg = jnp.log1p(-alpha)
    incl = jnp.cumsum(lg, -1)
    w = jnp.where(incl >= math.log(T_MIN), alpha * jnp.exp(incl - lg), 0.0)
    t_final = jnp.exp(jnp.sum(jnp.where(incl >= math.log(T_MIN), lg, 0.0), -1))
    feat = jnp.concatenate([colors, proj.normal], -1)[order]
    shape = (camera.height, camera.width)
    dist = jnp.einsum("pi,pj,pij->p", w, w, (z[:, :, None] - z[:, None, :]) ** 2)
    return {"rgb": (w @ feat[:, :3] + t_final[:, None] * background).reshape(*shape, 3),
            "normal": (w @ feat[:, 3:]).reshape(*shape, 3), "depth": jnp.sum(w * z, -1).reshape(shape),
            "opacity": (1.0 - t_final).reshape(shape), "distortion": dist.reshape(shape)}


def depth_normals(depth: Float[Array, "H W"], opacity: Float[Array, "H W"], camera: Cameras) -> Float[Array, "H W 3"]:
    """World normals of the rendered surface: the points ``P(x, y)`` at the expected depth
    ``depth / opacity`` along each pixel's ray, ``N = normalize(dP/dy x dP/dx)`` by central
    differences (2DGS sec. 4.2, "normal consistency"), facing the camera; 0 on the border."""
    z = depth / jnp.maximum(opacity, 1e-6)
    j, i = jnp.meshgrid(jnp.arange(camera.height, dtype=z.dtype), jnp.arange(camera.width, dtype=z.dtype),
                        indexing="ij")
    view = jnp.stack([(i + 0.5 - camera.cx) / camera.fx * z, (j + 0.5 - camera.cy) / camera.fy * z, z], -1)
    points = (view * jnp.asarray(FLIP)) @ camera.c2w[:3, :3].T
    dx = points[1:-1, 2:] - points[1:-1, :-2]
    dy = points[2:, 1:-1] - points[:-2, 1:-1]
    n = jnp.cross(dy, dx)
    n = n * jax.lax.rsqrt(jnp.maximum(jnp.sum(n * n, -1, keepdims=True), 1e-20))
    return jnp.pad(n, ((1, 1), (1, 1), (0, 0)))
