"""Images rendered on the server, off the web server's threads: one background thread
renders each client's newest camera, first small while the camera moves, then refined at
full resolution once it has been still for a moment.

Rendering a radiance field takes from tens of milliseconds to seconds on a CPU, while a
browser sends camera updates at up to 60 per second. So each client has one slot: a new
camera replaces the request waiting there (stale requests are dropped unrendered), and
an image whose request went stale while it rendered is not sent.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from typing import Callable

import numpy as np

from ..cameras import Cameras
from ..frames import colorize_depth, to_uint8

MODES = ("rgb", "depth", "opacity")
"""What a server-side image shows."""


def frame_image(out: dict, mode: str) -> np.ndarray:
    """``[H, W, 3]`` uint8 image of a method's render output: the colour, the depth
    (turbo, `frames.colorize_depth`) or the opacity (grey)."""
    if mode == "depth":
        return to_uint8(colorize_depth(np.asarray(out["depth"]), np.asarray(out["opacity"])))
    if mode == "opacity":
        return to_uint8(np.repeat(np.asarray(out["opacity"])[..., None], 3, axis=-1))
    return to_uint8(np.asarray(out["rgb"]))


@dataclasses.dataclass(frozen=True)
class Request:
    """A client's camera at full resolution and what to show."""

    client: int
    generation: int
    """Counts the client's requests; only the newest one's images are sent."""
    camera: Cameras
    mode: str
    submitted: float
    """``time.perf_counter()`` when the camera arrived."""


@dataclasses.dataclass(frozen=True)
class Frame:
    """A rendered image on its way to a client."""

    client: int
    image: np.ndarray
    full: bool
    """False for the preview drawn while the camera moves."""
    seconds: float
    """From the camera's arrival to the image being ready (waiting included)."""


class RenderQueue:
    """The background renderer (see the module docstring).

    Args:
        render: ``(camera, mode) -> [H, W, 3] uint8``, called on the queue's thread only.
        deliver: receives each `Frame` that is still current.
        preview: resolution factor of the image drawn while the camera moves (1: none).
        settle: seconds a camera must stay unchanged before its full-resolution render.
    """

    def __init__(self, render: Callable[[Cameras, str], np.ndarray], deliver: Callable[[Frame], None],
                 preview: float = 0.25, settle: float = 0.2):
        self._render, self._deliver = render, deliver
        self.preview, self.settle = preview, settle
        self._cond = threading.Condition()
        self._latest: dict[int, int] = {}
        self._pending: dict[int, tuple[Request, bool, float]] = {}  # client -> (request, full, not before)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="sparsefield-render", daemon=True)
        self._thread.start()

    def submit(self, client: int, camera: Cameras, mode: str) -> int:
        """Queue a client's new camera, replacing its waiting request; returns its generation."""
        with self._cond:
            generation = self._latest.get(client, 0) + 1
            self._latest[client] = generation
            full = self.preview >= 1.0
            self._pending[client] = (Request(client, generation, camera, mode, time.perf_counter()), full, 0.0)
            self._cond.notify()
        return generation

    def forget(self, client: int) -> None:
        """Drop a client that left: its waiting request and any image still rendering."""
        with self._cond:
            self._latest.pop(client, None)
            self._pending.pop(client, None)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread after the render in progress."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _take(self) -> tuple[tuple[Request, bool] | None, float | None]:
        """The next job, previews first, else the full render whose camera has settled;
        or None and how long to wait for one (None: until notified). Holds the lock."""
        now = time.perf_counter()
        for client, (request, full, _) in self._pending.items():
            if not full:
                del self._pending[client]
                return (request, False), None
        if not self._pending:
            return None, None
        client, (request, _, due) = min(self._pending.items(), key=lambda item: item[1][2])
        if due > now:
            return None, due - now
        del self._pending[client]
        return (request, True), None

    def _loop(self) -> None:
        while True:
            with self._cond:
                job, wait = self._take()
                while job is None and not self._closed:
                    self._cond.wait(wait)
                    job, wait = self._take()
                if self._closed:
                    return
            request, full = job
            camera = request.camera if full else request.camera.scaled(self.preview)
            try:
                image = self._render(camera, request.mode)
            except Exception:  # a failed render must not end the thread: say why, go on
                traceback.print_exc()
                continue
            self._finish(request, full, image)

    def _finish(self, request: Request, full: bool, image: np.ndarray) -> None:
        """Send the image if its request is still the client's newest, and after a preview
        schedule the full-resolution render for when the camera has settled."""
        with self._cond:
            current = self._latest.get(request.client) == request.generation
            if current and not full:
                self._pending.setdefault(request.client, (request, True, time.perf_counter() + self.settle))
        if current:
            self._deliver(Frame(request.client, image, full, time.perf_counter() - request.submitted))
