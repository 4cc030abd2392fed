"""Loss terms: values on hand-made inputs (through the render-output contract,
`RenderedRays` in `LossInputs`) against their definitions; sample-space annealing, the
renderer's per-sample densities and unseen-view patches."""

import dataclasses
import itertools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from sparsefield.cameras import look_at, make_cameras
from sparsefield.datasets.batches import RayData, sample_patches
from sparsefield.losses.base import LossInputs, binary_entropy, usable_terms
from sparsefield.losses.distortion import Distortion, distortion, distortion_packed
from sparsefield.losses.entropy import RayEntropy, ray_entropy
from sparsefield.losses.occlusion import Occlusion
from sparsefield.losses.opacity import MaskLoss, OpacityPrior
from sparsefield.losses.regularizers import Regularizers
from sparsefield.losses.smoothness import (
    ColorSmoothness,
    DepthSmoothness,
    UnseenPatches,
    depth_smoothness,
    unseen_patches,
)
from sparsefield.renderers.render import RenderConfig, RenderedRays, render_rays
from sparsefield.renderers.samplers import SampleAnnealing
from sparsefield.renderers.volume import composite_weights


def brute_force_distortion(w, s, ds):
    pairs = sum(w[i] * w[j] * abs(s[i] - s[j]) for i, j in itertools.product(range(len(w)), repeat=2))
    return pairs + np.sum(w**2 * ds) / 3.0


def test_distortion_matches_double_sum():
    rng = np.random.default_rng(0)
    w = rng.random((4, 9))
    s = np.sort(rng.random((4, 9)), axis=-1)
    ds = rng.random((4, 9)) * 0.1
    want = [brute_force_distortion(w[r], s[r], ds[r]) for r in range(4)]
    got = distortion(jnp.asarray(w), jnp.asarray(s), jnp.asarray(ds))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_distortion_prefers_one_compact_interval():
    s = jnp.linspace(0.05, 0.95, 10)[None]
    ds = jnp.full((1, 10), 0.1)
    concentrated = jnp.zeros((1, 10)).at[0, 4].set(1.0)
    spread = jnp.zeros((1, 10)).at[0, 1].set(0.5).at[0, 8].set(0.5)
    # One full-weight interval: only the intra term, w^2 ds / 3.
    np.testing.assert_allclose(distortion(concentrated, s, ds), [0.1 / 3.0], rtol=1e-6)
    # Two half-weight intervals 0.7 apart: 2 * 0.25 * 0.7 + 2 * 0.25 * 0.1 / 3.
    np.testing.assert_allclose(distortion(spread, s, ds), [0.35 + 0.05 / 3.0], rtol=1e-6)


def loss(term, rays, batch=None, **extra):
    """``term`` on hand-made rays, as the train step calls it."""
    return term(LossInputs(rays, batch or {}, 0, **extra))


def test_distortion_term_averages_complete_rays_only():
    rays = RenderedRays.from_dense(
        complete=jnp.array([True, False]), weights=jnp.array([[1.0, 0.0], [0.5, 0.5]]),
        s=jnp.array([[0.25, 0.75], [0.25, 0.75]]), t=jnp.array([[0.25, 0.75], [0.25, 0.75]]),
        ds=jnp.full((2, 2), 0.5))
    np.testing.assert_allclose(loss(Distortion(), rays), 0.5 / 3.0, rtol=1e-6)


