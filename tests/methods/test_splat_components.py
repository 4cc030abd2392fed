"""The Gaussian path's sparse-view components: DropGaussian drops the stated share and
keeps the expected opacity; opacity noise perturbs each opacity within its bound, in
training renders only; opacity decay multiplies every opacity, and stops; the needle
cap shortens needles and leaves discs alone, in the train step; the flat cap makes
blobs into discs and leaves discs alone; CoR-GS's co-pruning kills
what the other scene lacks, and its twin leaves when told."""

import jax
import jax.numpy as jnp
import numpy as np

from sparsefield.methods.splat_step import DepthDistortion, DropGaussian, FlatCap, NeedleCap, OpacityDecay, OpacityNoise


def test_drop_gaussian_drops_its_rate_and_compensates_the_opacity():
    alive, opacity = jnp.ones(20000, bool), jnp.full(20000, 0.4)
    kept, scaled = DropGaussian(rate=0.25, ramp=False).apply(alive, opacity, jax.random.PRNGKey(0), 0.3)
    assert abs(float(kept.mean()) - 0.75) < 0.02
    np.testing.assert_allclose(scaled, 0.4 / 0.75, rtol=1e-6)
    assert abs(float(jnp.sum(scaled * kept)) / float(jnp.sum(opacity)) - 1.0) < 0.03  # in expectation, unchanged
    kept, scaled = DropGaussian(rate=0.25, ramp=True).apply(alive, opacity, jax.random.PRNGKey(0), 0.0)
    assert bool(kept.all()) and np.allclose(scaled, 0.4)  # the ramp starts at no drop
    kept, _ = DropGaussian(rate=0.25, ramp=True).apply(alive, opacity, jax.random.PRNGKey(0), 0.5)
    assert abs(float(kept.mean()) - 0.875) < 0.02
    dead = jnp.zeros(10, bool)
    assert not bool(DropGaussian(rate=0.5).apply(dead, jnp.ones(10), jax.random.PRNGKey(1), 1.0)[0].any())


def test_opacity_noise_stays_within_its_bound_and_keeps_the_mean():
    opacity = jnp.full(20000, 0.5)
    noisy = np.asarray(OpacityNoise(sigma=0.4).apply(opacity, jax.random.PRNGKey(0)))
    assert noisy.min() >= 0.5 * 0.6 - 1e-6 and noisy.max() <= 0.5 * 1.4 + 1e-6  # clipped at sigma
    assert abs(noisy.mean() - 0.5) < 0.01 and noisy.std() > 0.1  # unbiased, and it does perturb
    assert (noisy == 0.5 * 0.6).mean() > 0.1  # N(0, 0.4) passes +-0.4 a third of the time: clipped there
    np.testing.assert_array_equal(OpacityNoise(sigma=0.8).apply(jnp.ones(100), jax.random.PRNGKey(1)) <= 1.0, True)


def test_opacity_noise_and_distortion_reach_training_renders_only():
    """The same scene rendered by the train step twice: with a key (training) the noise
    changes the image, without one (an unseen or test render) it does not. The depth
    distortion is a loss of the training render when on, from its start."""
    import dataclasses

    from sparsefield.cameras import Cameras
    from sparsefield.config import RunConfig
    from sparsefield.fields import gaussians as gs
    from sparsefield.methods.splat_step import TrainStep

    points = np.random.default_rng(0).uniform(-0.3, 0.3, (64, 3))
    params, alive = gs.make_params(points, np.full((64, 3), 0.5), 64, 0.1)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    base = RunConfig(method="splat")
    config = dataclasses.replace(base, splat=dataclasses.replace(base.splat, opacity_noise=OpacityNoise()))
    step = TrainStep(config, np.array([[-1.0, -1, -1], [1, 1, 1]]), {})
    c2w = jnp.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3]])  # looks down -z at the points
    cam = Cameras(c2w=c2w, fx=jnp.float32(40.0), fy=jnp.float32(40.0), cx=jnp.float32(16.0), cy=jnp.float32(16.0),
                  width=32, height=32)
    bg = jnp.zeros(3)
    plain = [step.render(params, jnp.asarray(alive), cam, bg, 0)["rgb"] for _ in range(2)]
    noisy = step.render(params, jnp.asarray(alive), cam, bg, 0, key=jax.random.PRNGKey(3))["rgb"]
    np.testing.assert_array_equal(plain[0], plain[1])
    assert float(jnp.abs(noisy - plain[0]).max()) > 1e-3

    # the depth distortion: a term of the training render only when its flag is on
    assert step.render_losses(step.render(params, jnp.asarray(alive), cam, bg, 0, key=jax.random.PRNGKey(3)),
                              cam, 10) == {}
    on = dataclasses.replace(config, splat=dataclasses.replace(config.splat, distortion=DepthDistortion(start=0.5)))
    step = TrainStep(on, np.array([[-1.0, -1, -1], [1, 1, 1]]), {})
    out = step.render(params, jnp.asarray(alive), cam, bg, 0, key=jax.random.PRNGKey(3))
    late, early = (float(step.render_losses(out, cam, s)["distortion"]) for s in (on.steps, 0))
    assert late > 0.0 and early == 0.0  # the points spread in depth; off before its start
    np.testing.assert_allclose(late, float(jnp.mean(out["distortion"])) / 12.0, rtol=1e-5)  # weight 1, / diagonal^2


