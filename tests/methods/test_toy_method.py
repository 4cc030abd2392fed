"""A new method is one file: this file defines a toy method (a ball of one colour at the
scene centre, its colour and radius trained), registers it, and runs it through the same
``train``, ``eval``, ``render`` and ``export`` commands as the built-in methods."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import trimesh

from sparsefield import cli
from sparsefield.cameras import image_rays
from sparsefield.datasets.batches import sample_rays
from sparsefield.methods import METHODS, Method, SurfaceField, register_method


def ball(params, center, origins, directions, background):
    """Colour, depth and a soft opacity of rays against a ball of radius ``params["radius"]``."""
    to_center = center - origins
    along = jnp.sum(to_center * directions, -1)
    miss = jnp.linalg.norm(to_center - along[..., None] * directions, axis=-1)
    opacity = jax.nn.sigmoid((params["radius"] - miss) / 0.02)
    rgb = opacity[..., None] * jax.nn.sigmoid(params["color"]) + (1.0 - opacity[..., None]) * background
    return rgb, opacity * along, opacity


class ToyBall(Method):
    """The smallest method that trains: state, a jitted step, a render, a surface."""

    name = "toy-ball"

    def init(self, views) -> dict:
        params = {"color": jnp.zeros(3), "radius": jnp.asarray(0.2)}
        return {"step": jnp.zeros((), jnp.int32), "params": params, "optimizer": optax.adam(0.02).init(params)}

    def template(self, arrays) -> dict:
        return self.init(None)

    def make_step(self, stage):
        center = jnp.asarray(self.bbox.mean(0), jnp.float32)

        def step_fn(state, data, key):
            batch = sample_rays(data, key, 4096, random_background=False)

            def loss(params):
                rgb, _, _ = ball(params, center, batch["origins"], batch["directions"], batch["background"])
                return jnp.mean((rgb - batch["rgb"]) ** 2)

            value, grads = jax.value_and_grad(loss)(state["params"])
            updates, opt = optax.adam(0.02).update(grads, state["optimizer"])
            params = optax.apply_updates(state["params"], updates)
            new = {"step": state["step"] + 1, "params": params, "optimizer": opt}
            return new, {"loss": value, "psnr": -10.0 * jnp.log10(value)}

        return jax.jit(step_fn)

    def render(self, state, camera, background) -> dict:
        o, d = image_rays(jax.tree_util.tree_map(jnp.asarray, camera))
        rgb, depth, opacity = ball(state["params"], jnp.asarray(self.bbox.mean(0), jnp.float32), o, d,
                                   jnp.asarray(background, jnp.float32))
        return {"rgb": np.asarray(rgb), "depth": np.asarray(depth), "opacity": np.asarray(opacity)}

    def surface(self, state) -> SurfaceField:
        radius, color = float(state["params"]["radius"]), np.asarray(jax.nn.sigmoid(state["params"]["color"]))
        center = self.bbox.mean(0)
        return SurfaceField(lambda x: radius - np.linalg.norm(x - center, axis=-1),
                            lambda x, d: np.broadcast_to(color, x.shape), 0.0, self.bbox)


@pytest.fixture
def toy():
    register_method(ToyBall)
    yield ToyBall
    METHODS.pop(ToyBall.name)


def test_a_method_registered_from_one_file_runs_through_every_command(toy, scene, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEFIELD_COMPILE_CACHE", "off")
    run = tmp_path / "toy"
    seen = []  # what a live viewer receives (``train --view``)
    watch = lambda loaded, views_scene: (lambda state: seen.append(int(state["step"])))  # noqa: E731
    config, given = cli.parse_train(["--method", "toy-ball", "--data", str(scene), "--steps", "60", "--out", str(run),
                                     "--eval-every", "30", "--checkpoint-every", "30", "--eval-views", "1"])
    cli.train(config, given, watch=watch)
    assert seen == [50, 60]
    history = json.loads((run / "history.json").read_text())
    assert history["train"][-1]["step"] == 60 and history["train"][-1]["psnr"] > history["train"][0]["psnr"] + 1.0
    assert [e["step"] for e in history["eval"]] == [30]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "toy-ball" and metrics["psnr"] > 10.0 and metrics["num_params"] == 4

    cli.main(["eval", "--run", str(run)])
    assert json.loads((run / "metrics.json").read_text())["psnr"] == pytest.approx(metrics["psnr"], abs=1e-4)
    cli.main(["render", "--run", str(run), "--frames", "2", "--out", str(tmp_path / "orbit")])
    assert (tmp_path / "orbit" / "001.png").exists() and (tmp_path / "orbit" / "001_depth.png").exists()
    cli.main(["export", "--run", str(run), "--out", str(tmp_path / "ball.ply"), "--resolution", "24"])
    mesh = trimesh.load(tmp_path / "ball.ply")
    radius = float(np.linalg.norm(mesh.vertices - mesh.vertices.mean(0), axis=-1).mean())
    assert len(mesh.faces) > 100 and 0.05 < radius < 1.5
    cli.main(["train", "--out", str(run), "--steps", "70"])  # resumes from step 60
    assert json.loads((run / "metrics.json").read_text())["steps"] == 70
