"""Video preprocessing streamed chunk by chunk, overlapped with the vision encoder.

The model's own processor builds the prompt as usual, but its video processor is run on the first chunk of
frames only (:class:`_FirstChunkVideoProcessor` stands in for it during that call and reports the whole
video's temporal length in the grid). The other chunks go through the same video processor, with the same
arguments, in worker threads (:class:`PixelStream`) while the GPU encodes the chunks before them; the
whole video's pixel values never exist at once.

Exactness: a video processor that resizes, normalises and patchifies frame by frame gives every chunk the
rows the whole video would get, provided each chunk is resized to the whole video's size. Qwen3-VL's size
depends on the number of frames (a pixel budget over the whole video), so the stream is only used when the
video processor's own patch count (``get_num_of_video_patches``) gives the chunks' lengths and the whole
video the same patches per temporal unit; otherwise :func:`stream_processor` returns None and the caller processes
the whole video at once.

The prompt is tokenized in a thread too (:class:`PendingPrompt`): the encoder starts as soon as the first
chunk is processed, and only a read of the prompt's tokens (after the encoder, for the positions) waits for
the rest of the processor's call. The call runs on a shallow copy of the processor holding the stand-in, so
the processor itself is never changed.

Given an ``exact_device`` (a GPU), the chunks after the first are processed there when the first chunk shows
that the video processor keeps the frames' size: without a resize its work is a cast, an affine normalisation
and a reshape, the same float32 values on any device (measured bit for bit on an H200 for Qwen2.5-VL at
448x252). A resize on the GPU moves some pixels (see ``VideoQA(fast_preprocess=...)``), so resized videos
stay on the CPU.
"""

from __future__ import annotations

import copy
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from itertools import islice
from typing import Any, Callable, Iterator

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

PIXELS = "pixel_values_videos"
FIRST_CHUNK_FRAMES = 16
"""Frames of the first chunk, processed before the prompt is returned (later chunks: ``chunk_frames``)."""


class PixelStream:
    """The pixel rows of one video, chunk by chunk: the first chunk ready, the others processed by threads.

    Iterating yields ``[rows, C]`` tensors in video order, each in ``dtype``; at most ``workers`` chunks are
    being processed ahead of the one consumed. A stream is read once.
    """

    def __init__(
        self, first: torch.Tensor, rest: list[np.ndarray], process: Callable[[np.ndarray], torch.Tensor],
        dtype: torch.dtype, workers: int = 2,
    ):
        self.first, self.rest, self.process, self.dtype, self.workers = first, rest, process, dtype, workers
        self.consumed = False

    def __len__(self) -> int:
        """Chunks in the stream."""
        return 1 + len(self.rest)

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.consumed:
            raise RuntimeError("a PixelStream is read once; prepare the video again to encode it again")
        self.consumed = True
        yield self.first.to(self.dtype)
        self.first = None
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="vidpress-preprocess") as pool:
            chunks = iter(self.rest)
            pending: deque[Future] = deque(pool.submit(self.process, c) for c in islice(chunks, self.workers))
            try:
                while pending:
                    pixels = pending.popleft().result().to(self.dtype)
                    pending.extend(pool.submit(self.process, c) for c in islice(chunks, 1))
                    yield pixels
            finally:
                for future in pending:
                    future.cancel()


