"""Outputs of a trained run: evaluation (`metrics.json`), novel-view renders and videos,
mesh export, the training history and ``report.html``; the `render`, `eval`, `export`
and `demo` commands.
"""

from __future__ import annotations

import dataclasses
import html
import json
import warnings
from pathlib import Path

import imageio.v3 as iio
import jax
import numpy as np
import tyro

from sparsefield import metrics, parallel, runs
from sparsefield.cameras import Cameras, orbit_poses
from sparsefield.datasets import SceneData, apply_protocol, get_protocol, load_scene
from sparsefield.datasets.protocols import ProtocolWarning
from sparsefield.renderers.mesh import DEFAULT_THRESHOLD, extract_mesh, write_mesh
from sparsefield.renderers.render import render_image


@dataclasses.dataclass
class LoadedRun:
    """A run read back from its folder: config, field, trained state and run facts."""

    run: Path
    config: runs.RunConfig
    facts: dict
    field: object
    state: runs.TrainState

    def render(self, camera: Cameras, background) -> dict[str, np.ndarray]:
        return render_image(
            self.field.__call__, self.state.params, camera,
            self.facts["bbox"], runs.occupancy_test(self.config, self.state.params, self.state.step, self.state.grid),
            self.config.render, background, parallel.local_mesh(),
        )


def load_run(run: Path) -> LoadedRun:
    """Read a run folder (config and latest checkpoint)."""
    config, facts = runs.load_config(run)
    if config.method == "splat":
        from sparsefield import splat

        return splat.load_run(run, config, facts)
    ckpt = runs.latest_checkpoint(run)
    if ckpt is None:
        raise runs.UsageError(f"{run}/checkpoints: the run has no checkpoint yet")
    config = runs.at_step(config, runs.checkpoint_step(ckpt))
    field = runs.make_field(config, np.asarray(facts["bbox"], np.float32))
    state = runs.load_checkpoint(ckpt, runs.init_state(config, field))
    return LoadedRun(Path(run), config, facts, field, state)


# ---- images ------------------------------------------------------------------------------


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def colorize_depth(depth: np.ndarray, opacity: np.ndarray) -> np.ndarray:
    """Depth (divided by opacity) as a turbo-coloured image; empty pixels are white."""
    import matplotlib

    d = depth / np.maximum(opacity, 1e-6)
    hit = opacity > 0.5
    lo, hi = (np.percentile(d[hit], [1, 99]) if hit.any() else (0.0, 1.0))
    norm = np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = matplotlib.colormaps["turbo"](norm)[..., :3]
    return np.where(hit[..., None], rgb, 1.0)


def save_frame(folder: Path, name: str, out: dict) -> np.ndarray:
    """Write ``name.png`` (RGB), ``name_depth.png`` and ``name_opacity.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb8 = to_uint8(out["rgb"])
    iio.imwrite(folder / f"{name}.png", rgb8)
    iio.imwrite(folder / f"{name}_depth.png", to_uint8(colorize_depth(out["depth"], out["opacity"])))
    iio.imwrite(folder / f"{name}_opacity.png", to_uint8(out["opacity"]))
    return rgb8


def write_video(path: Path, frames: list[np.ndarray], fps: int = 24) -> Path:
    """MP4 through imageio-ffmpeg, or a GIF where no encoder is available."""
    try:
        with warnings.catch_warnings():  # the encoder runs in a subprocess: fork + exec at
            # once, so JAX's warning about forking a multithreaded process does not apply
            warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
            iio.imwrite(path.with_suffix(".mp4"), np.stack(frames), fps=fps, codec="libx264",
                        plugin="pyav" if _has_pyav() else None)
        return path.with_suffix(".mp4")
    except Exception:  # no ffmpeg / codec on this machine: fall back to GIF
        iio.imwrite(path.with_suffix(".gif"), np.stack(frames), duration=1000 / fps, loop=0)
        return path.with_suffix(".gif")


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401

        return True
    except ImportError:
        return False


# ---- evaluation --------------------------------------------------------------------------


def test_views(config, scene: SceneData) -> np.ndarray:
    """Indices into ``scene.images`` of the test views: the ``--protocol``'s test ids, or
    the scene's test split (empty when it has none)."""
    if config.protocol is None:
        return np.asarray(scene.splits.get("test", np.zeros(0, np.int64)), np.int64)
    with warnings.catch_warnings():  # the size warning was shown when training began
        warnings.simplefilter("ignore", ProtocolWarning)
        return apply_protocol(config.protocol, scene)[1]


