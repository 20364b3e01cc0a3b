"""Decoding backends behind one small interface.

``open_decoder(source)`` returns a :class:`Decoder`: its ``info`` gives fps, frame count, duration and
size, and ``read(indices, size, seek)`` yields one :class:`Decoded` per wanted source index, in order,
with ``frame=None`` for a frame that failed to decode. Backends: PyAV (default), OpenCV (fallback), and
PIL for image folders and in-memory frame lists.

Frame indices in the PyAV backend come from presentation timestamps, ``round((pts - start) * fps)``,
so a frame the decoder drops shows up as missing instead of shifting every later index, and seeking
returns exactly the frames that decoding from the start returns.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from vidpress.video.types import (
    EmptyVideoError,
    FrameRequestError,
    NoVideoStreamError,
    VideoDecodeError,
    VideoError,
    VideoNotFoundError,
)

try:
    import av
except ImportError:  # the OpenCV backend may still be available
    av = None

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

REORDER_SLACK = 16
"""After an error a decoder may emit frames out of order; a wanted frame counts as missing once a
frame this far past it has been decoded (H.264 and HEVC hold at most 16 frames for reordering)."""


@dataclass(frozen=True)
class SourceInfo:
    """What a backend knows about a source before decoding it."""

    fps: float
    num_frames: int
    duration: float
    width: int
    height: int
    frame_count_estimated: bool | None = False  # None: the backend does not say
    details: dict[str, Any] = field(default_factory=dict)


class Decoded(NamedTuple):
    """One wanted frame: its source index, time in seconds, and uint8 [H, W, 3] RGB (None: failed)."""

    index: int
    time: float
    frame: np.ndarray | None


class Decoder(ABC):
    """An open source of frames; use as a context manager."""

    name: str
    info: SourceInfo
    path: str | None = None
    seeks = 0

    @property
    def source(self) -> str:
        """How error messages name the source."""
        return self.path or "frame list"

    @abstractmethod
    def read(self, indices: np.ndarray, size: tuple[int, int], seek: np.ndarray) -> Iterator[Decoded]:
        """Decode the frames at ``indices`` (int64 [K], increasing) resized to ``size`` (height, width).

        ``seek`` (bool [K]) says whether to seek before each frame rather than decode forward to it;
        backends with random access ignore it.
        """

    def close(self) -> None:
        """Release the file handles."""

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _missing(self, index: int) -> Decoded:
        return Decoded(index, index / self.info.fps, None)


class PyAVDecoder(Decoder):
    """Decode with PyAV (FFmpeg); resizes inside the decoder's pixel conversion."""

    name = "pyav"

    def __init__(self, path: str) -> None:
        self.path = path
        self._open()
        try:
            self.info = self._probe()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._container.close()

    def _open(self) -> None:
        """Open the file, positioned at its first packet."""
        try:
            self._container = av.open(self.path)
        except av.FFmpegError as error:
            raise VideoDecodeError(f"{self.path}: cannot open as a video ({error.strerror})") from None
        try:
            self._stream = self._video_stream()
        except BaseException:
            self.close()
            raise
        self._at_start = True

    def _video_stream(self) -> Any:
        container_format = self._container.format.name
        if container_format.endswith("_pipe") or container_format == "image2":
            raise NoVideoStreamError(f"{self.path}: is a still image ({container_format}), not a video")
        if not self._container.streams.video:
            kinds = sorted({stream.type for stream in self._container.streams}) or ["none"]
            raise NoVideoStreamError(f"{self.path}: has no video stream (streams: {', '.join(kinds)})")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        return stream

    def _probe(self) -> SourceInfo:
        stream, container = self._stream, self._container
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self._start = stream.start_time or 0
        self._seconds_per_tick = float(stream.time_base)
        if stream.duration:
            duration = stream.duration * self._seconds_per_tick
        else:
            duration = (container.duration or 0) / av.time_base
        num_frames, estimated = stream.frames, stream.frames <= 0
        if estimated and rate and duration > 0 and self._has_packets():
            num_frames = math.floor(duration * rate + 0.5)
        if num_frames <= 0:
            raise EmptyVideoError(f"{self.path}: the video stream has no frames")
        if not rate or not stream.width or not stream.height:
            raise VideoDecodeError(f"{self.path}: the video stream has no frame rate or no frame size")
        self._fps = float(rate)
        return SourceInfo(
            fps=self._fps,
            num_frames=num_frames,
            duration=duration if duration > 0 else num_frames / self._fps,
            width=stream.width,
            height=stream.height,
            frame_count_estimated=estimated,
            details={"codec": stream.codec_context.name, "container": container.format.name},
        )

    def _has_packets(self) -> bool:
        """Whether the stream holds any data (a header can promise a duration for an empty stream)."""
        self._at_start = False
        try:
            packet = next(self._container.demux(self._stream), None)
        except av.FFmpegError:
            return False
        return packet is not None and packet.size > 0

    def read(self, indices: np.ndarray, size: tuple[int, int], seek: np.ndarray) -> Iterator[Decoded]:
        height, width = size
        wanted = set(indices.tolist())
        ready: dict[int, Decoded] = {}
        frames = self._decode_from(0.0)
        # frontier: highest index decoded since the last seek. Once decoding reaches the end of the
        # data, every later wanted frame has been decoded (it is in ``ready``) or does not exist.
        frontier, ended = -1, False
        for target, seek_first in zip(indices.tolist(), seek.tolist(), strict=True):
            if seek_first and not ended and target not in ready:
                frames, frontier = self._seek(target), -1
            while target not in ready and not ended and frontier < target + REORDER_SLACK:
                item = next(frames, None)
                if item is None:
                    ended = True
                    break
                index, frame = item
                frontier = max(frontier, index)
                if index >= target and index in wanted and index not in ready:
                    time = (frame.pts - self._start) * self._seconds_per_tick
                    array = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
                    ready[index] = Decoded(index, time, array)
            yield ready.pop(target, None) or self._missing(target)

    def _seek(self, target: int) -> Iterator[tuple[int, Any]]:
        """Frames from a keyframe at or before ``target``.

        Some demuxers (MPEG-TS) land after the requested time, or past the end; then seek again,
        1, 2, 4, ... seconds earlier, down to the start of the file.
        """
        self.seeks += 1
        backoff = 0.0
        while True:
            seconds = max(0.0, target / self._fps - backoff)
            frames = self._decode_from(seconds)
            first = next(frames, None)
            if (first is not None and first[0] <= target) or seconds == 0.0:
                return itertools.chain([first] if first else [], frames)
            backoff = max(1.0, 2 * backoff)

    def _decode_from(self, seconds: float) -> Iterator[tuple[int, Any]]:
        """Decoded frames from the keyframe before ``seconds``; from the first packet for 0."""
        if seconds == 0.0:
            if not self._at_start:  # reopen: seeking to the start is not exact in every container
                self.close()
                self._open()
        else:
            # if seeking fails, decode on from here: indices come from timestamps, so none is mislabelled
            with contextlib.suppress(av.FFmpegError):
                self._container.seek(self._start + int(seconds / self._seconds_per_tick), stream=self._stream)
        self._at_start = False
        return self._decoded()

    def _decoded(self) -> Iterator[tuple[int, Any]]:
        """(source index, av.VideoFrame) from the current position; corrupt packets and frames are dropped."""
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except (StopIteration, av.FFmpegError):  # end of the readable data
                return
            try:
                frames = packet.decode()
            except av.FFmpegError:
                continue
            for frame in frames:
                if frame.pts is not None and not frame.is_corrupt:
                    yield round((frame.pts - self._start) * self._seconds_per_tick * self._fps), frame


