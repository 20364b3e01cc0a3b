"""Load sampled frames of a video file, an image folder or a frame list.

Frames that fail to decode (corrupt data, or a stream that ends before the frame count in its
header, e.g. a truncated file) are left out: their source indices are listed in
``metadata["skipped_frames"]`` and a :class:`SkippedFramesWarning` is issued. ``strict=True`` raises
:class:`VideoDecodeError` naming the first such frame instead. When no requested frame decodes,
:class:`VideoDecodeError` is raised: a loader never returns an empty Video.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from vidpress.video.decode import Decoded, Decoder, open_decoder
from vidpress.video.sampling import Sampling, check_positive_int, output_size, seek_plan
from vidpress.video.types import FrameRequestError, SkippedFramesWarning, Video, VideoDecodeError

Source = str | os.PathLike[str] | Sequence[Any] | np.ndarray
Progress = Callable[[int], None]


def load_video(
    source: Source,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    max_side: int | None = None,
    backend: str | None = None,
    source_fps: float | None = None,
    seek: bool | None = None,
    strict: bool = False,
    progress: Progress | None = None,
) -> Video:
    """Decode sampled frames of ``source`` into one :class:`Video`.

    Parameters
    ----------
    source : video file path, image folder path (natural name order), or a sequence of frames
        (PIL images, uint8 arrays or tensors [H, W, 3] / [3, H, W]; a [T, H, W, 3] array works too).
    num_frames : take this many frames, uniformly spaced over the window (see ``vidpress.video.sampling``).
    fps : take frames at this rate instead; at most ``max_frames`` (else ``max_frames`` uniform frames).
    max_frames : cap on the number of frames in every mode; with neither num_frames nor fps, every
        frame of the window is taken up to this cap.
    start, end : window in seconds, ``[start, end)``; ``end`` past the duration is clamped.
    max_side : resize each frame while decoding so its longer side is at most this (never upscales).
    backend : "pyav" or "opencv" for video files; None uses PyAV if importable, else OpenCV.
        Ignored for image folders and frame lists.
    source_fps : frame rate of an image folder or frame list (default 1.0).
    seek : True seeks to the keyframe before every frame, False decodes forward from the start,
        None (default) seeks across gaps longer than ``sampling.SEEK_MIN_GAP`` frames.
    strict : raise instead of skipping frames that fail to decode.
    progress : called with the number of sampled frames done so far, after each one.

    Returns
    -------
    Video with frames uint8 [T, H, W, 3], timestamps float64 [T], frame_indices int64 [T].
    """
    sampling = Sampling(num_frames, fps, max_frames, start, end)
    check_positive_int("max_side", max_side)
    with open_decoder(source, backend, _checked_fps(source_fps)) as decoder:
        indices = _indices(decoder, sampling)
        return next(_videos(decoder, indices, len(indices), max_side, seek, strict, progress))


def iter_video_chunks(
    source: Source,
    chunk_frames: int,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    max_side: int | None = None,
    backend: str | None = None,
    source_fps: float | None = None,
    seek: bool | None = None,
    strict: bool = False,
    progress: Progress | None = None,
) -> Iterator[Video]:
    """Decode sampled frames of ``source`` incrementally, as Videos of at most ``chunk_frames`` frames.

    Takes the same keywords as :func:`load_video`; concatenating the chunks gives its result. The
    source is opened and the request checked before this returns, so errors about the file or the
    arguments raise here rather than at the first iteration. Each chunk lists in
    ``metadata["skipped_frames"]`` the frames that failed since the previous chunk.
    """
    check_positive_int("chunk_frames", chunk_frames)
    sampling = Sampling(num_frames, fps, max_frames, start, end)
    check_positive_int("max_side", max_side)
    decoder = open_decoder(source, backend, _checked_fps(source_fps))
    try:
        indices = _indices(decoder, sampling)
    except BaseException:
        decoder.close()
        raise
    return _closing(decoder, _videos(decoder, indices, chunk_frames, max_side, seek, strict, progress))


def _checked_fps(source_fps: float | None) -> float | None:
    if source_fps is not None and not (math.isfinite(source_fps) and source_fps > 0):
        raise FrameRequestError(f"source_fps must be a positive number, got {source_fps!r}")
    return source_fps


def _indices(decoder: Decoder, sampling: Sampling) -> np.ndarray:
    info = decoder.info
    try:
        return sampling.indices(info.num_frames, info.fps, info.duration)
    except FrameRequestError as error:
        raise FrameRequestError(f"{decoder.source}: {error}") from None


def _closing(decoder: Decoder, videos: Iterator[Video]) -> Iterator[Video]:
    with decoder:
        yield from videos


def _videos(
    decoder: Decoder,
    indices: np.ndarray,
    chunk_frames: int,
    max_side: int | None,
    seek: bool | None,
    strict: bool,
    progress: Progress | None,
) -> Iterator[Video]:
    """Read ``indices`` and group the decoded frames into Videos of at most ``chunk_frames`` frames."""
    size = output_size(decoder.info.height, decoder.info.width, max_side)
    chunk: list[Decoded] = []
    skipped: list[int] = []
    for done, item in enumerate(decoder.read(indices, size, seek_plan(indices, seek)), start=1):
        if item.frame is None:
            if strict:
                raise VideoDecodeError(f"{decoder.source}: frame {item.index} could not be decoded")
            skipped.append(item.index)
        else:
            if len(chunk) == chunk_frames:
                yield _video(decoder, chunk, skipped)
                chunk, skipped = [], []
            chunk.append(item)
        if progress is not None:
            progress(done)
    if not chunk:
        raise VideoDecodeError(
            f"{decoder.source}: none of the {len(indices)} requested frames could be decoded "
            f"(frames {_preview(skipped)})"
        )
    yield _video(decoder, chunk, skipped)


def _video(decoder: Decoder, items: list[Decoded], skipped: list[int]) -> Video:
    if skipped:
        warnings.warn(
            f"{decoder.source}: {len(skipped)} frame(s) failed to decode and were left out: {_preview(skipped)}",
            SkippedFramesWarning,
            stacklevel=4,
        )
    info = decoder.info
    return Video(
        frames=np.stack([item.frame for item in items]),
        timestamps=np.array([item.time for item in items], dtype=np.float64),
        frame_indices=np.array([item.index for item in items], dtype=np.int64),
        fps=info.fps,
        duration=info.duration,
        path=decoder.path,
        metadata={
            "backend": decoder.name,
            "skipped_frames": skipped,
            "source_width": info.width,
            "source_height": info.height,
            "num_source_frames": info.num_frames,
            "frame_count_estimated": info.frame_count_estimated,
            "seeks": decoder.seeks,
            **info.details,
        },
    )


def _preview(indices: list[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return shown + (f", ... ({len(indices)} in all)" if len(indices) > limit else "")
