"""What a trained run gives besides its metrics: novel views along a camera path (PNG
frames and a video) and meshes; the ``render`` and ``export`` commands. Both go through
the run's method (`sparsefield.methods.base.Method`): ``render`` for images, ``export``
for the method's own formats (a Gaussian run's ``.splat.ply``) and ``surface`` for
meshes."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from .cameras import mean_up, orbit_cameras
from .datasets import load_scene
from .errors import UsageError
from .evaluate import test_views
from .files import file_in_the_way
from .frames import save_frame, write_video
from .methods import METHODS, find_method
from .renderers.mesh import MESH_FORMATS, extract_mesh, write_mesh
from .renderers.tsdf import extract, fuse, fusion_cameras
from .runs import load_config, load_run


@dataclasses.dataclass(frozen=True)
class RenderArgs:
    run: Path
    """Run folder."""
    path: str = "orbit"
    """Camera path: 'test' (the dataset's test cameras) or 'orbit'."""
    frames: int = 60
    """Frames of the orbit."""
    out: Path | None = None
    """Output folder (default RUN/renders/PATH)."""
    data: Path | None = None
    """Dataset folder for --path test (default: the run's)."""


@dataclasses.dataclass(frozen=True)
class ExportArgs:
    run: Path
    """Run folder."""
    out: Path = Path("mesh.ply")
    """Output mesh: .ply, .obj or .glb; a splat run also writes its Gaussians to a name
    ending in .splat.ply (the 3D Gaussian splatting PLY), .spz (Niantic's compressed
    format) or .splat."""
    resolution: int = 256
    """Grid points along the longest axis of the box (marching cubes, fusion volume)."""
    route: Literal["tsdf", "density"] = "tsdf"
    """How the surface is found: ``tsdf`` fuses the depth the method renders from the
    training cameras and views all around into a truncated signed distance volume (only
    first-hit surfaces that a training camera saw from the front enter, so fog inside an
    object, in a cavity or under a floor cannot); ``density``
    runs marching cubes on the method's own field at ``--threshold``."""
    views: int = 32
    """``tsdf``: views added around the box to the training cameras."""
    threshold: float | None = None
    """``density``: iso-level of the method's surface field: density (1 / world length)
    for a radiance field (default 10), summed Gaussian opacity for a splat run (0.5)."""
    data: Path | None = None
    """``tsdf``: dataset folder for the training cameras (default: the run's)."""


def render_path(args: RenderArgs) -> Path:
    """Render the test cameras or an orbit to ``OUT/NNN.png`` (+ depth, opacity) and a video."""
    if args.path not in ("test", "orbit"):
        raise UsageError(f"--path {args.path}: choose 'test' or 'orbit'")
    if args.frames < 1:
        raise UsageError(f"--frames {args.frames}: must be at least 1")
    if args.out is not None:
        check_output(Path(args.out), folder=True)
    config, _ = load_config(args.run)  # the scene first: a wrong --data is found before the run is loaded
    scene = load_scene(args.data or config.data, scale=config.scale)
    loaded = load_run(args.run)
    if args.path == "test":
        cams = scene.cameras[test_views(loaded.config, scene)]
    else:
        cams = orbit_cameras(loaded.train_cameras(scene), loaded.method.bbox.mean(0), args.frames)
    folder = Path(args.out or Path(args.run) / "renders" / args.path)
    frames = [save_frame(folder, f"{k:03d}", loaded.render(cams[k], scene.background))
              for k in tqdm(range(len(cams)), desc=f"render {args.path}")]
    video = write_video(folder / "video", frames)
    print(f"{len(frames)} frames -> {folder}; video {video}")
    return video


def export_mesh(args: ExportArgs) -> Path:
    """The method's own format for ``args.out`` if it names one, else a mesh (`fused_mesh`
    or `density_mesh`)."""
    config, _ = load_config(args.run)
    own = find_method(config.method).native_formats
    name, suffix = args.out.name.lower(), args.out.suffix.lower()
    others = sorted({s for cls in METHODS.values() for s in cls.native_formats} - set(own))
    if any(name.endswith(s) for s in others) and not any(name.endswith(s) for s in own):
        raise UsageError(f"{args.out}: a {config.method} run cannot write that format; "
                         f"export a mesh ({', '.join(MESH_FORMATS)}){' or ' + ', '.join(own) if own else ''}")
    if suffix not in MESH_FORMATS and not any(name.endswith(s) for s in own):
        raise UsageError(f"{args.out}: unsupported format '{suffix}' (use {', '.join((*MESH_FORMATS, *own))})")
    if args.resolution < 2:
        raise UsageError(f"--resolution {args.resolution}: must be at least 2")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise UsageError(f"--threshold {args.threshold}: must be a finite number")
    check_output(Path(args.out), folder=False)
    loaded = load_run(args.run)
    native = loaded.method.export(loaded.state, args.out)
    if native is not None:
        return native
    mesh = fused_mesh(loaded, args) if args.route == "tsdf" else density_mesh(loaded, args)
    write_mesh(mesh, str(args.out))
    print(f"mesh: {len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces -> {args.out}")
    return args.out


def density_mesh(loaded, args: ExportArgs):
    """Marching cubes on the method's surface field at ``--threshold``, coloured by it."""
    surface = loaded.method.surface(loaded.state)
    threshold = surface.threshold if args.threshold is None else args.threshold
    try:
        return extract_mesh(surface.density, surface.color, surface.bbox, args.resolution, threshold)
    except ValueError as err:  # the field never reaches the threshold
        raise UsageError(f"{args.run}: {err} Try a lower --threshold.") from None


def fused_mesh(loaded, args: ExportArgs):
    """TSDF fusion (`sparsefield.renderers.tsdf`) of what the method renders from the
    training cameras and ``args.views`` more around the box, then its zero level set
    where a training camera saw the surface from the front (the added views carve)."""
    scene = load_scene(args.data or loaded.config.data, scale=loaded.config.scale)
    train = loaded.train_cameras(scene)
    cams = fusion_cameras(train, loaded.method.bbox, args.views, up=mean_up(train))
    renders = [loaded.render(cams[k], scene.background) for k in tqdm(range(len(cams)), desc="render for fusion")]
    stack = lambda key: np.stack([r[key] for r in renders])  # noqa: E731
    photos = np.arange(len(renders)) < len(train)  # fusion_cameras puts the training cameras first
    volume = fuse(np.stack([surface_distance(r) for r in renders]), stack("opacity"), stack("rgb"), cams,
                  loaded.method.bbox, args.resolution, front_views=photos)
    mesh = extract(volume)
    if len(mesh.faces) == 0:
        raise UsageError(f"{args.run}: the renders show no surface to fuse; try --route density")
    return mesh


def surface_distance(render: dict) -> np.ndarray:
    """``[H, W]`` distance along each pixel's ray to the surface it sees: the render's
    ``surface_depth`` where the method gives one (the radiance field: where the
    transmittance falls through
    `sparsefield.renderers.render.SURFACE_TRANSMITTANCE`), else its expected depth over
    its opacity."""
    if "surface_depth" in render:
        return np.asarray(render["surface_depth"])
    return np.asarray(render["depth"]) / np.maximum(np.asarray(render["opacity"]), 1e-6)


def check_output(out: Path, folder: bool) -> None:
    """``--out`` can be written: a file where a file goes and a folder where a folder
    goes (existing or not), and no file where a folder above it should be.

    Raises:
        UsageError: naming ``--out`` and the problem.
    """
    if out.exists() and out.is_dir() != folder:
        raise UsageError(f"--out {out}: is a {'file' if folder else 'folder'}; give a {'folder' if folder else 'file'}")
    if file_in_the_way(out) is not None:
        raise UsageError(f"--out {out}: {file_in_the_way(out)} is a file, not a folder")
