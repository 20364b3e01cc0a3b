"""Which source frames to decode, at what size, and when to seek instead of decoding forward.

Sampling rule
-------------
Frame ``i`` of the source is shown at ``i / fps`` seconds. The window ``[start, end)`` keeps the
``n`` frames ``first .. first + n - 1`` whose time falls inside it. To take ``k`` of them, the window
is cut into ``k`` equal segments and the frame under each segment's centre is kept::

    index_j = first + floor((2 j + 1) n / (2 k)),   j = 0 .. k - 1

This is ``round(linspace(first + n/(2k) - 1/2, first + n - n/(2k) - 1/2, k))`` in frame-centre
coordinates (frame ``i`` centred at ``i``, halves rounded up), in exact integer arithmetic; ``k == n``
keeps every frame and ``k == 1`` the middle one. ``k`` is ``num_frames``; or ``n * fps / source_fps``
rounded half up (at least 1, at most ``n``) for a target ``fps``; or ``n``. ``max_frames`` caps ``k`` in
every mode, which for ``fps`` sampling means falling back to ``max_frames`` uniform frames.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from vidpress.functional.uniform import uniform_indices
from vidpress.video.types import FrameRequestError

SEEK_MIN_GAP = 120
"""Seek (to the keyframe before the next wanted frame) rather than decode forward when the next
wanted frame is more than this many frames ahead. A seek costs decoding from that keyframe: half a
keyframe interval on average, and x264's default interval is 250 frames (most cameras and streaming
encoders use 30-120), so past about 120 frames seeking is the faster way."""

_EPS = 1e-6  # tolerance when turning seconds into frame positions


@dataclass(frozen=True)
class Sampling:
    """Validated sampling arguments; see the module docstring for the rule."""

    num_frames: int | None = None
    fps: float | None = None
    max_frames: int | None = None
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if self.num_frames is not None and self.fps is not None:
            raise FrameRequestError("give num_frames or fps, not both")
        check_positive_int("num_frames", self.num_frames)
        check_positive_int("max_frames", self.max_frames)
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise FrameRequestError(f"fps must be a positive number, got {self.fps!r}")
        if self.start is not None and not (math.isfinite(self.start) and self.start >= 0):
            raise FrameRequestError(f"start must be a time in seconds >= 0, got {self.start!r}")
        if self.end is not None and not self.end > 0:
            raise FrameRequestError(f"end must be a time in seconds > 0, got {self.end!r}")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise FrameRequestError(f"start ({self.start} s) must be before end ({self.end} s)")

    def window(self, num_source_frames: int, source_fps: float, duration: float) -> range:
        """Source frames whose time ``i / source_fps`` lies in ``[start, end)``."""
        start = self.start or 0.0
        if start >= duration:
            raise FrameRequestError(f"start={start} s is beyond the end of the video ({duration:.3f} s)")
        first = math.ceil(start * source_fps - _EPS)
        stop = num_source_frames if self.end is None else math.ceil(self.end * source_fps - _EPS)
        window = range(first, min(stop, num_source_frames))
        if not window:
            end = duration if self.end is None else self.end
            raise FrameRequestError(f"no frame lies between start={start} s and end={end} s")
        return window

    def count(self, available: int, source_fps: float) -> int:
        """Number of frames to take from a window of ``available`` frames."""
        if self.num_frames is not None:
            count = self.num_frames
        elif self.fps is not None:
            count = min(available, max(1, math.floor(available * self.fps / source_fps + 0.5)))
        else:
            count = available
        if self.max_frames is not None:
            count = min(count, self.max_frames)
        if count > available:
            raise FrameRequestError(f"requested {count} frames but only {available} are available{self._where()}")
        return count

    def indices(self, num_source_frames: int, source_fps: float, duration: float) -> np.ndarray:
        """Source frame indices to decode, int64 [K], increasing."""
        window = self.window(num_source_frames, source_fps, duration)
        return window.start + uniform_indices(len(window), self.count(len(window), source_fps)).numpy()

    def _where(self) -> str:
        if self.start is None and self.end is None:
            return ""
        return f" between start={self.start or 0.0} s and end={self.end} s"


def check_positive_int(name: str, value: int | None) -> None:
    """Raise FrameRequestError unless ``value`` is None or an integer > 0."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0):
        raise FrameRequestError(f"{name} must be a positive integer, got {value!r}")


def seek_plan(indices: np.ndarray, seek: bool | None, min_gap: int = SEEK_MIN_GAP) -> np.ndarray:
    """Whether to seek before reading each wanted frame, bool [K].

    ``seek=True`` seeks before every frame, ``False`` never (decode forward from the first frame),
    ``None`` seeks when the frame lies more than ``min_gap`` frames after the previous wanted one
    (or after the start of the stream for the first one).
    """
    if seek is not None:
        return np.full(len(indices), seek)
    return np.diff(indices, prepend=-1) > min_gap


def output_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(height, width) with the longer side at most ``max_side``, aspect kept, never upscaled."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))
