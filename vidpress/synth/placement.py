"""Where needle events go: depth <-> start frame, ordered non-overlapping placement, video quarters."""

from __future__ import annotations

import numpy as np

MIN_GAP = 8  # haystack frames between two needle events, so each event stays a separate event


def depth_to_start(depth: float, length: int, num_frames: int) -> int:
    """First frame of a ``length``-frame event at ``depth`` (0: starts the video, 1: ends it)."""
    if not 0 <= depth <= 1:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    return round(depth * (num_frames - length))


def start_to_depth(start: int, length: int, num_frames: int) -> float:
    """Inverse of depth_to_start."""
    return start / (num_frames - length) if num_frames > length else 0.0


def place_events(lengths: list[int], num_frames: int, rng: np.random.Generator, first_start: int | None = None) -> list[int]:
    """Start frames for events of ``lengths``, in that order, at least MIN_GAP frames apart.

    With ``first_start`` the first event is pinned there and the others are spread at random after it;
    otherwise all are uniformly random. Raises ValueError when they do not fit.
    """
    if first_start is not None:
        if len(lengths) == 1:
            return [first_start]
        rest_begin = first_start + lengths[0] + MIN_GAP
        return [first_start] + [rest_begin + s for s in place_events(lengths[1:], num_frames - rest_begin, rng)]
    slack = num_frames - sum(lengths) - MIN_GAP * (len(lengths) - 1)
    if slack < 0:
        raise ValueError(f"needle events of {lengths} frames, {MIN_GAP} apart, do not fit in {max(num_frames, 0)} frames")
    offsets = np.sort(rng.integers(0, slack + 1, size=len(lengths)))
    return [int(offsets[i]) + sum(lengths[:i]) + MIN_GAP * i for i in range(len(lengths))]


def quarter_of(start: int, length: int, num_frames: int) -> int:
    """Which quarter (0..3) of the video holds the middle of an event."""
    return min(3, int(4 * (start + length / 2) / num_frames))


def start_in_quarter(quarter: int, length: int, num_frames: int, rng: np.random.Generator) -> int:
    """A random start that keeps a ``length``-frame event wholly inside ``quarter`` (0..3)."""
    lo = -(-quarter * num_frames // 4)  # ceil
    hi = (quarter + 1) * num_frames // 4 - length
    if hi < lo:
        raise ValueError(f"a {length}-frame event does not fit in a quarter of {num_frames} frames")
    return int(rng.integers(lo, hi + 1))
