"""The viewer: a viser web server that shows one run to every browser that connects.

A state with 3D Gaussians (`convert.has_gaussians`) is sent to the browser once, which
rasterizes it itself, so it turns in real time whatever machine trained it. Anything
else, and depth or opacity of any method, is rendered on the server through the method
protocol (`LoadedRun.render`) by a `RenderQueue`: small while the camera moves, refined
when it stops. The same `Viewer` serves a finished run (`view`) and a run in training
(`Viewer.publish`, called by the training loop).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import jax
import numpy as np
import viser

from .. import parallel
from ..cameras import mean_up
from ..datasets import DatasetError, SceneData, load_scene
from ..errors import UsageError
from ..runs import LoadedRun, load_run
from .convert import has_gaussians, image_size, splat_arrays, vertical_fov, viser_camera, viser_from_c2w
from .render import MODES, Frame, RenderQueue, frame_image
from .scene import ShownView, add_frustums, shown_views, start_c2w, start_pose, test_psnr

SAVED = "views"
"""Folder of the run that `Viewer.save_view` writes to."""
WARM_UP = -1
"""The render queue's client id of `Viewer._warm_up` (viser numbers clients from 0)."""


@dataclasses.dataclass(frozen=True)
class ViewArgs:
    """``sparsefield view``: show a run in the browser."""

    run: Path
    """The run folder to show (what ``sparsefield train --out`` wrote)."""
    port: int = 8080
    """Port of the web page (http://HOST:PORT)."""
    host: str = "127.0.0.1"
    """Address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 for any (forward
    the port over ssh rather than opening it on a shared machine)."""
    resolution: int = 400
    """Longer side in pixels of images rendered on the server once the camera stops (and
    of saved views)."""
    preview: float = 0.25
    """Resolution factor of the images rendered on the server while the camera moves."""
    settle: float = 0.2
    """Seconds the camera stays still before the full-resolution render starts."""
    thumbnail: int = 96
    """Longer side in pixels of the training images drawn in their frustums."""
    refresh: float = 2.0
    """While training: seconds between two sends of the Gaussians to the browser (a
    million Gaussians are 32 MB)."""