def test_packed_distortion_and_occlusion_equal_the_dense_terms():
    rng = np.random.default_rng(1)
    rays, samples = 5, 12
    mask = rng.random((rays, samples)) < 0.4
    w = np.where(mask, rng.random((rays, samples)) * 0.3, 0.0)
    sigma = np.where(mask, rng.random((rays, samples)) * 5, 0.0)
    s = np.broadcast_to(np.linspace(0.05, 0.95, samples), (rays, samples))
    ds = np.full((rays, samples), 0.9 / samples)
    ray, sample = np.nonzero(mask)
    pad = 3  # unused slots after the last ray, as the renderer leaves them
    packed = {
        "ray": jnp.asarray(np.r_[ray, [rays] * pad]), "sample": jnp.asarray(np.r_[sample, [0] * pad]),
        "weights": jnp.asarray(np.r_[w[mask], [0.0] * pad]), "sigma": jnp.asarray(np.r_[sigma[mask], [0.0] * pad]),
        "s": jnp.asarray(np.r_[s[mask], [0.0] * pad]), "ds": jnp.asarray(np.r_[ds[mask], [0.0] * pad]),
    }
    np.testing.assert_allclose(
        distortion_packed(packed["weights"], packed["s"], packed["ds"], packed["ray"], rays, samples),
        distortion(jnp.asarray(w), jnp.asarray(s), jnp.asarray(ds)), rtol=1e-5, atol=1e-7)
    complete = jnp.array([True, True, False, True, True])
    batch = {"rgb": jnp.asarray(rng.random((rays, 3))).at[1].set(1.0)}
    # The same rays packed as the renderer packs them (skipped samples absent, unused
    # slots after the last ray) and with every sample evaluated: equal terms.
    dense = RenderedRays.from_dense(complete, sigma=sigma, weights=w, t=s, s=s, ds=ds)
    index = jnp.asarray(np.r_[np.flatnonzero(mask), [0] * pad])
    sparse = dataclasses.replace(dense, samples=dataclasses.replace(
        dense.samples, index=index, valid=jnp.arange(len(index)) < mask.sum(), t=packed["s"], deltas=packed["ds"],
        trans=packed["s"], **packed))
    for term in (Distortion(), Occlusion(range=4), Occlusion(range=2, bw_range=6)):
        np.testing.assert_allclose(loss(term, sparse, batch), loss(term, dense, batch), rtol=1e-5)


def test_regularizers_lists_terms_that_are_on():
    assert Regularizers().terms() == {}
    assert list(Regularizers(distortion=Distortion()).terms()) == ["distortion"]


# ---- FreeNeRF occlusion --------------------------------------------------------------------

SIGMA = jnp.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 9.0, 9.0, 9.0]])
RGB = jnp.array([[1.0, 1.0, 1.0], [0.5, 0.4, 0.3], [0.0, 0.0, 0.0]])  # white, grey, black
COMPLETE = jnp.array([True, True, False])


def test_occlusion_penalises_the_first_m_samples():
    rays, batch = RenderedRays.from_dense(COMPLETE, sigma=SIGMA), {"rgb": RGB}
    # (1/K) sum_{k<M} sigma_k with K = 4, M = 2: rays 0.75 and 2.75; ray 2 is incomplete.
    np.testing.assert_allclose(loss(Occlusion(range=2), rays, batch), (0.75 + 2.75) / 2, rtol=1e-6)
    # Black/white prior: the white ray is penalised over M_bw = 3 samples, the grey over M = 1.
    np.testing.assert_allclose(loss(Occlusion(range=1, bw_range=3), rays, batch), (6 / 4 + 5 / 4) / 2, rtol=1e-6)
    # Only black or white rays.
    np.testing.assert_allclose(loss(Occlusion(range=0, bw_range=2), rays, batch), (3 / 4 + 0.0) / 2, rtol=1e-6)


# ---- InfoNeRF ray entropy ------------------------------------------------------------------


def entropy_outputs(sigma, deltas, complete):
    weights, _ = composite_weights(sigma, deltas)
    return RenderedRays.from_dense(complete, sigma=sigma, deltas=deltas, weights=weights)


def test_ray_entropy_values():
    np.testing.assert_allclose(ray_entropy(jnp.full((1, 4), 0.3)), [2.0], rtol=1e-5)  # uniform: log2 4
    np.testing.assert_allclose(ray_entropy(jnp.array([[0.0, 0.7, 0.0, 0.0]])), [0.0], atol=1e-6)
    # p = (1/2, 1/4, 1/4, 0): 1/2 * 1 + 2 * 1/4 * 2 = 1.5 bits
    np.testing.assert_allclose(ray_entropy(jnp.array([[0.5, 0.25, 0.25, 0.0]])), [1.5], rtol=1e-5)


