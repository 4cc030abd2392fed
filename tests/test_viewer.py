"""The viewer: camera poses between viser and sparsefield, Gaussians as the browser takes
them, the render queue dropping stale requests, and a real browser (headless Chromium,
driven over the DevTools protocol) showing a splat run and a radiance-field run."""

import base64
import json
import math
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import jax.numpy as jnp
import numpy as np
import pytest
from websockets.sync.client import connect

from sparsefield.cameras import look_at, make_cameras, pixel_rays
from sparsefield.fields.gaussians import SH_C0
from sparsefield.viewer import (SAVED, ViewArgs, c2w_from_viser, focal_from_fov, fov_from_focal, has_gaussians, start,
                                viser_camera, viser_from_c2w)
from sparsefield.viewer.convert import image_size, splat_arrays
from sparsefield.viewer.render import RenderQueue
from sparsefield.viewer.scene import start_c2w

# ---- cameras ----------------------------------------------------------------------------


def test_pose_round_trip_is_the_identity():
    rng = np.random.default_rng(0)
    for _ in range(20):
        c2w = look_at(rng.normal(size=3) * 3, rng.normal(size=3) * 0.2, rng.normal(size=3)).astype(np.float64)
        wxyz, position = viser_from_c2w(c2w)
        np.testing.assert_allclose(c2w_from_viser(wxyz, position), c2w, atol=1e-6)
        back, _ = viser_from_c2w(c2w_from_viser(wxyz, position))
        np.testing.assert_allclose(back * np.sign(back[0] * wxyz[0]), wxyz, atol=1e-6)  # q and -q: one rotation


def test_look_at_poses_map_to_the_expected_c2w():
    """At (0, -3, 0) looking at the origin with +Z up, OpenCV axes x = (1, 0, 0),
    y = (0, 0, -1), z = (0, 1, 0): a -90 degree turn about x, ``wxyz = (c, -c, 0, 0)``.
    The second pose is the one Chromium's viser page reported for its default camera at
    (-5, 0, 0) looking at the origin."""
    c = math.sqrt(0.5)
    expected = np.array([[1.0, 0, 0, 0], [0, 0, -1, -3], [0, 1, 0, 0]])  # columns: right, up, back
    np.testing.assert_allclose(c2w_from_viser([c, -c, 0, 0], [0, -3, 0]), expected, atol=1e-12)
    np.testing.assert_allclose(look_at([0, -3, 0], [0, 0, 0]), expected, atol=1e-6)
    reported = c2w_from_viser([-0.5, 0.5, -0.5, 0.5], [-5.0, 0.0, 0.0])
    np.testing.assert_allclose(reported, look_at([-5.0, 0, 0], [0, 0, 0]), atol=1e-6)
    np.testing.assert_allclose(-reported[:, 2], [1.0, 0, 0], atol=1e-12)  # it looks down -Z, at the origin


def test_vertical_fov_gives_the_focal_lengths():
    fov = math.radians(90.0)
    assert focal_from_fov(fov, 400) == pytest.approx(200.0)
    assert fov_from_focal(200.0, 400) == pytest.approx(fov)
    cam = viser_camera([1.0, 0, 0, 0], [0, 0, 0], fov, 600, 400)
    assert (cam.width, cam.height) == (600, 400)
    np.testing.assert_allclose([cam.fx, cam.fy, cam.cx, cam.cy], [200.0, 200.0, 300.0, 200.0], rtol=1e-6)
    # The ray through the top edge of the image leaves the view axis at fov / 2.
    _, d = pixel_rays(cam, jnp.float32(300.0), jnp.float32(0.0))
    forward = -np.asarray(cam.c2w)[:, 2]
    assert math.degrees(math.acos(float(np.dot(np.asarray(d), forward)))) == pytest.approx(45.0, abs=1e-3)
    assert image_size(1.5, 400) == (400, 267) and image_size(0.5, 400) == (200, 400)


# ---- Gaussians for the browser ----------------------------------------------------------


def gaussian_state():
    s = math.sqrt(0.5)
    params = {
        "means": np.array([[0.0, 0, 0], [9, 9, 9], [1, 2, 3]], np.float32),
        "log_scales": np.log(np.array([[1.0, 2, 3], [1, 1, 1], [0.5, 0.5, 0.5]], np.float32)),
        "quats": np.array([[s, 0, 0, s], [1, 0, 0, 0], [1, 0, 0, 0]], np.float32),  # 90 degrees about z
        "logit_opacities": np.array([0.0, 0, 2], np.float32),
        "sh_dc": np.array([[0.0, 0, 0], [0, 0, 0], [1, -1, 10]], np.float32),
        "sh_rest": np.zeros((3, 15, 3), np.float32),
    }
    return {"step": np.int32(5), "params": params, "alive": np.array([True, False, True])}


