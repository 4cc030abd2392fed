"""Evaluation of a trained run on its test views: PSNR / SSIM / LPIPS per frame, the
protocol's masked metrics (DTU), ``metrics.json``, ``renders/test`` and the report; and
the quick PSNR the training loop logs every ``--eval-every`` steps."""

from __future__ import annotations

import warnings
from pathlib import Path

import imageio.v3 as iio
import jax
import numpy as np

from . import metrics
from .alignment import PoseAlignment, align_cameras
from .datasets import SceneData, apply_protocol, get_protocol, load_scene
from .datasets.protocols import ProtocolWarning
from .files import atomic_write_json
from .frames import save_frame, to_uint8
from .report import write_report
from .runs import LoadedRun, load_config, load_history, load_run


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


def quick_eval(loaded: LoadedRun, scene: SceneData, step: int) -> dict:
    """PSNR on the first ``eval_views`` test views (the curve in the report)."""
    config = loaded.config
    ids = test_views(config, scene)[: config.eval_views]
    values = [frame_psnr(loaded.render(scene.cameras[int(i)], scene.background)["rgb"], scene.images[i],
                         metric_mask(config, scene, int(i))) for i in ids]
    return {"step": step, "psnr": float(np.mean(values)) if values else None}


def evaluate_run(run: Path, scene: SceneData | None = None, data: Path | None = None,
                 train_seconds: float | None = None, align: PoseAlignment | None = None) -> dict:
    """Render the test views (the protocol's, or the test split), write ``renders/test``,
    ``metrics.json`` and ``report.html``. A protocol with masked metrics (DTU) scores
    inside the object masks (`score_frame`). With ``align``, each test camera is first
    aligned to its image (`sparsefield.alignment`; for poses from structure from motion),
    and each frame records the correction."""
    if scene is None:  # first: a wrong --data is found before the run is loaded
        config, _ = load_config(run)
        scene = load_scene(data or config.data, scale=config.scale)
    loaded = load_run(run)
    history = loaded.history if loaded.history is not None else load_history(run)  # before anything is written
    test_ids = test_views(loaded.config, scene)
    if len(test_ids) == 0:
        scene.split("test")  # raises DatasetError naming the empty split
    folder = Path(run) / "renders" / "test"
    cameras, corrections = scene.cameras[test_ids], [{}] * len(test_ids)
    if align is not None:
        cameras, corrections = aligned_cameras(loaded, scene, test_ids, align)
    per_frame = []
    for k, i in enumerate(test_ids):
        out = loaded.render(cameras[k], scene.background)
        save_frame(folder, f"{k:03d}", out)
        iio.imwrite(folder / f"{k:03d}_gt.png", to_uint8(scene.images[i]))
        m = score_frame(out["rgb"], scene.images[i], metric_mask(loaded.config, scene, int(i)))
        if "samples" in out:
            hit = out["opacity"] > 0
            m["samples_per_ray"] = float(out["samples"][hit].mean()) if hit.any() else 0.0
        per_frame.append({"frame": k, "name": scene.names[i], **m, **corrections[k]})
    summary = {key: float(np.mean([f[key] for f in per_frame])) for key in ("psnr", "ssim", "lpips")}
    result = {
        **summary,
        "train_seconds": train_seconds if train_seconds is not None else history.get("train_seconds"),
        "steps": loaded.step,
        "method": loaded.config.method,
        "train_view_ids": loaded.facts.get("train_view_ids"),
        "num_params": loaded.facts.get("num_params"),
        "devices": loaded.facts.get("devices", 1),
        "protocol": loaded.config.protocol,
        "masked": masked_metrics(loaded.config),
        "aligned_poses": align is not None,
        "per_frame": per_frame,
    }
    atomic_write_json(Path(run) / "metrics.json", result, indent=2)  # strict: a NaN LPIPS is null
    write_report(Path(run), result, history)
    aligned = ", poses aligned" if align is not None else ""
    print(f"test PSNR {result['psnr']:.2f} dB  SSIM {result['ssim']:.3f}  LPIPS {result['lpips']:.3f}"
          f"  ({len(per_frame)} views{aligned}) -> {run}/metrics.json")
    return result


def aligned_cameras(loaded: LoadedRun, scene: SceneData, ids: np.ndarray, config: PoseAlignment):
    """The test cameras ``ids`` aligned to their images, and per view the correction
    (degrees, centre move in box diagonals) and the colour error before and after."""
    found = align_cameras(loaded.method, loaded.state, scene.cameras[ids], scene.images[ids], scene.background,
                          config)
    for k, a in enumerate(found):
        print(f"  view {k}: pose moved {a.rotation_deg:.3f} deg, {a.shift:.2%} of the box diagonal; "
              f"MSE {a.mse_before:.5f} -> {a.mse_after:.5f}")
    cameras = jax.tree_util.tree_map(lambda *c: np.stack([np.asarray(x) for x in c]), *[a.camera for a in found])
    notes = [{"align_rotation_deg": a.rotation_deg, "align_shift": a.shift} for a in found]
    return cameras, notes