def test_ray_entropy_term_masks_empty_and_incomplete_rays():
    sigma = jnp.array([
        [1.0, 1.0, 1.0, 1.0],   # uniform alpha, opacity 1 - e^-4: H = 2 bits
        [0.0, 50.0, 0.0, 0.0],  # one opaque sample: H = 0
        [0.01, 0.01, 0.01, 0.01],  # opacity ~0.04 < 0.1: masked, counts 0
        [1.0, 1.0, 1.0, 1.0],   # incomplete: left out of the mean
    ])
    out = entropy_outputs(sigma, jnp.ones((4, 4)), jnp.array([True, True, True, False]))
    np.testing.assert_allclose(loss(RayEntropy(), out), (2.0 + 0.0 + 0.0) / 3, rtol=1e-5)
    # With p_i = w_i / sum w, the uniform-density ray has decaying weights: H < 2 bits.
    w = out.weights[0]
    p = w / jnp.sum(w)
    want = -float(jnp.sum(p * jnp.log2(p))) / 3
    np.testing.assert_allclose(loss(RayEntropy(distribution="weights"), out), want, rtol=1e-5)


# ---- opacity prior and mask loss -----------------------------------------------------------


def opacity_rays(opacity, complete):
    return RenderedRays.from_dense(jnp.array(complete), t=jnp.zeros((len(opacity), 1)), opacity=jnp.array(opacity))


def test_opacity_prior_values():
    out = opacity_rays([0.5, 1.0, 0.0, 0.5], [True, True, True, False])
    np.testing.assert_allclose(binary_entropy(jnp.array([0.5])), [np.log(2.0)], rtol=1e-6)
    np.testing.assert_allclose(loss(OpacityPrior(), out), np.log(2.0) / 3, atol=1e-3)
    np.testing.assert_allclose(loss(OpacityPrior(kind="l1"), out), (0.5 + 1.0 + 0.0) / 3, rtol=1e-6)


def test_mask_loss_is_bce_against_alpha_and_needs_masks():
    out = opacity_rays([0.9, 0.2, 0.5], [True, True, False])
    batch = {"alpha": jnp.array([1.0, 0.0, 1.0])}
    np.testing.assert_allclose(loss(MaskLoss(), out, batch), -(np.log(0.9) + np.log(0.8)) / 2, rtol=1e-5)
    # A method that cannot give alpha (or data without masks) does not run the term.
    usable, skipped = usable_terms({"mask": MaskLoss(), "opacity": OpacityPrior()}, frozenset({"samples"}))
    assert list(usable) == ["opacity"] and skipped == ["mask"]


# ---- RegNeRF depth smoothness --------------------------------------------------------------


def test_depth_smoothness_of_a_ramp_and_a_step():
    rows = jnp.broadcast_to(jnp.arange(3.0)[:, None], (3, 3))  # d_ij = i: vertical steps of 1
    ones = jnp.ones((1, 3, 3))
    np.testing.assert_allclose(depth_smoothness(rows[None], ones), [1.0], rtol=1e-6)
    np.testing.assert_allclose(depth_smoothness(rows.T[None] * 2.0, ones), [4.0], rtol=1e-6)
    # A 0/1 step at column 2 with the right column empty (g = 0): no penalty.
    step = jnp.array([[[0.0, 0.0, 1.0]] * 3])
    g = jnp.array([[[1.0, 1.0, 0.0]] * 3])
    np.testing.assert_allclose(depth_smoothness(step, ones), [0.5], rtol=1e-6)  # (0 + 1) over 2x2
    np.testing.assert_allclose(depth_smoothness(step, g), [0.0], atol=1e-7)