def test_opacity_decay_multiplies_the_opacity_until_it_stops():
    logits = jnp.array([-3.0, 0.0, 2.0, 6.0])
    decay = OpacityDecay(factor=0.9, stop=0.5)
    np.testing.assert_allclose(jax.nn.sigmoid(decay.apply(logits, 0.2)), 0.9 * jax.nn.sigmoid(logits), rtol=1e-5)
    np.testing.assert_array_equal(decay.apply(logits, 0.6), logits)


def test_needle_cap_shortens_needles_and_leaves_discs_and_blobs():
    scales = np.array([[0.01, 0.01, 1.0],   # a needle: its long axis comes down to 8 x 0.01
                       [0.5, 0.01, 0.5],    # a disc: two long axes, left alone
                       [0.2, 0.3, 0.25],    # a blob
                       [0.02, 0.3, 0.01]])  # a needle along y, its short axes unequal
    capped = np.exp(np.asarray(NeedleCap(ratio=8.0).apply(jnp.log(jnp.asarray(scales)))))
    np.testing.assert_allclose(capped[0], [0.01, 0.01, 0.08], rtol=1e-5)
    np.testing.assert_allclose(capped[1:3], scales[1:3], rtol=1e-5)
    np.testing.assert_allclose(capped[3], [0.02, 0.16, 0.01], rtol=1e-5)


def test_the_train_step_caps_needles_and_flattens_after_its_update():
    """A needle seeded among round Gaussians: after one update with the cap on, no
    Gaussian is longer than the ratio times its second axis; without it the needle stays.
    With the flat cap, every Gaussian is a disc after the update."""
    import dataclasses

    from sparsefield.config import RunConfig
    from sparsefield.fields import gaussians as gs
    from sparsefield.methods.splat import state_from
    from sparsefield.methods.splat_step import TrainStep

    points = np.random.default_rng(0).uniform(-0.5, 0.5, (64, 3))
    params, alive = gs.make_params(points, np.full((64, 3), 0.5), 64, 0.1)
    params["log_scales"][0] = np.log([0.01, 0.01, 0.5])
    field = {k: v for k, v in state_from(params, alive).items() if k != "step"}
    grads = jax.tree_util.tree_map(jnp.zeros_like, field["params"])
    stats = (jnp.float32(0.0), jnp.zeros(64, bool), 32, jnp.int32(0))
    bbox = np.array([[-1.0, -1, -1], [1, 1, 1]])
    for cap, longest in ((NeedleCap(ratio=4.0), 0.04), (None, 0.5)):
        config = RunConfig(method="splat")
        config = dataclasses.replace(config, splat=dataclasses.replace(config.splat, needle_cap=cap))
        out = TrainStep(config, bbox, {}).update(field, grads, jnp.zeros((64, 2)), stats, 0.5)
        scales = np.sort(np.exp(np.asarray(out["params"]["log_scales"])), -1)
        np.testing.assert_allclose(scales[0, -1], longest, rtol=1e-4)
        if cap is not None:
            assert (scales[:, -1] <= 4.0 * scales[:, -2] * (1 + 1e-5)).all()
    config = RunConfig(method="splat")
    config = dataclasses.replace(config, splat=dataclasses.replace(config.splat, flat_cap=FlatCap(ratio=0.1)))
    out = TrainStep(config, bbox, {}).update(field, grads, jnp.zeros((64, 2)), stats, 0.5)
    scales = np.sort(np.exp(np.asarray(out["params"]["log_scales"])), -1)
    assert (scales[:, 0] <= 0.1 * scales[:, 1] * (1 + 1e-5)).all()  # the round ones are discs now


def test_flat_cap_thins_blobs_into_discs_and_leaves_discs():
    scales = np.array([[0.2, 0.3, 0.25],    # a blob: its shortest axis comes down to 0.1 x 0.25
                       [0.5, 0.01, 0.5],    # a disc, left alone
                       [0.01, 0.01, 1.0],   # a needle: one short axis thins further (a ribbon)
                       [0.1, 0.1, 0.1]])    # a sphere: one axis, the first, is capped
    capped = np.exp(np.asarray(FlatCap(ratio=0.1).apply(jnp.log(jnp.asarray(scales)))))
    np.testing.assert_allclose(capped[0], [0.025, 0.3, 0.25], rtol=1e-5)
    np.testing.assert_allclose(capped[1], scales[1], rtol=1e-5)
    np.testing.assert_allclose(capped[2], [0.001, 0.01, 1.0], rtol=1e-5)
    np.testing.assert_allclose(capped[3], [0.01, 0.1, 0.1], rtol=1e-5)
    thin = np.sort(capped, -1)
    assert (thin[:, 0] <= 0.1 * thin[:, 1] * (1 + 1e-5)).all()


