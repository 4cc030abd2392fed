"""``sparsefield view``: a run in the browser, on viser.

`convert` maps cameras and Gaussians between sparsefield and viser, `render` renders
images on the server off the web threads, `scene` draws the dataset's cameras, and `app`
holds the `Viewer`, its `ViewArgs` and the command's `view`.
"""

from __future__ import annotations

from .app import SAVED, ViewArgs, Viewer, load_for_view, start, view
from .convert import c2w_from_viser, focal_from_fov, fov_from_focal, has_gaussians, viser_camera, viser_from_c2w

__all__ = [
    "SAVED", "ViewArgs", "Viewer", "c2w_from_viser", "focal_from_fov", "fov_from_focal", "has_gaussians",
    "load_for_view", "start", "view", "viser_camera", "viser_from_c2w",
]
