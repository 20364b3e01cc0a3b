"""A synthetic video: a scene plan with needle events pasted over it, rendered lazily frame by frame."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vidpress.synth.objects import NeedleObject, render_needle
from vidpress.synth.scenes import Scene


@dataclass(frozen=True)
class NeedleEvent:
    """``object`` shown on frames [start, start + length)."""

    object: NeedleObject
    start: int
    length: int

    @property
    def frames(self) -> range:
        return range(self.start, self.start + self.length)


@dataclass(frozen=True)
class SynthVideo:
    """``num_frames`` frames of ``height`` x ``width``: the scenes, with each needle event replacing its frames."""

    num_frames: int
    height: int
    width: int
    scenes: tuple[Scene, ...]
    needles: tuple[NeedleEvent, ...]

    def __post_init__(self) -> None:
        covered = [t for event in self.needles for t in event.frames]
        if len(set(covered)) != len(covered) or any(not 0 <= t < self.num_frames for t in covered):
            raise ValueError("needle events must lie inside the video and not overlap")

    @property
    def cuts(self) -> list[int]:
        """Frame indices that start a new scene (the first frame excluded)."""
        return [scene.start for scene in self.scenes[1:]]

    @property
    def needle_frames(self) -> list[int]:
        """Sorted indices of every frame that shows a needle."""
        return sorted(t for event in self.needles for t in event.frames)

    def _needle_at(self, t: int) -> NeedleEvent | None:
        return next((event for event in self.needles if t in event.frames), None)

    def frame(self, t: int) -> np.ndarray:
        """uint8 [H, W, 3]: frame ``t``, rendered on its own."""
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} outside [0, {self.num_frames})")
        event = self._needle_at(t)
        if event is not None:
            return render_needle(event.object, self.height, self.width)
        scene = self.scenes[bisect.bisect_right([s.start for s in self.scenes], t) - 1]
        return scene.render(t, self.height, self.width)

    def frames(self) -> Iterator[np.ndarray]:
        """Yield the uint8 [H, W, 3] frames in order, holding only one scene background at a time."""
        for scene in self.scenes:
            background = scene.background.render(self.height, self.width)
            for t in range(scene.start, scene.end):
                event = self._needle_at(t)
                if event is not None:
                    yield render_needle(event.object, self.height, self.width)
                else:
                    yield scene.render(t, self.height, self.width, background)

    def array(self) -> np.ndarray:
        """uint8 [T, H, W, 3]: every frame at once."""
        out = np.empty((self.num_frames, self.height, self.width, 3), dtype=np.uint8)
        for t, frame in enumerate(self.frames()):
            out[t] = frame
        return out
