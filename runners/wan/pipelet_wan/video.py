"""Encoding frames to the MP4 pipelet promises: H.264, yuv420p, exact size, the job's
frame rate, ``moov`` before ``mdat`` (plays in a browser while it downloads).

Encoding uses imageio-ffmpeg's writer (its own ffmpeg binary, libx264) with
``-movflags +faststart``. The file is written under a temporary name beside the target
and renamed into place only when complete, so a crash or a cancel never leaves a
truncated MP4 at the target path.
"""

from __future__ import annotations

import os
import struct
from typing import Callable, Sequence

import numpy as np

# Visually lossless for generated video; the preset trades encode time for size.
CRF = "18"
PRESET = "medium"


class EncodeCancelled(Exception):
    """The job was cancelled while its frames were being encoded."""


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1], shape (F, H, W, 3), to uint8 RGB."""
    if frames.dtype == np.uint8:
        return frames
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def write_mp4(
    frames: np.ndarray | Sequence[np.ndarray],
    path: str,
    fps: int,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    on_frame: Callable[[int], None] | None = None,
) -> int:
    """Encode ``frames`` (F, H, W, 3; float [0, 1] or uint8) to ``path``; returns its size.

    ``should_stop`` is polled between frames; when it says so the partial file is removed
    and :class:`EncodeCancelled` raised. ``on_frame(i)`` runs after frame ``i`` is sent.
    """
    import imageio_ffmpeg

    if len(frames) == 0:
        raise ValueError("no frames to encode")
    height, width = frames[0].shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"{width}x{height}: yuv420p needs even sides")
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.part")
    writer = imageio_ffmpeg.write_frames(
        tmp,
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        quality=None,
        # Never let the writer resize: the size is the job's, exactly.
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-crf", CRF, "-preset", PRESET, "-movflags", "+faststart", "-f", "mp4"],
    )
    finished = False
    try:
        writer.send(None)  # start ffmpeg
        for i, frame in enumerate(frames):
            if should_stop():
                raise EncodeCancelled()
            writer.send(np.ascontiguousarray(to_uint8(np.asarray(frame))))
            if on_frame is not None:
                on_frame(i)
        writer.close()  # waits for ffmpeg to finish the file
        if should_stop():
            raise EncodeCancelled()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        finished = True
    finally:
        if not finished:
            writer.close()
            _remove(tmp)
    return os.path.getsize(path)


def _remove(path: str) -> None:
    """Remove ``path`` if it exists."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def top_level_boxes(path: str) -> list[str]:
    """The MP4's top-level box types in file order, e.g. ``['ftyp', 'moov', 'mdat']``."""
    boxes = []
    with open(path, "rb") as f:
        size_total = os.fstat(f.fileno()).st_size
        offset = 0
        while offset + 8 <= size_total:
            f.seek(offset)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:
                (size,) = struct.unpack(">Q", f.read(8))
            elif size == 0:
                size = size_total - offset
            if size < 8:
                raise ValueError(f"bad box size {size} at {offset}")
            boxes.append(kind.decode("latin-1"))
            offset += size
    return boxes