class Viewer:
    """A running viewer (see the module docstring); `stop` ends it.

    Args:
        loaded: the run: its method, state, config and facts (``train_view_ids`` and
            ``test_ids`` place the frustums).
        scene: the run's dataset, for the frustums and the background colour; None
            shows the scene alone on white.
    """

    def __init__(self, args: ViewArgs, loaded: LoadedRun, scene: SceneData | None):
        self.args, self.loaded, self.scene = args, loaded, scene
        self.background = np.asarray(scene.background if scene is not None else (1.0, 1.0, 1.0), np.float32)
        self.gaussians = has_gaussians(loaded.state)
        self.views: list[ShownView] = shown_views(loaded, scene) if scene is not None else []
        self.last_frame: Frame | None = None
        self.moves = 0
        """Camera updates received from browsers (a connected page reports its camera)."""
        self._seen: set[int] = set()
        self._sent_at = 0.0
        self._lock = threading.Lock()
        self.server = viser.ViserServer(host=args.host, port=args.port, label=f"sparsefield: {Path(loaded.run).name}",
                                        verbose=False)
        self.queue = RenderQueue(self._render, self._deliver, args.preview, args.settle)
        self._set_scene()
        self._set_gui()
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(lambda client: self._leave(client.client_id))
        if not self.native():
            self._warm_up()

    @property
    def bbox(self) -> np.ndarray:
        """The scene box ``[2, 3]`` the method was built with."""
        return np.asarray(self.loaded.method.bbox, np.float64)

    @property
    def url(self) -> str:
        """The page's address (``localhost`` when listening on every address)."""
        host = "localhost" if self.args.host in ("0.0.0.0", "::") else self.args.host
        return f"http://{host}:{self.server.get_port()}"

    # ---- the scene ---------------------------------------------------------------------

    def _set_scene(self) -> None:
        """Up direction, the first camera, the Gaussians when there are some, the frustums."""
        scene = self.scene
        if scene is not None:
            self.server.scene.set_up_direction(mean_up(scene.cameras))
        position, target, up, fov = start_pose(scene, self.bbox)
        initial = self.server.initial_camera
        initial.position, initial.look_at, initial.up, initial.fov = position, target, up, fov
        self.splats = self.server.scene.add_gaussian_splats("/gaussians", **splat_arrays(self.loaded.state)) \
            if self.gaussians else None
        self.frustums = add_frustums(self.server, self.views, scene, self.args.thumbnail, self.go_to) \
            if scene is not None else {"train": [], "test": []}

    def _set_gui(self) -> None:
        gui = self.server.gui
        self.status = gui.add_markdown(self._status())
        self.mode = gui.add_dropdown("Show", MODES, initial_value="rgb")
        self.mode.on_update(lambda _: self._mode_changed())
        self.on_server = gui.add_checkbox(
            "Render on server", False, visible=self.gaussians,
            hint="Draw the Gaussians with the run's own rasterizer (view-dependent colour) instead of the browser's")
        self.on_server.on_update(lambda _: self._mode_changed())
        resolution = self.args.resolution
        self.resolution = gui.add_slider("Resolution", min(64, resolution), max(1600, resolution), 16, resolution,
                                         hint="Longer side of the images rendered on the server when the camera stops")
        self.resolution.on_update(lambda _: self._rerender())
        self.boxes = {split: gui.add_checkbox(label, True) for split, label in
                      (("train", "Training cameras"), ("test", "Test views"))}
        for split, box in self.boxes.items():
            box.on_update(lambda event, split=split: self.show(split, event.target.value))
        choose = "(choose a view)"
        self.jump = gui.add_dropdown("Go to view", [choose] + [v.name for v in self.views], initial_value=choose)
        self.jump.on_update(lambda event: self._jump(event.client, event.target.value))
        save = gui.add_button("Save view", hint=f"Render this view at the set resolution to {SAVED}/ in the run")
        save.on_click(lambda event: self._save_clicked(event.client))

    def _status(self) -> str:
        loaded = self.loaded
        facts = [f"**{Path(loaded.run).name}**", loaded.method.name, f"step {loaded.step}"]
        if self.gaussians:
            facts.append(f"{int(np.sum(np.asarray(loaded.state['alive']))):,} Gaussians")
        psnr = [p for p in test_psnr(loaded.run) if p is not None]
        if psnr:
            facts.append(f"test PSNR {np.mean(psnr):.2f} dB")
        last = self.last_frame
        timing = f"\n\nlast image: {last.image.shape[1]}x{last.image.shape[0]} in {last.seconds:.2f} s" if last else ""
        return " · ".join(facts) + timing

    def show(self, split: str, visible: bool) -> None:
        """Show or hide the frustums (and labels) of one split, ``train`` or ``test``."""
        self.boxes[split].value = visible
        for handle in self.frustums[split]:
            handle.visible = visible

    # ---- clients and their cameras -----------------------------------------------------

    def native(self) -> bool:
        """Whether the browser draws the scene itself (Gaussians shown in colour)."""
        return self.gaussians and self.mode.value == "rgb" and not self.on_server.value

    def _connect(self, client) -> None:
        client.camera.on_update(lambda camera: self._moved(camera.client))

    def _leave(self, client_id: int) -> None:
        self._seen.discard(client_id)
        self.queue.forget(client_id)

    def _watching(self) -> list:
        """The clients whose camera is known (viser's handle asserts before the first report)."""
        return [c for c in self.server.get_clients().values() if c.client_id in self._seen]

    def client_camera(self, client, long_side: int | None = None):
        """The sparsefield `Cameras` of what the client's browser shows, at ``long_side``
        pixels (the resolution slider's when None) with the browser's aspect ratio."""
        cam = client.camera
        width, height = image_size(cam.aspect, long_side or int(self.resolution.value))
        return viser_camera(cam.wxyz, cam.position, cam.fov, width, height)

    def _moved(self, client) -> None:
        self.moves += 1
        self._seen.add(client.client_id)
        self._request(client)

    def _request(self, client) -> None:
        """Ask the render queue for the client's view, unless the browser draws it."""
        if not self.native():
            self.queue.submit(client.client_id, self.client_camera(client), self.mode.value)

    def _rerender(self) -> None:
        for client in self._watching():
            self._request(client)

    def _mode_changed(self) -> None:
        """Switch between the browser's Gaussians and server images, and redraw."""
        native = self.native()
        if self.splats is not None:
            self.splats.visible = native
        if native:
            for client in self._watching():
                self.queue.forget(client.client_id)
                client.scene.set_background_image(None)
        self._rerender()

    def go_to(self, client, view: ShownView) -> None:
        """Move a client's camera to a scene camera (its pose and vertical field of view)."""
        wxyz, position = viser_from_c2w(view.camera.c2w)
        with client.atomic():
            client.camera.fov = vertical_fov(view.camera)
            client.camera.wxyz = wxyz
            client.camera.position = position

    def _jump(self, client, name: str) -> None:
        view = next((v for v in self.views if v.name == name), None)
        if view is not None and client is not None:
            self.go_to(client, view)

    # ---- images rendered here ----------------------------------------------------------

    def _warm_up(self) -> None:
        """Render the start view's preview once while nobody watches: the first server
        image compiles the renderer (tens of seconds for a radiance field on a CPU),
        which then happens while the browser opens the page."""
        fov = start_pose(self.scene, self.bbox)[3]
        width, height = image_size(4.0 / 3.0, int(self.args.resolution))
        wxyz, position = viser_from_c2w(start_c2w(self.scene, self.bbox))
        self.queue.submit(WARM_UP, viser_camera(wxyz, position, fov, width, height), "rgb")

    def _render(self, camera, mode: str) -> np.ndarray:
        return frame_image(self.loaded.render(camera, self.background), mode)

    def _deliver(self, frame: Frame) -> None:
        client = self.server.get_clients().get(frame.client)
        if frame.client == WARM_UP:
            self.queue.forget(WARM_UP)  # and its full-resolution render
        if client is None or self.native():
            return
        client.scene.set_background_image(frame.image, format="jpeg", jpeg_quality=90 if frame.full else 70)
        self.last_frame = frame
        if frame.full:
            self.status.content = self._status()

    def save_view(self, client) -> Path:
        """Render the client's view at the resolution slider's size through the method and
        write it, with what it shows, to ``RUN/views/NNN.png`` and its camera to
        ``NNN.json`` (``c2w``, intrinsics, size)."""
        camera = self.client_camera(client)
        image = self._render(camera, self.mode.value)
        folder = Path(self.loaded.run) / SAVED
        folder.mkdir(exist_ok=True)
        with self._lock:  # two clicks at once get two numbers
            number = 1 + max((int(p.stem) for p in folder.glob("[0-9][0-9][0-9].png")), default=-1)
            path = folder / f"{number:03d}.png"
            iio.imwrite(path, image)
        meta = {"step": self.loaded.step, "mode": self.mode.value, "c2w": np.asarray(camera.c2w).tolist(),
                **{k: float(getattr(camera, k)) for k in ("fx", "fy", "cx", "cy")},
                "width": camera.width, "height": camera.height}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
        return path

    def _save_clicked(self, client) -> None:
        path = self.save_view(client)
        client.add_notification("View saved", str(path), auto_close_seconds=6.0)

    # ---- training ----------------------------------------------------------------------

    def publish(self, state: dict) -> None:
        """Show a newer state of the run (the training loop calls this every few steps).

        The state is copied to host memory first: training donates its buffers to the
        next step. Gaussians are re-sent at most every ``refresh`` seconds; server images
        are redrawn for every client.
        """
        host = jax.tree_util.tree_map(np.array, parallel.to_host(state))
        self.loaded = dataclasses.replace(self.loaded, state=host)
        now = time.perf_counter()
        if self.splats is not None and now - self._sent_at >= self.args.refresh:
            self._sent_at = now
            visible = self.splats.visible
            self.splats = self.server.scene.add_gaussian_splats("/gaussians", **splat_arrays(host), visible=visible)
        self.status.content = self._status()
        self._rerender()

    def serve(self) -> None:
        """Serve until Ctrl-C, then stop."""
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print()
        finally:
            self.stop()

    def stop(self) -> None:
        self.queue.close()
        self.server.stop()


