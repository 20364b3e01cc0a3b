"""SynthSample: one video with its multiple-choice question; make_sample / make_suite build them from seeds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidpress.synth.placement import start_to_depth
from vidpress.synth.scenes import plan_scenes
from vidpress.synth.tasks import NEEDLE_LENGTH, build_task
from vidpress.synth.templates import LETTERS, format_prompt
from vidpress.synth.video import SynthVideo


@dataclass(frozen=True)
class SynthSample:
    """A question about a synthetic video. Frames are rendered on demand: ``frames()`` streams, ``array()`` stacks."""

    task: str
    question: str
    options: tuple[str, ...]
    answer: str
    video: SynthVideo
    seed: int
    fps: float

    @property
    def num_frames(self) -> int:
        return self.video.num_frames

    @property
    def needle_frames(self) -> list[int]:
        """Sorted indices of every frame that shows a needle."""
        return self.video.needle_frames

    @property
    def depth(self) -> float:
        """Where the first needle event starts, as a fraction of the video (0..1)."""
        first = self.video.needles[0]
        return start_to_depth(first.start, first.length, self.num_frames)

    @property
    def answer_text(self) -> str:
        return self.options[LETTERS.index(self.answer)]

    @property
    def name(self) -> str:
        """A file stem unique for (task, length, depth, seed)."""
        return f"{self.task}_{self.num_frames:05d}f_d{self.depth:.3f}_s{self.seed}"

    def frames(self) -> Iterator[np.ndarray]:
        """Yield uint8 [H, W, 3] frames in order."""
        return self.video.frames()

    def array(self) -> np.ndarray:
        """uint8 [T, H, W, 3]."""
        return self.video.array()

    def record(self, video: str) -> dict[str, Any]:
        """The JSON annotation, with ``video`` the path to the mp4 (relative to the annotation file)."""
        return {
            "video": video,
            "question": self.question,
            "options": list(self.options),
            "answer": self.answer,
            "task": self.task,
            "needle_frames": self.needle_frames,
            "needles": [{"object": e.object.name, "start": e.start, "length": e.length} for e in self.video.needles],
            "depth": self.depth,
            "num_frames": self.num_frames,
            "fps": self.fps,
            "height": self.video.height,
            "width": self.video.width,
            "seed": self.seed,
        }


def make_sample(
    task: str,
    num_frames: int,
    *,
    depth: float | None = None,
    seed: int,
    height: int = 112,
    width: int = 112,
    fps: float = 2.0,
    needle_length: tuple[int, int] = NEEDLE_LENGTH,
) -> SynthSample:
    """A ``task`` question (see vidpress.synth.tasks) on a ``num_frames`` video of ``height`` x ``width`` frames.

    ``depth`` (0..1) places the first needle event, random when None; ``needle_length`` bounds each event's
    frame count. The scenes depend on ``seed`` only (not on the task or resolution), the question on ``seed``
    and ``task``; nothing is rendered until frames are asked for.
    """
    scenes = plan_scenes(num_frames, np.random.default_rng([seed, 0]))
    q = build_task(task, num_frames, np.random.default_rng([seed, 1]), depth=depth, needle_length=needle_length)
    video = SynthVideo(num_frames, height, width, scenes, q.needles)
    return SynthSample(task, q.question, q.options, q.answer, video, seed, fps)


def make_suite(
    tasks: Sequence[str],
    lengths: Sequence[int],
    num_samples: int,
    seed: int,
    *,
    height: int = 112,
    width: int = 112,
    fps: float = 2.0,
) -> list[SynthSample]:
    """``num_samples`` samples per (task, length), random depths, per-sample seeds drawn from ``seed``."""
    seeds = iter(np.random.default_rng(seed).integers(0, 2**31, size=len(tasks) * len(lengths) * num_samples))
    return [
        make_sample(task, length, seed=int(next(seeds)), height=height, width=width, fps=fps)
        for task in tasks
        for length in lengths
        for _ in range(num_samples)
    ]


def prompt(sample: SynthSample) -> str:
    """The question, lettered options and "Answer with the option's letter from the given choices directly."."""
    return format_prompt(sample.question, sample.options)
