"""The MP4 writer: H.264 yuv420p, exact size and frame count, moov before mdat, atomic."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from pipelet_wan.video import EncodeCancelled, top_level_boxes, write_mp4


def frames(n=9, w=80, h=48) -> np.ndarray:
    """A float gradient video, (n, h, w, 3) in [0, 1]."""
    t = np.linspace(0, 1, n, dtype=np.float32)[:, None, None, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, None, :, None]
    y = np.linspace(0, 1, h, dtype=np.float32)[None, :, None, None]
    return np.broadcast_to((x + y + t) / 3, (n, h, w, 3)).copy()


def probe(path) -> dict:
    """The video stream line and frame count per imageio-ffmpeg's ffmpeg."""
    import imageio_ffmpeg

    # imageio-ffmpeg's own ffmpeg decodes every frame; its banner names the stream.
    out = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    stream = next(line for line in out.splitlines() if "Video:" in line)
    nframes = imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    return {"stream": stream, "frames": nframes}


def test_writes_h264_yuv420p_faststart_with_every_frame(tmp_path):
    out = tmp_path / "v.mp4"
    seen = []
    size = write_mp4(frames(), str(out), 16, on_frame=seen.append)
    assert size == os.path.getsize(out) > 0
    assert seen == list(range(9))
    boxes = top_level_boxes(str(out))
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    info = probe(out)
    assert "h264" in info["stream"] and "yuv420p" in info["stream"], info
    assert "80x48" in info["stream"] and "16 fps" in info["stream"], info
    assert info["frames"] == 9
    assert sorted(os.listdir(tmp_path)) == ["v.mp4"], "no temporary file is left"


def test_a_stop_leaves_no_file(tmp_path):
    out = tmp_path / "v.mp4"
    calls = iter(range(100))
    with pytest.raises(EncodeCancelled):
        write_mp4(frames(), str(out), 16, should_stop=lambda: next(calls) >= 3)
    assert os.listdir(tmp_path) == []


def test_uint8_frames_and_odd_sizes(tmp_path):
    ok = (frames() * 255).astype(np.uint8)
    write_mp4(ok, str(tmp_path / "a.mp4"), 16)
    with pytest.raises(ValueError, match="even"):
        write_mp4(frames(w=81), str(tmp_path / "b.mp4"), 16)
    with pytest.raises(ValueError):
        write_mp4(np.zeros((0, 16, 16, 3), np.float32), str(tmp_path / "c.mp4"), 16)