def test_co_pruning_kills_what_the_other_scene_lacks():
    """Two scenes on the same grid of points; each also has one Gaussian far from
    everything in the other: exactly those die, in both scenes."""
    from sparsefield.methods.splat import co_prune
    from sparsefield.methods.splat_step import CoTraining

    grid = np.stack(np.meshgrid(*[np.arange(5.0)] * 3, indexing="ij"), -1).reshape(-1, 3) * 0.1
    scene = lambda extra: {"params": {"means": jnp.asarray(np.vstack([grid + 0.01, extra]))},  # noqa: E731
                           "alive": jnp.ones(len(grid) + 1, bool)}
    out = co_prune({"main": scene([[2.0, 0, 0]]), "twin": scene([[0, 2.0, 0]])},
                   CoTraining(prune_distance=3.0, coverage=0.0))
    for name in ("main", "twin"):
        alive = np.asarray(out[name]["alive"])
        assert alive[:-1].all() and not alive[-1]
    single = {"main": scene([[2.0, 0, 0]])}
    assert co_prune(single, CoTraining()) is single


def test_a_long_gaussian_covers_points_along_its_axis_from_co_pruning():
    """A needle along y in one scene (its mean at the origin, 1 long, 0.01 thin; a small
    Gaussian 0.5 from it sets the spacing) and one Gaussian near the needle's far end in
    the other: by the distance between means the latter dies; with coverage it lives. A
    point off the needle's axis is not covered."""
    from sparsefield.methods.splat import co_prune, covered
    from sparsefield.methods.splat_step import CoTraining

    half = np.sqrt(0.5)  # a quarter turn about z: the local x axis along world y
    needle = {"params": {"means": jnp.array([[0.0, 0, 0], [0, -0.5, 0]]),
                         "quats": jnp.array([[half, 0.0, 0.0, half], [1.0, 0, 0, 0]]),
                         "log_scales": jnp.log(jnp.array([[1.0, 0.01, 0.01], [0.01] * 3]))},
              "alive": jnp.ones(2, bool)}
    points = np.array([[0.0, 2.5, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 0.05]])
    assert covered(points, needle, np.ones(2, bool), 3.0).tolist() == [True, False, False]
    end = {"params": {**needle["params"], "means": jnp.array([[0.0, 2.5, 0.0], [0, 2.5, 0]])},
           "alive": jnp.array([True, False])}
    by_means = co_prune({"main": needle, "twin": end}, CoTraining(prune_distance=1.0, coverage=0.0))
    assert not bool(by_means["twin"]["alive"][0])
    with_cover = co_prune({"main": needle, "twin": end}, CoTraining(prune_distance=1.0, coverage=3.0))
    assert bool(with_cover["twin"]["alive"][0])


def test_the_twin_leaves_at_its_fraction_of_the_run():
    from sparsefield.methods.splat import retire_twin
    from sparsefield.methods.splat_step import CoTraining

    state = {"step": 0, "params": {}, "alive": None, "twin": {"params": {}}}
    co = CoTraining(until=0.5)
    assert retire_twin(state, co, 349, 700) is state
    assert set(retire_twin(state, co, 350, 700)) == {"step", "params", "alive"}
    assert retire_twin(state, CoTraining(), 699, 700) is state  # the default keeps it to the end
    assert "twin" in state  # the caller's state is left as it was


def test_binocular_term_scores_what_the_shifted_render_sees():
    from sparsefield.losses.base import LossInputs
    from sparsefield.losses.consistency import BinocularConsistency, ShiftedView
    from sparsefield.renderers.render import RenderedRays

    n = 4
    rays = RenderedRays(rgb=jnp.zeros((n, 3)), depth=jnp.ones(n), opacity=jnp.array([1.0, 1.0, 0.2, 1.0]),
                        complete=jnp.ones(n, bool), distance=jnp.zeros(n))
    target = jnp.full((n, 3), 0.5)
    shifted = ShiftedView(colors=jnp.array([[0.5] * 3, [0.7] * 3, [0.0] * 3, [0.0] * 3]),
                          valid=jnp.array([True, True, True, False]))
    value = BinocularConsistency()(LossInputs(rays, {"rgb": target}, 0, binocular=shifted))
    # rays 0 and 1 count (ray 2 is not a surface, ray 3 falls outside the shifted view)
    np.testing.assert_allclose(float(value), (0.0 + 0.2) / 2, rtol=1e-5)
