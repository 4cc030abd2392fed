"""`frames.write_video`: the size, codec, pixel format and layout that play everywhere.

ffprobe (Debian's ``ffmpeg`` package) reads the written files independently of the
writer; the tests skip where it is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from sparsefield import frames
from sparsefield.frames import pad_to_even, write_video

FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(FFPROBE is None, reason="ffprobe is not installed")


def probe(path) -> dict:
    """The first video stream's fields and the container's, as ffprobe reports them."""
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,pix_fmt,width,height,nb_frames", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)["streams"][0]


def ramp(n: int, height: int, width: int) -> list[np.ndarray]:
    """``n`` frames of a diagonal gradient that moves, so a resize or shift would show."""
    y, x = np.mgrid[:height, :width]
    return [np.stack([(x * 255 // width + 8 * k) % 256, y * 255 // height,
                      np.full_like(x, 128)], -1).astype(np.uint8) for k in range(n)]


@needs_ffprobe
@pytest.mark.parametrize("size", [(200, 200), (300, 400), (151, 201)])
def test_video_keeps_the_frame_size(tmp_path, size):
    """200x200 stays 200x200 (imageio-ffmpeg's default made it 208x208) and 400x300 stays
    400x300 (was 400x304, stretched); an odd side is padded by one pixel, never resized."""
    height, width = size
    path = write_video(tmp_path / "video", ramp(6, height, width), fps=12)
    assert path.suffix == ".mp4" and path.stat().st_size > 0
    stream = probe(path)
    assert (stream["width"], stream["height"]) == (width + width % 2, height + height % 2)
    assert stream["codec_name"] == "h264" and stream["pix_fmt"] == "yuv420p"
    assert int(stream["nb_frames"]) == 6
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "+faststart puts the index first"
    assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]  # no partial file left


@needs_ffprobe
def test_video_pixels_are_not_stretched(tmp_path):
    """Decoding the 400x300 video gives back the frames to within H.264's loss (a 4-pixel
    stretch of the gradient would move its columns by up to 4 grey levels per row)."""
    frames = ramp(3, 300, 400)
    path = write_video(tmp_path / "video", frames, fps=12)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    assert tuple(meta["size"]) == (400, 300)
    decoded = np.stack([np.frombuffer(f, np.uint8).reshape(300, 400, 3) for f in reader])
    assert decoded.shape == (3, 300, 400, 3)
    assert np.mean(np.abs(decoded.astype(float) - np.stack(frames))) < 2.0


def test_pad_to_even_repeats_the_edge():
    frames = np.arange(2 * 3 * 5 * 3, dtype=np.uint8).reshape(2, 3, 5, 3)
    padded = pad_to_even(frames)
    assert padded.shape == (2, 4, 6, 3)
    np.testing.assert_array_equal(padded[:, :3, :5], frames)
    np.testing.assert_array_equal(padded[:, 3, :5], frames[:, 2])
    np.testing.assert_array_equal(padded[:, :3, 5], frames[:, :, 4])
    assert pad_to_even(frames[:, :2, :4]).shape == (2, 2, 4, 3)


def test_without_ffmpeg_a_gif(tmp_path, monkeypatch):
    def missing():
        raise RuntimeError("No ffmpeg exe could be found")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    path = write_video(tmp_path / "video", ramp(3, 21, 30))
    assert path.name == "video.gif" and path.stat().st_size > 0


def test_a_failed_encode_leaves_no_file(tmp_path, monkeypatch):
    """The old writer left a 0-byte ``.mp4`` when the encoder failed (PyAV, odd sizes)."""

    def broken(path, video, fps):
        path.write_bytes(b"")
        raise OSError("encoder failed")

    monkeypatch.setattr(frames, "_encode", broken)
    with pytest.raises(OSError, match="encoder failed"):
        write_video(tmp_path / "video", ramp(3, 20, 30))
    assert list(tmp_path.iterdir()) == []
