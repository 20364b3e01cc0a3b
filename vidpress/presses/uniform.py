"""Uniform frame budget: keep k of the sampled frames, evenly spaced (the baseline every method is compared to)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vidpress.functional.uniform import uniform_indices
from vidpress.presses.base import Press


@dataclass
class UniformFramePress(Press):
    """Keep ``num_frames`` of the sampled frames, evenly spaced, before the vision encoder.

    Parameters
    ----------
    num_frames : frames kept (all are kept when the video has fewer).
    """

    num_frames: int = 16
    stages: ClassVar[tuple[str, ...]] = ("frame",)

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")

    def select_frames(self, video) -> torch.Tensor:
        return uniform_indices(len(video), self.num_frames)
