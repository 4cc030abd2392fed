"""Ray marching with empty-space skipping, for training batches and whole images.

The renderer knows nothing about encodings: it receives the field as a callable,
``field_fn(x [N, 3], d [N, 3]) -> (sigma [N], rgb [N, 3])``, in world coordinates.

Training (`render_rays`, inside jit): ``S`` stratified samples per ray inside the box,
occupancy test, the occupied ones packed into a budget of ``K``, evaluated and composited
packed (`sparsefield.renderers.volume.composite_packed`).

Images (`render_image`, outside jit, chunked): the same march, without a budget. A cheap
first pass counts the occupied samples of a chunk; the field then runs on exactly those,
packed into a buffer rounded up to a power of two, so a handful of compiled shapes serve
every chunk and memory is bounded by ``chunk * S`` whatever the image size. (A variant
that first evaluated density only and shaded just the samples still visible through
``min_transmittance`` lost more to its second march than it saved: 1.6 s against 1.35 s
per 400x400 view of the demo scene on a 2-core CPU.)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Annotated

import jax
import jax.numpy as jnp
import numpy as np
import tyro
from jax.sharding import NamedSharding, PartitionSpec as P
from jaxtyping import Array, Bool, Float, Int

from ..cameras import Cameras, image_rays, intersect_box
from .samplers import SampleAnnealing, pack_samples, sample_stratified, unpack
from .spaces import NDC, Contraction
from .volume import composite_packed


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Ray marching settings."""

    num_samples: int = 192
    """Samples per ray S, spread evenly over the ray's segment inside the scene box (a
    step of diagonal / S; only the samples in occupied cells are evaluated). Demo scene,
    all 100 views, 1000 steps: 96 gives 28.51 dB, 128 29.30 dB, 192 30.06 dB."""
    sample_budget: int = 2**16
    """Field evaluations per training batch K; rays that do not fit are skipped."""
    min_transmittance: float = 1e-4
    """Early termination: samples seen through less than this are not shaded."""
    chunk: int = 2**13
    """Rays per chunk when rendering images."""
    anneal: SampleAnnealing | None = None
    """RegNeRF's sample-space annealing of the training rays' range; off if None."""
    space: (
        Annotated[NDC, tyro.conf.subcommand("ndc")]
        | Annotated[Contraction, tyro.conf.subcommand("contract")]
        | Annotated[None, tyro.conf.subcommand("box")]
    ) = None
    """Scene parameterisation: ``render.space:box`` (the scene box in world space),
    ``render.space:ndc`` (forward-facing) or ``render.space:contract`` (unbounded)."""


