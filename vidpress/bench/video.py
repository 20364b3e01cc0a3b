"""A synthetic benchmark video written once to an mp4 file, so the decode stage reads a real file.

Frames are a drifting colour gradient with a few moving squares (cheap to draw, compresses and decodes
like ordinary footage rather than noise). PyAV writes H.264 when it is installed, else OpenCV writes MPEG-4
Part 2 (``mp4v``); both decode through :func:`vidpress.video.load_video`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterator

import numpy as np

FPS = 2.0


def synthetic_frames(num_frames: int, height: int, width: int) -> Iterator[np.ndarray]:
    """uint8 [H, W, 3] RGB frames, one at a time."""
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    side = max(8, min(height, width) // 6)
    for index in range(num_frames):
        frame = np.empty((height, width, 3), dtype=np.uint8)
        frame[..., 0] = (rows + 3 * index) % 256
        frame[..., 1] = (cols + 5 * index) % 256
        frame[..., 2] = (rows + cols + 7 * index) % 256
        for square in range(3):
            top = (index * (square + 1) * 5 + square * height // 3) % (height - side)
            left = (index * (square + 2) * 7 + square * width // 4) % (width - side)
            frame[top : top + side, left : left + side] = (255 * (square == 0), 255 * (square == 1), 255 * (square == 2))
        yield frame


def write_synthetic_video(path: Path, num_frames: int, height: int, width: int, fps: float = FPS) -> Path:
    """Write ``num_frames`` synthetic frames to ``path`` at ``fps`` (kept when it already exists)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    frames = synthetic_frames(num_frames, height, width)
    if importlib.util.find_spec("av") is not None:
        _write_pyav(partial, frames, height, width, fps)
    else:
        _write_opencv(partial, frames, height, width, fps)
    partial.replace(path)
    return path


def _write_pyav(path: Path, frames: Iterator[np.ndarray], height: int, width: int, fps: float) -> None:
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _write_opencv(path: Path, frames: Iterator[np.ndarray], height: int, width: int, fps: float) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} (no mp4v encoder in this build)")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