def test_gaussians_are_sent_live_with_their_covariance_colour_and_opacity():
    state = gaussian_state()
    assert has_gaussians(state)
    assert not has_gaussians({"step": 0, "params": {"encoding": {}}})
    assert not has_gaussians({"step": 0, "params": state["params"]})  # no alive mask
    splats = splat_arrays(state)
    np.testing.assert_allclose(splats["centers"], [[0, 0, 0], [1, 2, 3]])
    np.testing.assert_allclose(splats["covariances"][0], np.diag([4.0, 1.0, 9.0]), atol=1e-5)  # x and y swap
    np.testing.assert_allclose(splats["covariances"][1], 0.25 * np.eye(3), atol=1e-6)
    np.testing.assert_allclose(splats["rgbs"], [[0.5] * 3, [0.5 + SH_C0, 0.5 - SH_C0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(splats["opacities"][:, 0], [0.5, 1 / (1 + math.exp(-2))], atol=1e-6)


# ---- the render queue -------------------------------------------------------------------


def test_render_queue_drops_stale_requests_and_refines_the_last():
    """Five cameras arrive while the first renders: the three in between are never
    rendered, the first one's image is not sent, and the last is sent small, then full."""
    rendered, frames, done = [], [], threading.Event()

    def render(camera, mode):
        rendered.append((float(camera.c2w[0, 3]), camera.width))
        time.sleep(0.2)
        return np.zeros((camera.height, camera.width, 3), np.uint8)

    def deliver(frame):
        frames.append((frame.image.shape[1], frame.full))
        done.set() if frame.full else None

    queue = RenderQueue(render, deliver, preview=0.25, settle=0.05)
    try:
        for k in range(5):
            pose = np.concatenate([np.eye(3), [[k], [0], [0]]], 1)
            queue.submit(7, make_cameras(pose[None], 1.0, 64, 48)[0], "rgb")
            time.sleep(0.02)
        assert done.wait(10)
    finally:
        queue.close()
    assert rendered == [(0.0, 16), (4.0, 16), (4.0, 64)]
    assert frames == [(16, False), (64, True)]


# ---- a real browser ---------------------------------------------------------------------

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--window-size=800,600"]
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no chromium on this machine (apt-get install chromium)")


class Browser:
    """Headless Chromium driven over the DevTools protocol (no browser download: the
    system's chromium, and the websocket client viser brings)."""

    def __init__(self, profile: Path):
        self.proc = subprocess.Popen([BROWSER, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = profile / "DevToolsActivePort"  # the port Chromium chose, and the browser's path
        wait_for(lambda: active.exists() and len(active.read_text().split()) == 2, 30, "Chromium's DevTools port")
        port, path = active.read_text().split()
        self.ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=None)
        self.calls, self.session = 0, None

    def call(self, method: str, **params) -> dict:
        self.calls += 1
        message = {"id": self.calls, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:  # events arrive in between
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == self.calls:
                assert "error" not in reply, reply
                return reply["result"]

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def screenshot(self) -> np.ndarray:
        return iio.imread(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))[..., :3]

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(10)


def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scene_region(shot: np.ndarray) -> np.ndarray:
    """Where the scene is drawn: the middle of the page, left of viser's control panel
    (top right) and below its software-WebGL notice (top left)."""
    h, w = shot.shape[:2]
    return shot[int(0.3 * h): int(0.95 * h), int(0.15 * w): int(0.57 * w)]


def shows_something(shot: np.ndarray) -> bool:
    """At least 5% of the scene region differs from the page's most common colour (the
    background) and it holds at least 20 colours (16 levels per channel)."""
    colors, counts = np.unique(shot.reshape(-1, 3), axis=0, return_counts=True)
    background = colors[np.argmax(counts)].astype(int)
    region = scene_region(shot).astype(int).reshape(-1, 3)
    differs = np.abs(region - background).sum(-1) > 30
    return differs.mean() > 0.05 and len(np.unique(region // 16, axis=0)) >= 20


@pytest.fixture(scope="module")
def splat_run(scene, tmp_path_factory, cli):
    run = tmp_path_factory.mktemp("view") / "splat"
    cli("train", "--method", "splat", "--data", scene, "--views", 8, "--steps", 4, "--out", run, "--eval-every", 1000,
        "--checkpoint-every", 1000, "--splat.crop", 0, "--splat.coarse", 0, "--splat.gaussians.init-points", 1024,
        "--splat.raster.tile-capacity", 64)
    return run


@pytest.fixture(scope="module")
def nerf_run(scene, tmp_path_factory, cli):
    run = tmp_path_factory.mktemp("view") / "nerf"
    cli("train", "--data", scene, "--views", 8, "--steps", 4, "--out", run, "--eval-every", 1000,
        "--checkpoint-every", 1000, "--rays-per-batch", 1024, "--render.num-samples", 32,
        "--render.sample-budget", 8192, "occupancy:grid", "--occupancy.resolution", 32, "field.encoding:hash",
        "--field.encoding.log2-table-size", 12, "--field.encoding.levels", 4, "--field.encoding.max-res", 64)
    return run


def open_page(viewer, tmp_path) -> Browser:
    """A browser on the viewer's page, once the page has reported its camera."""
    browser = Browser(tmp_path / "profile")
    browser.open(viewer.url)
    wait_for(lambda: viewer.moves > 0, 60, "the page to connect and report its camera")
    return browser


@needs_browser
def test_browser_draws_the_gaussians_of_a_splat_run(splat_run, tmp_path):
    viewer = start(ViewArgs(splat_run, port=free_port(), resolution=96))
    browser = None
    try:
        assert viewer.gaussians and viewer.native()
        viewer.show("train", False)
        viewer.show("test", False)  # all that is left to draw is the Gaussians
        browser = open_page(viewer, tmp_path)
        client = next(iter(viewer.server.get_clients().values()))
        # The page settles on the start pose (its first report can be viser's default):
        # the pose went to the browser and came back through viser's frame unchanged.
        expected = start_c2w(viewer.scene, viewer.bbox)
        wait_for(lambda: np.allclose(viewer.client_camera(client).c2w, expected, atol=1e-4), 30, "the start pose")
        wait_for(lambda: shows_something(browser.screenshot()), 60, "the Gaussians to appear")
        iio.imwrite(tmp_path / "splat.png", browser.screenshot())
        assert viewer.last_frame is None  # the browser drew them: nothing was rendered here
        view = viewer.views[-1]  # a test view: the page's camera moves there
        viewer.go_to(client, view)
        wait_for(lambda: np.allclose(viewer.client_camera(client).c2w, view.camera.c2w, atol=1e-4), 30, "the test view")
        assert client.camera.fov == pytest.approx(2 * math.atan(0.5 * view.camera.height / float(view.camera.fy)))
        viewer.mode.value = "depth"  # depth: rendered here, through the method
        wait_for(lambda: viewer.last_frame is not None and viewer.last_frame.full, 120, "a depth image")
        assert max(viewer.last_frame.image.shape[:2]) == 96 and not viewer.splats.visible
        saved = viewer.save_view(client)
        assert saved == splat_run / SAVED / "000.png" and max(iio.imread(saved).shape[:2]) == 96
        assert json.loads(saved.with_suffix(".json").read_text())["mode"] == "depth"
    finally:
        browser and browser.close()
        viewer.stop()


def test_publish_shows_a_newer_state_of_the_run(splat_run):
    """What the training loop calls: the viewer keeps a copy of the newest state and
    sends its Gaussians again."""
    viewer = start(ViewArgs(splat_run, port=free_port()))
    try:
        state = dict(viewer.loaded.state)
        alive = np.asarray(state["alive"]).copy()
        alive[np.flatnonzero(alive)[::2]] = False
        first = viewer.splats
        viewer.publish({**state, "alive": alive, "step": np.int32(99)})
        alive[:] = False  # the loop's buffers are reused: the viewer holds its own copy
        assert viewer.loaded.step == 99 and viewer.splats is not first
        assert f"{int(np.asarray(viewer.loaded.state['alive']).sum()):,} Gaussians" in viewer.status.content
        assert "step 99" in viewer.status.content and np.asarray(viewer.loaded.state["alive"]).any()
    finally:
        viewer.stop()


@needs_browser
def test_browser_shows_a_radiance_field_rendered_on_the_server(nerf_run, tmp_path):
    viewer = start(ViewArgs(nerf_run, port=free_port(), resolution=96, preview=1.0))  # one image per pose
    browser = None
    try:
        assert not viewer.gaussians and not viewer.native()
        viewer.show("train", False)
        viewer.show("test", False)
        browser = open_page(viewer, tmp_path)
        wait_for(lambda: viewer.last_frame is not None and viewer.last_frame.full, 120, "the full-resolution image")
        wait_for(lambda: shows_something(browser.screenshot()), 30, "the image to appear")
        iio.imwrite(tmp_path / "nerf.png", browser.screenshot())
    finally:
        browser and browser.close()
        viewer.stop()
