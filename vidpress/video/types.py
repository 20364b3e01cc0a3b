"""The ``Video`` container returned by the loaders, and the video error types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


class VideoError(Exception):
    """Base class of every error raised while loading a video."""


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The file or folder does not exist."""


class EmptyVideoError(VideoError):
    """The source holds no frames (0-byte file, zero-frame stream, empty folder or list)."""


class NoVideoStreamError(VideoError):
    """The file opens but has no video stream (audio only, a single still image, ...)."""


class VideoDecodeError(VideoError):
    """The file cannot be opened or decoded (not a video, corrupt header, no frame decodes)."""


class FrameRequestError(VideoError, ValueError):
    """Invalid sampling arguments, or a request for frames that the video does not have."""


class SkippedFramesWarning(UserWarning):
    """Some sampled frames failed to decode and were left out (see ``metadata["skipped_frames"]``)."""


@dataclass
class Video:
    """Decoded, sampled frames of a video.

    Attributes
    ----------
    frames : np.ndarray
        uint8 [T, H, W, 3], RGB.
    timestamps : np.ndarray
        float64 [T], presentation time of each frame in seconds from the first frame of the source.
    frame_indices : np.ndarray
        int64 [T], index of each frame in the source (0 = first frame), increasing.
    fps : float
        Frame rate of the source.
    duration : float
        Duration of the whole source in seconds.
    path : str or None
        Source file or folder, None for in-memory frames.
    metadata : dict
        ``backend``, ``skipped_frames`` (source indices that failed to decode), ``source_width``,
        ``source_height``, ``num_source_frames``, ``frame_count_estimated``, ``seeks``, plus
        backend details (``codec``, ``container``).
    """

    frames: np.ndarray
    timestamps: np.ndarray
    frame_indices: np.ndarray
    fps: float
    duration: float
    path: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, H, W, 3], got {self.frames.dtype} {self.frames.shape}")
        if not len(self.frames) == len(self.timestamps) == len(self.frame_indices):
            raise ValueError(
                f"frames, timestamps and frame_indices differ in length: "
                f"{len(self.frames)}, {len(self.timestamps)}, {len(self.frame_indices)}"
            )

    @classmethod
    def from_array(cls, frames: np.ndarray, fps: float) -> Video:
        """Every frame of an in-memory clip, uint8 [T, H, W, 3] at ``fps`` (frame i at i / fps seconds)."""
        count = len(frames)
        return cls(frames=frames, timestamps=np.arange(count) / fps, frame_indices=np.arange(count), fps=fps,
                   duration=count / fps)

    def __len__(self) -> int:
        return len(self.frames)

    def select(self, indices: Sequence[int] | np.ndarray) -> Video:
        """Return a new Video holding the frames at ``indices``.

        Parameters
        ----------
        indices : sequence of int or bool mask [T]
            Positions in this Video (not source frame indices).
        """
        positions = np.asarray(indices)
        if positions.dtype == bool:
            positions = np.flatnonzero(positions)
        positions = positions.astype(np.int64)
        return replace(
            self,
            frames=self.frames[positions],
            timestamps=self.timestamps[positions],
            frame_indices=self.frame_indices[positions],
            metadata=dict(self.metadata),
        )