def march(
    origins: Float[Array, "R 3"],
    directions: Float[Array, "R 3"],
    bbox: Float[Array, "2 3"],
    occupancy,
    num_samples: int,
    key: jax.Array | None,
    anneal: SampleAnnealing | None = None,
    step=None,
    space=None,
):
    """Sample points along rays and mark the ones in occupied cells.

    With ``anneal`` and a training ``step``, the samples cover the annealed range of
    each ray's segment inside the box instead of all of it. With a ``space``
    (`sparsefield.renderers.spaces`), it places the samples and the points ``x`` are in
    its parameter space, where the occupancy test happens.

    Returns:
        ``t [R, S]``, ``deltas [R, S]``, points ``x [R, S, 3]`` and ``mask [R, S]``.
    """
    if space is not None:
        t, deltas, x, hit = space.sample(origins, directions, num_samples, key, bbox)
        bbox = space.param_box(bbox)
    else:
        t_near, t_far, hit = intersect_box(origins, directions, bbox[0], bbox[1])
        if anneal is not None and step is not None:
            t_near, t_far = anneal.bounds(t_near, t_far, step)
        t, deltas = sample_stratified(t_near, t_far, num_samples, key)
        x = origins[:, None, :] + t[..., None] * directions[:, None, :]
    mask = jnp.broadcast_to(hit[:, None], t.shape)
    if occupancy is not None:
        unit = (x - bbox[0]) / (bbox[1] - bbox[0])
        mask = mask & occupancy.query(unit)
    return t, deltas, x, mask


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PackedSamples:
    """The evaluated samples of a batch of ``R`` rays in ``K`` slots, a ray's samples
    contiguous and in order along it (`shade_packed`).

    Attributes:
        ray: ``[K]`` ray id of each slot; ``R`` (one past the last ray) in unused slots.
        sample: ``[K]`` position along its ray (``0 .. S - 1``).
        index: ``[K]`` into the flat ``[R, S]`` sample arrays.
        valid: ``[K]`` slot holds a sample.
        t, deltas: ``[K]`` distance along the ray and interval length (scene units).
        s, ds: ``[K]`` the same normalised to the scene: over the box diagonal, or the
            scene space's own normalisation (`sparsefield.renderers.spaces`).
        sigma: ``[K]`` density (0 in unused slots); weights: ``[K]`` ``w_i = T_i alpha_i``;
        trans: ``[K]`` transmittance ``T_i`` before the sample.
    """

    ray: Int[Array, " K"]
    sample: Int[Array, " K"]
    index: Int[Array, " K"]
    valid: Bool[Array, " K"]
    t: Float[Array, " K"]
    deltas: Float[Array, " K"]
    s: Float[Array, " K"]
    ds: Float[Array, " K"]
    sigma: Float[Array, " K"]
    weights: Float[Array, " K"]
    trans: Float[Array, " K"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RenderedRays:
    """What rendering a batch of rays gives, and what every loss term reads
    (`sparsefield.losses.base.LossInputs`). Renderers without samples along rays (the
    Gaussian rasterizer) fill ``rgb``, ``depth``, ``opacity``, ``complete`` and
    ``distance`` and leave the sample fields None.

    Attributes:
        rgb: ``[R, 3]`` colour composited on the background.
        depth: ``[R]`` expected ray distance ``sum_i w_i t_i`` (unnormalised: empty rays 0).
        opacity: ``[R]`` ``O(r) = sum_i w_i``.
        complete: ``[R]`` rays whose samples all fit in the budget (only these count).
        distance: ``[R]`` expected normalised distance, the part nothing stops ending at
            the ray's far bound: ``sum_i w_i s_i + (1 - O) s_far`` (finite on empty rays).
        t, deltas, s, ds: ``[R, S]`` every sample's distance and interval, in scene units
            and normalised (evaluated or not).
        samples: the evaluated samples (`PackedSamples`).
        marched: occupied samples marched (before the budget), a scalar.
    """

    rgb: Float[Array, "R 3"]
    depth: Float[Array, " R"]
    opacity: Float[Array, " R"]
    complete: Bool[Array, " R"]
    distance: Float[Array, " R"]
    t: Float[Array, "R S"] | None = None
    deltas: Float[Array, "R S"] | None = None
    s: Float[Array, "R S"] | None = None
    ds: Float[Array, "R S"] | None = None
    samples: PackedSamples | None = None
    marched: Array | None = None

    @classmethod
    def from_dense(cls, complete, sigma=None, weights=None, t=None, deltas=None, s=None, ds=None, opacity=None,
                   rgb=None, depth=None, distance=None) -> "RenderedRays":
        """Rays all of whose ``S`` samples were evaluated, from dense ``[R, S]`` arrays
        (for tests and tools: what a loss term sees); absent arrays are zeros, ``opacity``
        defaults to the summed weights."""
        complete = jnp.asarray(complete)
        shape = next(jnp.shape(a) for a in (sigma, weights, t, s) if a is not None)
        zeros = jnp.zeros(shape, jnp.float32)
        pick = lambda a: zeros if a is None else jnp.asarray(a, jnp.float32)  # noqa: E731
        sigma, weights, t, deltas, s, ds = map(pick, (sigma, weights, t, deltas, s, ds))
        index = jnp.arange(shape[0] * shape[1])
        samples = PackedSamples(ray=index // shape[1], sample=index % shape[1], index=index,
                                valid=jnp.ones(index.shape, bool), t=t.ravel(), deltas=deltas.ravel(), s=s.ravel(),
                                ds=ds.ravel(), sigma=sigma.ravel(), weights=weights.ravel(), trans=zeros.ravel())
        opacity = jnp.sum(weights, axis=-1) if opacity is None else jnp.asarray(opacity)
        rays = jnp.zeros(shape[:1])
        return cls(rgb=jnp.zeros(shape[:1] + (3,)) if rgb is None else rgb, depth=rays if depth is None else depth,
                   opacity=opacity, complete=complete, distance=rays if distance is None else distance,
                   t=t, deltas=deltas, s=s, ds=ds, samples=samples)

    def dense(self, values: Float[Array, " K"]) -> Float[Array, "R S"]:
        """Packed per-sample values scattered into ``[R, S]`` (zero where not evaluated)."""
        return unpack(values, self.samples.index, self.samples.valid, self.t.shape)

    @property
    def sigma(self) -> Float[Array, "R S"]:
        """Densities ``[R, S]``, zero where a sample was skipped."""
        return self.dense(self.samples.sigma)

    @property
    def weights(self) -> Float[Array, "R S"]:
        """Compositing weights ``[R, S]``, zero where a sample was skipped."""
        return self.dense(self.samples.weights)


def render_rays(
    field_fn,
    origins: Float[Array, "R 3"],
    directions: Float[Array, "R 3"],
    background: Float[Array, "R 3"],
    bbox: Float[Array, "2 3"],
    occupancy,
    config: RenderConfig,
    key: jax.Array | None,
    step=None,
    diagonal: float | None = None,
) -> RenderedRays:
    """Render a batch of rays with a fixed sample budget (differentiable, jit-friendly).

    Args:
        field_fn: ``(x [N, 3], d [N, 3]) -> (sigma [N], rgb [N, 3])`` in the space the
            samples live in (world, or ``config.space``'s parameter space).
        occupancy: what marks samples worth evaluating (``query(unit) -> bool``, e.g. an
            occupancy occupancy's state), or None for every sample.
        step: the training step; drives ``config.anneal`` (None: the full range).
        diagonal: the scene box diagonal normalising ``s`` (default: from ``bbox``).
    """
    t, deltas, x, mask = march(
        origins, directions, bbox, occupancy, config.num_samples, key, config.anneal, step, config.space
    )
    out = shade_packed(field_fn, t, deltas, x, mask, directions, config.sample_budget, background)
    packed = out.pop("packed")
    if diagonal is None:
        diagonal = jnp.linalg.norm(bbox[1] - bbox[0])
    space = config.space
    if space is None:
        s, ds = t / diagonal, deltas / diagonal
        packed_s, packed_ds = packed["t"] / diagonal, packed["deltas"] / diagonal
    else:
        s, ds = space.distortion_coords(t, deltas, diagonal)
        packed_s, packed_ds = s.ravel()[packed["index"]], ds.ravel()[packed["index"]]
    samples = PackedSamples(s=packed_s, ds=packed_ds, **packed)
    weights = unpack(samples.weights, samples.index, samples.valid, mask.shape)
    s_far = s[:, -1] + 0.5 * ds[:, -1]
    distance = jnp.sum(weights * s, axis=-1) + (1.0 - jnp.sum(weights, axis=-1)) * s_far
    return RenderedRays(
        rgb=out["rgb"], depth=out["depth"], opacity=out["opacity"], complete=out["complete"],
        distance=distance, t=t, deltas=deltas, s=s, ds=ds, samples=samples, marched=jnp.sum(mask),
    )


def shade_packed(field_fn, t, deltas, x, mask, directions, budget: int, background) -> dict[str, Array]:
    """Pack the marked samples into ``budget`` slots, evaluate the field on them and
    composite them packed (`composite_packed`).

    Returns:
        ``rgb [R, 3]``, ``depth [R]``, ``opacity [R]``, ``complete [R]`` and ``packed``:
        per slot ``ray`` (id; ``R`` for unused slots), ``sample`` (position along the
        ray), ``index`` (into the flat ``[R, S]`` arrays), ``valid``, ``t``, ``deltas``,
        ``sigma`` (0 in unused slots), ``weights`` and ``trans``.
    """
    num_rays, num_samples = mask.shape
    index, valid, complete = pack_samples(mask, budget)
    ray_of = index // num_samples
    sigma, rgb = field_fn(x.reshape(-1, 3)[index], directions[ray_of])
    sigma = jnp.where(valid, sigma, 0.0)
    ray = jnp.where(valid, ray_of, num_rays)
    t_k, deltas_k = t.ravel()[index], deltas.ravel()[index]
    out = composite_packed(sigma, rgb, t_k, deltas_k, ray, num_rays, background, num_samples)
    out["packed"] = {
        "ray": ray, "sample": index % num_samples, "index": index, "valid": valid,
        "t": t_k, "deltas": deltas_k, "sigma": sigma,
        "weights": out.pop("weights"), "trans": out.pop("trans"),
    }
    out["complete"] = complete
    return out


SURFACE_TRANSMITTANCE = 0.65
"""Where a ray meets the surface, for meshes fused from depth: the distance at which its
transmittance falls through this level. A trained field's density rises over a few
samples, so the expected depth (like the crossing of 1/2) lands behind the true surface:
0.01-0.02 world units on the generated scenes (3-unit box, 192 samples), where the
crossing of 0.8 lands within 0.001 on four scenes of five. Fog lies in front of the
surface, though, and an earlier crossing meets more of it. Over the six scenes of
docs/meshes.md, 0.65 gave fused meshes a lower Chamfer distance than the expected
depth at 3 and at 8 views, and than 0.8 (`sparsefield.outputs.fused_mesh`)."""


def surface_depth(packed: dict, num_rays: int) -> Float[Array, " R"]:
    """``[R]`` ray distance at which each ray's transmittance falls through
    `SURFACE_TRANSMITTANCE`, 0 on rays that stay clearer. Inside the crossing sample's
    bin ``[t - delta/2, t + delta/2]`` the density is constant, so the transmittance
    decays as ``T e^{-sigma x}`` and the crossing sits ``x = ln(T / level) / sigma`` past
    the bin's near edge.

    Args:
        packed: per slot ``valid``, ``t``, ``deltas``, ``sigma``, ``weights``, ``trans``
            and ``ray`` (`shade_packed`).
    """
    level, trans = SURFACE_TRANSMITTANCE, packed["trans"]
    crossing = packed["valid"] & (trans >= level) & (trans - packed["weights"] < level)
    into = jnp.log(jnp.maximum(trans, level) / level) / jnp.maximum(packed["sigma"], 1e-12)
    depth = packed["t"] - 0.5 * packed["deltas"] + jnp.minimum(into, packed["deltas"])
    return jax.ops.segment_sum(jnp.where(crossing, depth, 0.0), packed["ray"], num_rays)


def _bucket(n: int, minimum: int = 2**15) -> int:
    """Smallest power of two >= n (and >= minimum): a few compiled shapes serve all.

    The minimum keeps nearly empty chunks (background) from compiling shapes of their
    own: the 25 test views of the demo scene needed 9 shapes (2^10 to 2^18) with a
    minimum of 2^10 and need 4 with 2^15, each a few seconds to compile, while the
    padding costs the ~100 small chunks a few milliseconds each."""
    return max(minimum, 1 << max(0, int(n) - 1).bit_length())


@functools.partial(jax.jit, static_argnames=("num_samples", "space"))
def _march_count(origins, directions, bbox, occupancy, num_samples, space=None):
    _, _, _, mask = march(origins, directions, bbox, occupancy, num_samples, None, space=space)
    return jnp.sum(mask)


@functools.partial(jax.jit, static_argnames=("field_fn", "num_samples", "budget", "space"))
def _field_pass(field_fn, params, origins, directions, bbox, occupancy, background, num_samples, budget, min_trans,
                space=None):
    t, deltas, x, mask = march(origins, directions, bbox, occupancy, num_samples, None, space=space)
    out = shade_packed(lambda xs, ds: field_fn(params, xs, ds), t, deltas, x, mask, directions, budget, background)
    packed = out.pop("packed")
    seen = packed["valid"] & (packed["trans"] > min_trans)
    out["samples"] = jax.ops.segment_sum(seen.astype(jnp.int32), packed["ray"], mask.shape[0])
    out["surface_depth"] = surface_depth(packed, mask.shape[0])
    del out["complete"]
    return out


def render_chunk(field_fn, params, origins, directions, bbox, occupancy, config, background, mesh=None):
    """Render one chunk of rays (inference): count the occupied samples, then evaluate
    the field on exactly those, packed into a power-of-two buffer. With a ``mesh``, the
    chunk is split along its one axis and each device marches and shades its part."""
    if mesh is None:
        n = int(_march_count(origins, directions, bbox, occupancy, config.num_samples, config.space))
        return _field_pass(
            field_fn, params, origins, directions, bbox, occupancy, background, config.num_samples,
            _bucket(n), config.min_transmittance, config.space,
        )
    counts = _march_count_sharded(mesh, origins, directions, bbox, occupancy, config.num_samples, config.space)
    return _field_pass_sharded(
        mesh, field_fn, params, origins, directions, bbox, occupancy, background, config.num_samples,
        _bucket(int(np.max(counts))), config.min_transmittance, config.space,
    )


@functools.partial(jax.jit, static_argnames=("mesh", "num_samples", "space"))
def _march_count_sharded(mesh, origins, directions, bbox, occupancy, num_samples, space=None):
    rays, rep = P(mesh.axis_names[0]), P()
    count = lambda o, d, b, g: _march_count(o, d, b, g, num_samples, space)[None]  # noqa: E731
    return jax.shard_map(count, mesh=mesh, in_specs=(rays, rays, rep, rep), out_specs=rays)(
        origins, directions, bbox, occupancy)


@functools.partial(jax.jit, static_argnames=("mesh", "field_fn", "num_samples", "budget", "space"))
def _field_pass_sharded(mesh, field_fn, params, origins, directions, bbox, occupancy, background,
                        num_samples, budget, min_trans, space=None):
    rays, rep = P(mesh.axis_names[0]), P()
    shade = lambda p, o, d, b, g, bg, m: _field_pass(  # noqa: E731
        field_fn, p, o, d, b, g, bg, num_samples, budget, m, space)
    return jax.shard_map(shade, mesh=mesh, in_specs=(rep, rays, rays, rep, rep, rep, rep), out_specs=rays)(
        params, origins, directions, bbox, occupancy, background, min_trans)


def render_image(
    field_fn, params, camera: Cameras, bbox, occupancy, config: RenderConfig, background, mesh=None
) -> dict[str, np.ndarray]:
    """Render one camera: ``rgb [H, W, 3]``, ``depth [H, W]``, ``opacity [H, W]``,
    ``samples [H, W]`` (occupied samples per ray seen through more than
    ``min_transmittance``: the ones that matter) and ``surface_depth [H, W]``
    (`surface_depth`), as numpy arrays.

    Here the field callable takes the parameters first, ``field_fn(params, x, d)``, and
    must be hashable (a static jit argument, e.g. a bound method of a frozen field): the
    same object reuses compiled code across calls.

    With a device ``mesh`` (one axis), each chunk holds ``chunk`` rays per device and is
    split over the devices; parameters and occupancy are replicated on them once.
    """
    origins, directions = image_rays(camera)
    origins = origins.reshape(-1, 3)
    directions = directions.reshape(-1, 3)
    bbox = jnp.asarray(bbox, jnp.float32)
    background = jnp.asarray(background, jnp.float32)
    total = origins.shape[0]
    chunk = config.chunk
    if mesh is not None:
        params, occupancy = jax.device_put((params, occupancy), NamedSharding(mesh, P()))
        chunk *= mesh.devices.size
    pad = (-total) % chunk
    origins = jnp.pad(origins, ((0, pad), (0, 0)))
    directions = jnp.pad(directions, ((0, pad), (0, 0)), constant_values=1.0)
    parts = []
    for start in range(0, total + pad, chunk):
        sl = slice(start, start + chunk)
        out = render_chunk(field_fn, params, origins[sl], directions[sl], bbox, occupancy, config, background, mesh)
        parts.append(jax.device_get(out))
    merged = {k: np.concatenate([p[k] for p in parts])[:total] for k in parts[0]}
    shape = (camera.height, camera.width)
    return {k: v.reshape(shape + v.shape[1:]) for k, v in merged.items()}