def masked_metrics(config) -> bool:
    """Whether the run's protocol scores inside object masks (DTU)."""
    return config.protocol is not None and get_protocol(config.protocol).masked_metrics


def metric_mask(config, scene: SceneData, i: int) -> np.ndarray | None:
    """The object mask view ``i`` is scored inside, when the protocol measures masked
    (DTU), else None."""
    return scene.object_masks[i] if masked_metrics(config) else None


def score_frame(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> dict:
    """PSNR / SSIM / LPIPS of one view; with an object mask ``m``, RegNeRF's masked
    protocol: PSNR over the pixels with ``m = 1``, SSIM and LPIPS on both images composited
    on white, ``x m + (1 - m)``."""
    if mask is None:
        return metrics.image_metrics(pred, gt)
    m = np.asarray(mask, np.float32)[..., None]
    return metrics.image_metrics(pred * m + (1.0 - m), gt * m + (1.0 - m), mask=mask)


def frame_psnr(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> float:
    """PSNR of one view, over the pixels with ``mask = 1`` when a mask is given."""
    m = np.ones(gt.shape[:-1], np.float32) if mask is None else np.asarray(mask, np.float32)
    mse = np.sum(m[..., None] * (np.asarray(pred) - gt) ** 2) / max(3.0 * np.sum(m), 1e-12)
    return float(metrics.mse_to_psnr(mse))


def quick_eval(config, field, scene: SceneData, state, step: int) -> dict:
    """PSNR on the first ``config.eval_views`` test views (the curve in the report)."""
    loaded = LoadedRun(Path(config.out), config, {"bbox": scene.bbox.tolist()}, field, state)
    ids = test_views(config, scene)[: config.eval_views]
    values = [
        frame_psnr(loaded.render(scene.cameras[int(i)], scene.background)["rgb"], scene.images[i],
                   metric_mask(config, scene, int(i)))
        for i in ids
    ]
    return {"step": step, "psnr": float(np.mean(values)) if values else float("nan")}


def evaluate_run(run: Path, scene: SceneData | None = None, data: Path | None = None,
                 train_seconds: float | None = None) -> dict:
    """Render the test views (the protocol's, or the test split), write ``renders/test``,
    ``metrics.json`` and ``report.html``. A protocol with masked metrics (DTU) scores
    inside the object masks (`score_frame`)."""
    loaded = load_run(run)
    if scene is None:
        scene = load_scene(data or loaded.config.data, scale=loaded.config.scale)
    test_ids = test_views(loaded.config, scene)
    if len(test_ids) == 0:
        scene.split("test")  # raises DatasetError naming the empty split
    folder = Path(run) / "renders" / "test"
    per_frame = []
    for k, i in enumerate(test_ids):
        out = loaded.render(scene.cameras[int(i)], scene.background)
        save_frame(folder, f"{k:03d}", out)
        iio.imwrite(folder / f"{k:03d}_gt.png", to_uint8(scene.images[i]))
        m = score_frame(out["rgb"], scene.images[i], metric_mask(loaded.config, scene, int(i)))
        m["samples_per_ray"] = float(out["samples"][out["opacity"] > 0].mean()) if (out["opacity"] > 0).any() else 0.0
        per_frame.append({"frame": k, "name": scene.names[i], **m})
    history = load_history(run)
    summary = {
        key: float(np.mean([f[key] for f in per_frame])) for key in ("psnr", "ssim", "lpips")
    }
    result = {
        **summary,
        "train_seconds": train_seconds if train_seconds is not None else history.get("train_seconds"),
        "steps": int(loaded.state.step),
        "train_view_ids": loaded.facts["train_view_ids"],
        "num_params": loaded.facts["num_params"],
        "devices": loaded.facts.get("devices", 1),
        "protocol": loaded.config.protocol,
        "masked": masked_metrics(loaded.config),
        "per_frame": per_frame,
    }
    runs.atomic_write_text(Path(run) / "metrics.json", json.dumps(result, indent=2))
    write_report(Path(run), result, history)
    print(f"test PSNR {result['psnr']:.2f} dB  SSIM {result['ssim']:.3f}  LPIPS {result['lpips']:.3f}"
          f"  ({len(per_frame)} views) -> {run}/metrics.json")
    return result


# ---- training history and report ---------------------------------------------------------


def load_history(run: Path) -> dict:
    path = Path(run) / "history.json"
    if path.exists():
        return json.loads(path.read_text())
    return {"train": [], "eval": []}


def save_history(run: Path, history: dict) -> None:
    runs.atomic_write_text(Path(run) / "history.json", json.dumps(history))


def write_report(run: Path, result: dict, history: dict) -> Path:
    """``report.html``: loss and PSNR curves, and GT | prediction | depth per test view."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [h["step"] for h in history["train"]]
    axes[0].semilogy(steps, [h["loss"] for h in history["train"]])
    axes[0].set(title="training loss", xlabel="step")
    axes[1].plot(steps, [h["psnr"] for h in history["train"]], label="train batch")
    if history["eval"]:
        axes[1].plot([e["step"] for e in history["eval"]], [e["psnr"] for e in history["eval"]],
                     "o-", label="test views")
    axes[1].set(title="PSNR (dB)", xlabel="step")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(run / "curves.png", dpi=100)
    plt.close(fig)

    rows = []
    test = run / "renders" / "test"
    for f in result["per_frame"]:
        k = f"{f['frame']:03d}"
        strip = np.concatenate([iio.imread(test / f"{k}_gt.png")[..., :3], iio.imread(test / f"{k}.png"),
                                iio.imread(test / f"{k}_depth.png")], axis=1)
        iio.imwrite(test / f"{k}_strip.png", strip)
        rows.append(f"<tr><td>{html.escape(f['name'])}<br>PSNR {f['psnr']:.2f}<br>SSIM {f['ssim']:.3f}"
                    f"<br>LPIPS {f['lpips']:.3f}</td><td><img src='renders/test/{k}_strip.png'></td></tr>")
    page = f"""<!doctype html><meta charset="utf-8"><title>sparsefield run {html.escape(run.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} img{{max-width:100%}} td{{padding:4px;vertical-align:top}}</style>
<h1>{html.escape(str(run))}</h1>
<p>test PSNR <b>{result['psnr']:.2f}</b> dB, SSIM <b>{result['ssim']:.3f}</b>, LPIPS <b>{result['lpips']:.3f}</b>;
{result['steps']} steps in {result['train_seconds'] or 0:.0f} s; {result['num_params']:,} parameters;
train views {', '.join(map(str, result['train_view_ids']))}</p>
<img src="curves.png"><h2>Test views: ground truth | prediction | depth</h2><table>{''.join(rows)}</table>
"""
    runs.atomic_write_text(run / "report.html", page)
    return run / "report.html"


# ---- commands ----------------------------------------------------------------------------


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
class EvalArgs:
    run: Path
    """Run folder."""
    data: Path | None = None
    """Dataset folder (default: the run's)."""


@dataclasses.dataclass(frozen=True)
class ExportArgs:
    run: Path
    """Run folder."""
    out: Path = Path("mesh.ply")
    """Output mesh; .ply, .obj or .glb; a splat run also writes its Gaussians to a name
    ending in .splat.ply (the 3D Gaussian splatting layout)."""
    resolution: int = 256
    """Marching-cubes grid points per axis."""
    threshold: float | None = None
    """Density iso-level: 1 / world length for a NeRF (default 10), summed Gaussian
    opacity for a splat run (default 0.5)."""


def orbit_cameras(loaded: LoadedRun, scene: SceneData, frames: int) -> Cameras:
    """An orbit around the box centre at the training cameras' mean distance and height."""
    train = scene.cameras[scene.split("train")]
    centers = np.asarray(train.centers)
    up = np.asarray(train.c2w)[:, :3, 1].mean(0)
    up /= np.linalg.norm(up)
    target = np.asarray(loaded.facts["bbox"]).mean(0)
    offsets = centers - target
    radius = float(np.linalg.norm(offsets, axis=-1).mean())
    elev = float(np.degrees(np.arcsin(np.clip((offsets @ up) / np.linalg.norm(offsets, axis=-1), -1, 1))).mean())
    poses = orbit_poses(target, radius, elev, frames, up)
    ref = train[0]
    n = len(poses)
    return Cameras(poses, *(np.full(n, np.asarray(v), np.float32) for v in (ref.fx, ref.fy, ref.cx, ref.cy)),
                   width=ref.width, height=ref.height)


def render_path(args: RenderArgs) -> Path:
    loaded = load_run(args.run)
    scene = load_scene(args.data or loaded.config.data, scale=loaded.config.scale)
    if args.path == "test":
        cams = scene.cameras[test_views(loaded.config, scene)]
    elif args.path == "orbit":
        cams = orbit_cameras(loaded, scene, args.frames)
    else:
        raise runs.UsageError(f"--path {args.path}: choose 'test' or 'orbit'")
    folder = Path(args.out or Path(args.run) / "renders" / args.path)
    frames = []
    from tqdm import tqdm

    for k in tqdm(range(len(cams)), desc=f"render {args.path}"):
        frames.append(save_frame(folder, f"{k:03d}", loaded.render(cams[k], scene.background)))
    video = write_video(folder / "video", frames)
    print(f"{len(frames)} frames -> {folder}; video {video}")
    return video


def export_mesh(args: ExportArgs) -> Path:
    suffix = args.out.suffix.lower()
    if suffix not in (".ply", ".obj", ".glb"):
        raise runs.UsageError(f"{args.out}: unsupported mesh format '{suffix}' (use .ply, .obj or .glb)")
    loaded = load_run(args.run)
    if loaded.config.method == "splat":
        from sparsefield import splat

        return splat.export(loaded, args.out, args.resolution, args.threshold)
    params = loaded.state.params
    field = loaded.field
    density = jax.jit(lambda x: field.sigma(params, x))
    color = jax.jit(lambda x, d: field(params, x, d)[1])
    try:
        mesh = extract_mesh(density, color, np.asarray(loaded.facts["bbox"]), args.resolution,
                            DEFAULT_THRESHOLD if args.threshold is None else args.threshold)
    except ValueError as err:  # the field never reaches the threshold
        raise runs.UsageError(f"{args.run}: {err} Try a lower --threshold.") from None
    write_mesh(mesh, str(args.out))
    print(f"mesh: {len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces -> {args.out}")
    return args.out


def run_command(command: str, args: list[str]) -> None:
    prog = f"sparsefield {command}"
    if command == "render":
        render_path(tyro.cli(RenderArgs, args=args, prog=prog))
    elif command == "eval":
        a = tyro.cli(EvalArgs, args=args, prog=prog)
        evaluate_run(a.run, data=a.data)
    elif command == "export":
        export_mesh(tyro.cli(ExportArgs, args=args, prog=prog))


def demo(train_fn, config: runs.RunConfig) -> None:
    """Train (demo scene unless --data), evaluate, render an orbit video, export a mesh."""
    run = train_fn(config)
    render_path(RenderArgs(run=run, path="orbit", frames=24))
    export_mesh(ExportArgs(run=run, out=run / "mesh.ply"))
    print(f"done: open {run}/report.html")