def rendered_patch(hit, complete=None):
    """`RenderedRays` of `patch_outputs`-style rays, built from dense weights."""
    n = len(hit)
    s = jnp.broadcast_to(jnp.array([0.1, 0.3, 0.5, 0.7]), (n, 4))
    w = jnp.stack([jnp.zeros(4) if h < 0 else jnp.zeros(4).at[h].set(1.0) for h in hit])
    distance = jnp.sum(w * s, -1) + (1.0 - jnp.sum(w, -1)) * 0.8
    return RenderedRays.from_dense(jnp.ones(n, bool) if complete is None else complete, weights=w, s=s, t=s,
                                   ds=jnp.full((n, 4), 0.2), distance=distance)


def test_rendered_distance_puts_empty_rays_at_the_far_bound():
    """The renderer's ``distance``: sum_i w_i s_i + (1 - O) s_far, s_far = 0.7 + 0.2 / 2."""
    def field(x, d):
        # rays along x at y = 0, 1, 2, 3 (one per ray); the density stops each where told
        stop = jnp.array([0.3, 9.0, 0.1, 0.7])[jnp.round(x[:, 1]).astype(int)]
        return jnp.where(jnp.abs(x[:, 0] - stop) < 0.05, 1e4, 0.0), jnp.zeros_like(x)

    origins = jnp.stack([jnp.zeros(4), jnp.arange(4.0), jnp.zeros(4)], -1)
    directions = jnp.tile(jnp.array([1.0, 0.0, 0.0]), (4, 1))
    box = jnp.array([[0.0, -1.0, -1.0], [0.8, 4.0, 1.0]])
    out = render_rays(field, origins, directions, jnp.zeros(3), box, None,
                      RenderConfig(num_samples=4, sample_budget=16), None, diagonal=1.0)
    np.testing.assert_allclose(out.t[0], [0.1, 0.3, 0.5, 0.7], rtol=1e-6)
    np.testing.assert_allclose(out.distance, [0.3, 0.8, 0.1, 0.7], atol=1e-4)


def test_depth_smoothness_term_on_rendered_patches():
    # patch 0: depths [[0.3, 0.5], [0.3, 0.5]]; patch 1 likewise but incomplete (skipped)
    patches = rendered_patch([1, 2, 1, 2] * 2, complete=jnp.ones(8, bool).at[7].set(False))
    term = DepthSmoothness(patches=UnseenPatches(size=2))
    # One 2x2 patch: one (i, j) position; horizontal diff 0.2, vertical 0.
    np.testing.assert_allclose(loss(term, None, patches=patches, patch_shape=(2, 2, 2)), 0.04, rtol=1e-5)
    # An empty right column: opacity-weighted, its difference does not count.
    patches = rendered_patch([1, -1, 1, -1])
    np.testing.assert_allclose(loss(term, None, patches=patches, patch_shape=(1, 2, 2)), 0.0, atol=1e-7)
    unweighted = DepthSmoothness(opacity_weighted=False, patches=UnseenPatches(size=2))
    np.testing.assert_allclose(loss(unweighted, None, patches=patches, patch_shape=(1, 2, 2)), 0.5**2, rtol=1e-5)


