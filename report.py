"""``report.html``: a run's loss and PSNR curves, and ground truth | prediction | depth per
test view."""

from __future__ import annotations

import html
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from matplotlib.figure import Figure

from .files import atomic_write_text


def write_report(run: Path, result: dict, history: dict) -> Path:
    """``report.html``: loss and PSNR curves, and GT | prediction | depth per test view."""
    fig = Figure(figsize=(10, 3.5))  # no pyplot: no global backend or figure state
    axes = fig.subplots(1, 2)
    steps = [h["step"] for h in history["train"]]
    axes[0].semilogy(steps, [h["loss"] for h in history["train"]])
    axes[0].set(title="training loss", xlabel="step")
    axes[1].plot(steps, [h["psnr"] for h in history["train"]], label="train batch")
    if history["eval"]:
        points = [e for e in history["eval"] if e.get("psnr") is not None]
        axes[1].plot([e["step"] for e in points], [e["psnr"] for e in points],
                     "o-", label="test views")
    axes[1].set(title="PSNR (dB)", xlabel="step")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(run / "curves.png", dpi=100)

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
    atomic_write_text(run / "report.html", page)
    return run / "report.html"