def load_for_view(run: Path) -> tuple[LoadedRun, SceneData | None]:
    """A run and its dataset; without the dataset (moved, deleted) None and a note, since
    the scene still shows without its cameras."""
    loaded = load_run(run)
    try:
        scene = load_scene(loaded.config.data, scale=loaded.config.scale)
    except (DatasetError, UsageError, OSError, TypeError) as err:
        print(f"view: the run's dataset is not readable ({err}); showing the scene without its cameras")
        scene = None
    return loaded, scene


def start(args: ViewArgs, loaded: LoadedRun | None = None, scene: SceneData | None = None) -> Viewer:
    """Start a viewer and return at once (it serves from background threads).

    Args:
        loaded, scene: the run to show; None reads ``args.run`` (`load_for_view`). The
            training loop passes its own method and state, and the scene it trains on.
    """
    if loaded is None:
        loaded, scene = load_for_view(args.run)
    return Viewer(args, loaded, scene)


def view(args: ViewArgs) -> None:
    """``sparsefield view --run RUN``: serve the run until Ctrl-C."""
    viewer = start(args)
    what = "Gaussians drawn by the browser" if viewer.gaussians else "images rendered on this machine"
    print(f"viewing {args.run} ({what}) at {viewer.url}  (Ctrl-C to stop)")
    viewer.serve()