class OpenCVDecoder(Decoder):
    """Decode with OpenCV (``cv2.VideoCapture``); frame indices are OpenCV's frame counter."""

    name = "opencv"

    def __init__(self, path: str) -> None:
        import cv2

        self._cv2 = cv2
        self.path = path
        self._capture = cv2.VideoCapture(path)
        try:
            self.info = self._probe()
        except BaseException:
            self._capture.release()
            raise

    def close(self) -> None:
        self._capture.release()

    def _probe(self) -> SourceInfo:
        cv2, capture = self._cv2, self._capture
        if not capture.isOpened():
            raise VideoDecodeError(f"{self.path}: OpenCV cannot open it as a video (not a video, or no video stream)")
        fps, num_frames = capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if num_frames == 0:
            raise EmptyVideoError(f"{self.path}: the video stream has no frames")
        if num_frames < 0 or fps <= 0 or width <= 0 or height <= 0:
            raise VideoDecodeError(f"{self.path}: OpenCV finds no frame count, frame rate or size; not a video")
        return SourceInfo(fps, num_frames, num_frames / fps, width, height, frame_count_estimated=None)

    def read(self, indices: np.ndarray, size: tuple[int, int], seek: np.ndarray) -> Iterator[Decoded]:
        cv2, capture = self._cv2, self._capture
        position: int | None = 0  # index of the frame the next grab returns; None after a failure
        for target, seek_first in zip(indices.tolist(), seek.tolist(), strict=True):
            if seek_first or position is None:
                capture.set(cv2.CAP_PROP_POS_FRAMES, target)
                self.seeks += 1
                position = target
            while position < target and capture.grab():
                position += 1
            ok, image = capture.read() if position == target else (False, None)
            if not ok:
                position = None
                yield self._missing(target)
                continue
            position += 1
            yield Decoded(target, capture.get(cv2.CAP_PROP_POS_MSEC) / 1000, self._convert(image, size))

    def _convert(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if image.shape[:2] != size:
            image = self._cv2.resize(image, size[::-1], interpolation=self._cv2.INTER_AREA)
        return self._cv2.cvtColor(image, self._cv2.COLOR_BGR2RGB)


class _ImageSequenceDecoder(Decoder):
    """Frames that are separate images, shown at ``fps``; every frame must have the first one's size."""

    name = "images"

    def __init__(self, num_frames: int, fps: float, first_size: tuple[int, int]) -> None:
        if num_frames == 0:
            raise EmptyVideoError(f"{self.source}: is empty")
        width, height = first_size
        self.info = SourceInfo(fps, num_frames, num_frames / fps, width, height)

    @abstractmethod
    def _load(self, index: int, size: tuple[int, int]) -> np.ndarray:
        """Frame ``index`` as uint8 [H, W, 3] RGB of ``size``; OSError if the image is unreadable."""

    def read(self, indices: np.ndarray, size: tuple[int, int], seek: np.ndarray) -> Iterator[Decoded]:
        for index in indices.tolist():
            try:
                yield Decoded(index, index / self.info.fps, self._load(index, size))
            except OSError:
                yield self._missing(index)

    def _check_size(self, image: Image.Image, index: int) -> None:
        if image.size != (self.info.width, self.info.height):
            raise VideoDecodeError(
                f"{self.source}: frame {index} is {image.width}x{image.height}, "
                f"the first frame is {self.info.width}x{self.info.height}"
            )


def _resize(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """``image`` as uint8 [H, W, 3] RGB of ``size`` (height, width)."""
    image = image.convert("RGB")
    if image.size != size[::-1]:
        image = image.resize(size[::-1], Image.Resampling.BOX)
    return np.asarray(image)


class ImageFolderDecoder(_ImageSequenceDecoder):
    """Image files of a folder in natural name order (``2.png`` before ``10.png``)."""

    def __init__(self, folder: Path, fps: float) -> None:
        self.path = str(folder)
        self._files = sorted(
            (file for file in folder.iterdir() if file.suffix.lower() in IMAGE_EXTENSIONS and file.is_file()),
            key=lambda file: natural_key(file.name),
        )
        if not self._files:
            raise EmptyVideoError(f"{folder}: holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        try:
            with Image.open(self._files[0]) as image:
                first_size = image.size
        except OSError as error:
            raise VideoDecodeError(f"{self._files[0]}: cannot read the first frame ({error})") from None
        super().__init__(len(self._files), fps, first_size)

    def _load(self, index: int, size: tuple[int, int]) -> np.ndarray:
        with Image.open(self._files[index]) as image:
            self._check_size(image, index)
            image.draft("RGB", size[::-1])  # JPEG: decode at a reduced scale
            return _resize(image, size)


class FrameListDecoder(_ImageSequenceDecoder):
    """In-memory frames: PIL images, uint8 arrays or tensors of shape [H, W, 3] or [3, H, W]."""

    def __init__(self, frames: Sequence[Any], fps: float) -> None:
        self._frames = list(frames)
        super().__init__(len(self._frames), fps, self._image(0).size if self._frames else (0, 0))

    def _image(self, index: int) -> Image.Image:
        item = self._frames[index]
        if isinstance(item, Image.Image):
            return item
        array = np.asarray(item.detach().cpu() if hasattr(item, "detach") else item)
        if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
            array = array.transpose(1, 2, 0)
        if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise VideoDecodeError(
                f"frame list: item {index} is {array.dtype} {array.shape}; expected uint8 [H, W, 3] or [3, H, W]"
            )
        return Image.fromarray(np.ascontiguousarray(array))

    def _load(self, index: int, size: tuple[int, int]) -> np.ndarray:
        image = self._image(index)
        self._check_size(image, index)
        return _resize(image, size)


def natural_key(name: str) -> list[str | int]:
    """Sort key ordering the digit runs of ``name`` by value: ``frame2`` < ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def available_backends() -> list[str]:
    """Video file backends that can be imported, preferred first."""
    found = {"pyav": av is not None, "opencv": importlib.util.find_spec("cv2") is not None}
    return [name for name, ok in found.items() if ok]


def open_decoder(
    source: str | os.PathLike[str] | Sequence[Any], backend: str | None = None, source_fps: float | None = None
) -> Decoder:
    """Open a video file, an image folder or a frame list.

    Parameters
    ----------
    source : path of a video file or image folder, or a sequence of frames
    backend : "pyav" or "opencv" for video files; None picks the first importable one
    source_fps : frame rate of an image folder or frame list (default 1.0); not for video files
    """
    if not isinstance(source, (str, os.PathLike)):
        return FrameListDecoder(source, source_fps or 1.0)
    path = Path(source)
    if path.is_dir():
        return ImageFolderDecoder(path, source_fps or 1.0)
    if source_fps is not None:
        raise FrameRequestError(f"{path}: source_fps applies to image folders and frame lists, not video files")
    if not path.exists():
        raise VideoNotFoundError(f"{path}: no such file or folder")
    if path.stat().st_size == 0:
        raise EmptyVideoError(f"{path}: the file is empty (0 bytes)")
    return _backend(backend)(str(path))


def _backend(name: str | None) -> type[Decoder]:
    classes = {"pyav": PyAVDecoder, "opencv": OpenCVDecoder}
    packages = {"pyav": "av", "opencv": "opencv-python-headless"}
    if name is not None and name not in classes:
        raise ValueError(f"unknown backend {name!r}; choose from {sorted(classes)}")
    available = available_backends()
    if name is None and not available:
        raise VideoError("no video backend: pip install av (or opencv-python-headless)")
    if name is not None and name not in available:
        raise VideoError(f"backend {name!r} is not installed: pip install {packages[name]}")
    return classes[name or available[0]]
