"""Near-duplicate frame filter: drop sampled frames that barely differ from the last kept one, before encoding.

A cheap pre-encoder press (pixel distance on downscaled frames, :func:`vidpress.functional.dedup.near_duplicate_keep`)
for long videos with static stretches (lectures, surveillance, screen recordings): the vision encoder and the
LLM only see frames where something changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from vidpress.functional.checks import check_float, check_int
from vidpress.functional.dedup import near_duplicate_keep
from vidpress.functional.uniform import uniform_indices
from vidpress.presses.base import Press

if TYPE_CHECKING:
    from vidpress.video import Video


@dataclass
class DedupFramePress(Press):
    """Frame stage: keep a frame when its downscaled RGB pixels differ from the last kept frame's by > ``threshold``.

    The filter always keeps the first frame (``max_frames`` may then drop it). Like :class:`~vidpress.presses.uniform.UniformFramePress`, the press keeps
    any number of frames: on Qwen-VL (2 frames per temporal unit) the kept frames are paired in order and the
    processor repeats the last one when their count is odd.

    Parameters
    ----------
    threshold : mean absolute pixel difference (0..1 scale) to the last kept frame above which a frame is kept;
        0 drops only exact duplicates (after downscaling).
    size : side of the downscaled frames compared (area average).
    max_gap : when set, a frame is kept anyway after ``max_gap`` consecutive dropped frames.
    max_frames : when set and more frames remain after the filter, that many of them are kept, evenly spaced.
    """

    threshold: float = 0.02
    size: int = 32
    max_gap: int | None = None
    max_frames: int | None = None
    stages: ClassVar[tuple[str, ...]] = ("frame",)

    def __post_init__(self) -> None:
        check_float("threshold", self.threshold, 0.0)
        check_int("size", self.size, 1)
        if self.max_gap is not None:
            check_int("max_gap", self.max_gap, 1)
        if self.max_frames is not None:
            check_int("max_frames", self.max_frames, 1)

    def select_frames(self, video: Video) -> torch.Tensor:
        kept = near_duplicate_keep(video.frames, self.threshold, self.size, self.max_gap)
        if self.max_frames is not None and len(kept) > self.max_frames:
            kept = kept[uniform_indices(len(kept), self.max_frames)]
        return kept