class PendingPrompt(BatchFeature):
    """The processor's output while a thread still tokenizes the prompt: the ``ready`` keys (the grid and the
    pixel stream) are read at once; any other read waits for the processor's call and then sees its whole output,
    the ready keys (and keys set meanwhile) taking precedence."""

    def __init__(self, ready: dict[str, Any], call: Future):
        self.__dict__.update(_ready=dict(ready), _call=call, skip_tensor_conversion=None)

    @property
    def data(self) -> dict[str, Any]:
        if self._call is not None:
            output, self._call = self._call.result(), None
            self._ready = {**output, **self._ready}
        return self._ready

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        self.__dict__.update(_ready=value, _call=None)

    def __getitem__(self, key: str) -> Any:
        return self._ready[key] if key in self._ready else super().__getitem__(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._ready[key] = value


class _FirstChunkVideoProcessor:
    """Stands in for a processor's video processor during one call: processes the first ``frames`` frames of
    the (single) video and reports the whole video's temporal units in ``video_grid_thw``."""

    def __init__(self, real: Any, frames: int):
        self.real, self.frames = real, frames
        self.kwargs: dict[str, Any] | None = None
        self.output: Future = Future()  # its output, set as soon as the first chunk is processed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def __call__(self, videos, **kwargs) -> BatchFeature:
        (frames,) = videos
        self.kwargs = kwargs
        try:
            out = self.real([frames[: self.frames]], **kwargs)
        except BaseException as error:
            self.output.set_exception(error)
            raise
        grid = out["video_grid_thw"].clone()
        grid[0, 0] = -(-len(frames) // self.real.temporal_patch_size)
        out["video_grid_thw"] = grid
        self.output.set_result(out)
        return out


def _call_with(
    processor: ProcessorMixin, stand_in: _FirstChunkVideoProcessor, text: str, frames: np.ndarray, kwargs: dict
) -> BatchFeature:
    """The processor's call with ``stand_in`` as its video processor (on a shallow copy: the processor is not changed)."""
    local = copy.copy(processor)
    local.video_processor = stand_in
    inputs = local(text=[text], videos=[frames], return_tensors=None, **kwargs)
    # the same tensors as return_tensors="pt", without the tokenizer's own conversion, which walks the prompt's
    # ids in Python (0.3 s of a 147k-token prompt on the H200's host)
    return BatchFeature(dict(inputs), tensor_type="pt")


def _patches_per_unit(
    video_processor: Any, kwargs: dict[str, Any], frames: np.ndarray, chunks: tuple[int, ...]
) -> set[int]:
    """The patches per temporal unit that the video processor's own count gives slices of each length in
    ``chunks`` and the whole video ``frames`` [T, H, W, C]: one value when all are resized to the same size
    (empty when the processor cannot count).

    Asked at whole temporal units only (the ``chunks`` and the whole length rounded down and up to them; the
    size shrinks monotonically with the frame count, so equal sizes at both roundings hold in between); equal
    patches per unit mean equal height and width, which smart resizing moves together.
    """
    count = getattr(video_processor, "get_num_of_video_patches", None)
    if count is None:
        return set()
    height, width = frames.shape[1:3]
    step = video_processor.temporal_patch_size
    lengths = {*chunks, len(frames) // step * step, -(-len(frames) // step) * step}
    return {count(length, height, width, kwargs) * step // length for length in lengths}


def _keeps_size(video_processor: Any, frames: np.ndarray, grid: list[int]) -> bool:
    """Whether the processed ``grid`` [t, h, w] (in patches) covers ``frames`` [T, H, W, C] at their own size."""
    patch = video_processor.patch_size
    return (grid[1] * patch, grid[2] * patch) == tuple(frames.shape[1:3])


def stream_processor(
    processor: ProcessorMixin, text: str, frames: np.ndarray, chunk_frames: int, dtype: torch.dtype,
    workers: int = 2, exact_device: torch.device | None = None, **kwargs,
) -> BatchFeature | None:
    """The processor's output on ``text`` and one video ``frames`` [T, H, W, C], its pixels as a :class:`PixelStream`,
    its prompt still being tokenized by a thread (a :class:`PendingPrompt`).

    ``chunk_frames`` (rounded up to the temporal patch size) frames per chunk, the first chunk at most
    :data:`FIRST_CHUNK_FRAMES` (the prompt waits for it: the encoder starts sooner); ``kwargs`` go to the processor
    as in a whole-video call. Returns None when a chunk's resized size could differ from the whole video's
    (see the module docstring) or the video fits one chunk; everything else equals the whole-video call.
    ``exact_device``: where the later chunks are processed when nothing is resized (module docstring).
    """
    real = processor.video_processor
    step = real.temporal_patch_size
    chunk = -(-chunk_frames // step) * step
    first = min(chunk, -(-FIRST_CHUNK_FRAMES // step) * step)
    if len(frames) <= chunk or len(_patches_per_unit(real, kwargs, frames, (first, chunk))) != 1:
        return None  # (checked again below with the arguments the processor passes on)
    stand_in = _FirstChunkVideoProcessor(real, first)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidpress-prompt")
    call = pool.submit(_call_with, processor, stand_in, text, frames, kwargs)
    pool.shutdown(wait=False)  # its thread ends with the call
    wait([call, stand_in.output], return_when=FIRST_COMPLETED)
    if not stand_in.output.done():
        call.result()  # the processor's own error, if any
        raise RuntimeError(f"{type(processor).__name__} did not call its video processor")
    first_output, video_kwargs = stand_in.output.result(), stand_in.kwargs
    grid = first_output["video_grid_thw"][0].tolist()
    if _patches_per_unit(real, video_kwargs, frames, (first, chunk)) != {grid[1] * grid[2]}:
        call.result()  # the whole-video call will tokenize again: no second tokenizer run meanwhile
        return None
    if exact_device is not None and "device" not in video_kwargs and _keeps_size(real, frames, grid):
        video_kwargs = {**video_kwargs, "device": str(exact_device)}
    rows_per_unit = grid[1] * grid[2]

    def process(part: np.ndarray) -> torch.Tensor:
        """A short last part is padded with its last frame (as the processor pads the last temporal unit)
        to ``chunk`` frames, the size checked above, and its extra rows dropped."""
        units = -(-len(part) // step)
        if len(part) < chunk:
            part = np.concatenate([part, np.repeat(part[-1:], chunk - len(part), axis=0)])
        return real([part], **video_kwargs)[PIXELS][: units * rows_per_unit]

    rest = [frames[start : start + chunk] for start in range(first, len(frames), chunk)]
    stream = PixelStream(first_output[PIXELS], rest, process, dtype, workers)
    return PendingPrompt({"video_grid_thw": first_output["video_grid_thw"], PIXELS: stream}, call)
