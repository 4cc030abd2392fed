"""Data parallelism: on 4 forced CPU devices, a few training steps give the loss and
parameters of one device, and a sharded image render matches the single-device one.

The device count is fixed when JAX starts, so the checks run in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` and report back as JSON.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from sparsefield import parallel
from sparsefield.renderers.samplers import sample_stratified

SCRIPT = textwrap.dedent(
    """
    import dataclasses, json
    import jax, jax.numpy as jnp, numpy as np
    from sparsefield import parallel
    from sparsefield.cameras import make_cameras, orbit_poses
    from sparsefield.config import RunConfig
    from sparsefield.datasets.batches import RayData
    from sparsefield.fields.field import FieldConfig
    from sparsefield.fields.grid import HashGrid
    from sparsefield.losses.distortion import Distortion
    from sparsefield.losses.regularizers import Regularizers
    from sparsefield.methods.nerf import RadianceFieldMethod
    from sparsefield.renderers.render import RenderConfig, render_image
    from sparsefield.samplers.grid import OccupancyGridConfig

    rng = np.random.default_rng(0)
    cams = make_cameras(orbit_poses((0, 0, 0), 3.0, 20.0, 4), 0.7, 16, 16)
    data = RayData(jnp.asarray(rng.uniform(size=(4, 16, 16, 3)), jnp.float32), jnp.ones((4, 16, 16)),
                   jax.tree_util.tree_map(jnp.asarray, cams), jnp.ones(3, jnp.float32), False)
    bbox = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    config = RunConfig(
        steps=3, rays_per_batch=64,
        field=FieldConfig(encoding=HashGrid(levels=4, log2_table_size=10, max_res=64)),
        render=RenderConfig(num_samples=16, sample_budget=64 * 16),
        occupancy=OccupancyGridConfig(resolution=8, update_every=1, warmup_steps=1),
        reg=Regularizers(distortion=Distortion()),
    )
    results = {}
    for n in (1, 4):
        method = RadianceFieldMethod(config, bbox)
        method.mesh = parallel.data_mesh(jax.devices()[:n])
        state = method.place(method.fresh())
        step_fn = method.train_step(0)
        losses = []
        for i in range(config.steps):
            state, m = step_fn(state, parallel.replicate(data, method.mesh), jax.random.PRNGKey(i))
            losses.append(float(m["loss"]))
        leaves = jax.tree_util.tree_leaves(parallel.to_host(state["params"]))
        image = render_image(method.field(0).__call__, state["params"], cams[0], bbox, state["occupancy"],
                             dataclasses.replace(config.render, chunk=32), jnp.ones(3), method.mesh)
        results[n] = {"losses": losses, "params": [np.asarray(x).ravel().tolist() for x in leaves],
                      "rays": float(m["rays"]), "image": image["rgb"].ravel().tolist(),
                      "sharded": len(state["params"]["density_mlp"][0]["w"].sharding.device_set)}
    print("RESULT" + json.dumps({"devices": jax.device_count(), **results}))
    """
)


def test_four_devices_train_and_render_like_one():
    # Optimisation level 0 halves the compile time; both device counts use it alike.
    flags = "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])
    one, four = out["1"], out["4"]
    assert out["devices"] == 4 and one["sharded"] == 1 and four["sharded"] == 4
    assert four["rays"] == 64.0  # the budget held every ray: nothing dropped per shard
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5)
    assert one["losses"][-1] != one["losses"][0]  # the steps did move the parameters
    for a, b in zip(four["params"], one["params"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(four["image"], one["image"], atol=1e-5)


def test_per_ray_keys_do_not_depend_on_batching():
    """Each ray's stratified jitter comes from its own key: drawing rays 0-7 then 8-15
    gives the same samples as drawing all 16 at once."""
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(3), jnp.arange(16))
    near, far = jnp.zeros(16), jnp.linspace(1.0, 2.0, 16)
    t_all, _ = sample_stratified(near, far, 8, keys)
    t_a, _ = sample_stratified(near[:8], far[:8], 8, keys[:8])
    t_b, _ = sample_stratified(near[8:], far[8:], 8, keys[8:])
    np.testing.assert_array_equal(np.concatenate([t_a, t_b]), t_all)
    width = (far - near)[:, None] / 8
    bins = np.floor((t_all - near[:, None]) / width)
    np.testing.assert_array_equal(bins, np.broadcast_to(np.arange(8), (16, 8)))  # one per bin


def test_process_share_is_all_views_for_one_process():
    ids = np.array([5, 9, 2, 7])
    np.testing.assert_array_equal(parallel.process_share(ids), ids)