def test_color_smoothness_penalises_colour_steps_between_opaque_pixels():
    """2 x 2 patches: a red left column and a blue right one costs the horizontal step
    (|red - blue|^2 = 2) once per patch; a uniform patch costs nothing; where the right
    column is empty, nothing; an incomplete patch is skipped."""
    red, blue = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]

    def patch(colors, opacity, complete=None):
        n = len(colors)
        return RenderedRays(rgb=jnp.array(colors), depth=jnp.zeros(n), opacity=jnp.array(opacity),
                            complete=jnp.ones(n, bool) if complete is None else complete, distance=jnp.zeros(n))

    term = ColorSmoothness(patches=UnseenPatches(size=2))
    split = patch([red, blue, red, blue], [1.0] * 4)
    np.testing.assert_allclose(loss(term, None, patches=split, patch_shape=(1, 2, 2)), 2.0, rtol=1e-6)
    uniform = patch([red] * 4, [1.0] * 4)
    np.testing.assert_allclose(loss(term, None, patches=uniform, patch_shape=(1, 2, 2)), 0.0, atol=1e-7)
    empty_right = patch([red, blue, red, blue], [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(loss(term, None, patches=empty_right, patch_shape=(1, 2, 2)), 0.0, atol=1e-7)
    two = patch([red, blue, red, blue] + [red] * 4, [1.0] * 8, complete=jnp.ones(8, bool).at[7].set(False))
    np.testing.assert_allclose(loss(term, None, patches=two, patch_shape=(2, 2, 2)), 2.0, rtol=1e-6)


def test_depth_smoothness_weight_decays_log_linearly():
    term = DepthSmoothness(weight=0.1, weight_start=400.0, decay_steps=512)
    np.testing.assert_allclose([term.weight_at(0), term.weight_at(256), term.weight_at(512), term.weight_at(9999)],
                               [400.0, np.sqrt(40.0), 0.1, 0.1], rtol=1e-5)
    assert DepthSmoothness(weight=0.3).weight_at(7) == 0.3


def test_unseen_patches_come_from_the_terms_that_need_them():
    assert unseen_patches(Regularizers(distortion=Distortion()).terms()) is None
    spec = UnseenPatches(size=4)
    assert unseen_patches(Regularizers(depth_smoothness=DepthSmoothness(patches=spec)).terms()) == spec

    @dataclasses.dataclass(frozen=True)
    class Other:
        needs: ClassVar[frozenset] = frozenset({"patches"})
        patches: UnseenPatches = UnseenPatches(size=6)

    try:
        unseen_patches({"a": DepthSmoothness(patches=spec), "b": Other()})
    except ValueError as err:
        assert "different unseen-view patches" in str(err)
    else:
        raise AssertionError("two different patch configs must fail")


def test_regularizers_lists_every_new_term():
    reg = Regularizers(occlusion=Occlusion(), entropy=RayEntropy(), opacity=OpacityPrior(),
                       mask=MaskLoss(), depth_smoothness=DepthSmoothness())
    assert list(reg.terms()) == ["occlusion", "entropy", "opacity", "mask", "depth_smoothness"]


# ---- sample-space annealing and the renderer's outputs --------------------------------------


def test_sample_annealing_grows_the_range_from_the_midpoint():
    anneal = SampleAnnealing(steps=100, start=0.5)
    t_n, t_f = jnp.array([2.0]), jnp.array([6.0])
    for step, want in ((0, [3.0, 5.0]), (50, [3.0, 5.0]), (75, [2.5, 5.5]), (100, [2.0, 6.0]), (500, [2.0, 6.0])):
        np.testing.assert_allclose(np.concatenate(anneal.bounds(t_n, t_f, step)), want, rtol=1e-6)
    # midpoint at a quarter of the range: m = 3, eta = 1/2 -> [2.5, 4.5]
    np.testing.assert_allclose(np.concatenate(SampleAnnealing(steps=10, start=0.5, mid=0.25).bounds(t_n, t_f, 0)),
                               [2.5, 4.5], rtol=1e-6)


def test_render_rays_returns_sigma_and_anneals_its_samples():
    def field(x, d):
        return jnp.full(x.shape[:-1], 0.7), jnp.full(x.shape, 0.5)

    origins = jnp.array([[0.0, 0.0, 5.0], [0.0, 0.0, -5.0]])
    directions = jnp.array([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    box = jnp.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    config = RenderConfig(num_samples=16, sample_budget=64, anneal=SampleAnnealing(steps=100, start=0.5))
    render = jax.jit(lambda key, step: render_rays(field, origins, directions, jnp.zeros(3), box, None, config, key, step))
    out = render(jax.random.PRNGKey(0), 0)
    np.testing.assert_allclose(out.sigma, 0.7)
    assert out.sigma.shape == (2, 16)
    # box entry 4, exit 6: at step 0 the samples lie in [4.5, 5.5]
    assert float(out.t.min()) >= 4.5 and float(out.t.max()) <= 5.5
    np.testing.assert_allclose(out.deltas, 1.0 / 16, rtol=1e-6)
    full = jax.jit(lambda: render_rays(field, origins, directions, jnp.zeros(3), box, None, config, None))()
    assert float(full.t.min()) < 4.5 and float(full.t.max()) > 5.5  # no step: the whole segment


# ---- unseen-view patches ---------------------------------------------------------------------


def ray_data(eyes, width=40, height=30):
    cams = make_cameras(np.stack([look_at(e, (0.0, 0.0, 0.0)) for e in eyes]), 0.7, width, height)
    n = len(eyes)
    return RayData(jnp.zeros((n, height, width, 3)), jnp.ones((n, height, width)),
                   jax.tree_util.tree_map(jnp.asarray, cams), jnp.ones(3), False)


def project(cams, k, origins, directions):
    """Pixel coordinates (x, y) of rays' directions in training camera ``k``."""
    rot = np.asarray(cams.c2w[k, :, :3])
    d_cam = np.asarray(directions) @ rot  # world -> camera
    x = cams.cx[k] + cams.fx[k] * d_cam[:, 0] / -d_cam[:, 2]
    y = cams.cy[k] - cams.fy[k] * d_cam[:, 1] / -d_cam[:, 2]
    return np.asarray(x), np.asarray(y)


def test_unjittered_patches_are_pixel_grids_of_a_training_camera():
    data = ray_data([(4.0, 0.0, 1.0)])
    sample = jax.jit(lambda d, k: sample_patches(d, k, jnp.zeros(3), 3.0, num_patches=5, size=4, stride=2.0,
                                                 angle_jitter=0.0, radius_jitter=0.0, target_jitter=0.0))
    out = sample(data, jax.random.PRNGKey(3))
    assert out["patch_origins"].shape == (5 * 16, 3) and out["patch_directions"].shape == (5 * 16, 3)
    np.testing.assert_allclose(out["patch_origins"], np.broadcast_to([4.0, 0.0, 1.0], (80, 3)), atol=1e-5)
    x, y = project(data.cameras, 0, out["patch_origins"], out["patch_directions"])
    x, y = x.reshape(5, 4, 4), y.reshape(5, 4, 4)
    np.testing.assert_allclose(np.diff(x, axis=2), 2.0, atol=1e-3)  # columns 2 px apart
    np.testing.assert_allclose(np.diff(y, axis=1), 2.0, atol=1e-3)  # rows 2 px apart
    np.testing.assert_allclose(np.diff(x, axis=1), 0.0, atol=1e-3)
    assert x.min() >= 0.0 and x.max() <= 40.0 and y.min() >= 0.0 and y.max() <= 30.0


def test_jittered_patch_cameras_stay_near_the_training_sphere_and_face_the_centre():
    data = ray_data([(4.0, 0.0, 1.0), (0.0, -3.0, 2.0)])
    radii = np.linalg.norm([[4.0, 0.0, 1.0], [0.0, -3.0, 2.0]], axis=-1)
    sample = jax.jit(lambda d, k: sample_patches(d, k, jnp.zeros(3), 3.0, num_patches=64, size=2,
                                                 angle_jitter=0.3, radius_jitter=0.1, target_jitter=0.0))
    out = sample(data, jax.random.PRNGKey(0))
    eyes = np.asarray(out["patch_origins"]).reshape(64, 4, 3)[:, 0]
    r = np.linalg.norm(eyes, axis=-1)
    near_one = np.min(np.abs(r[:, None] / radii[None] - 1.0), axis=1)
    assert np.all(near_one <= 0.1 + 1e-5)
    assert len({tuple(np.round(e, 4)) for e in eyes}) == 64  # every patch from its own pose
    # Each camera looks at the centre: every ray lies in the view cone around the direction
    # to the centre (half diagonal field of view: tan = sqrt(tx^2 + ty^2)).
    tx = np.tan(0.35)
    cone = 1.0 / np.sqrt(1.0 + tx**2 + (tx * 30 / 40) ** 2)
    dirs = np.asarray(out["patch_directions"]).reshape(64, 4, 3)
    cos = np.sum(dirs * (-eyes / r[:, None])[:, None], axis=-1)
    assert np.all(cos >= cone - 1e-4)
