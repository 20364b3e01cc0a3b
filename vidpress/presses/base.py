"""The press interface: each compression method is a dataclass acting at one or more stages.

Stages, in pipeline order (see DESIGN.md):

- frame: ``select_frames(video)`` keeps some of the sampled frames before the vision encoder;
- encoder: ``encoder_hooks(context)`` is entered around the vision encoder (modules added to the tower);
- token: ``select_tokens(encoded, keep, context)`` keeps some visual tokens [T', N] after the encoder;
- layer and kv: ``prefill_hooks(context)`` is entered around the LLM prefill (hooks on decoder layers),
  ``before_segment(segment, context)`` and ``after_segment(segment, cache, context)`` run around each
  prefill segment (e.g. to evict the KV entries of a video chunk), and ``chunk_frames`` asks for the video
  to be prefilled in chunks of that many frames.

Presses compose: a list applies stage by stage, each frame or token press seeing what the previous kept.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from transformers.cache_utils import Cache

if TYPE_CHECKING:
    from vidpress.adapters import EncodedVideo, LLMInputs, VideoAdapter
    from vidpress.video import Video


@dataclass
class PressContext:
    """What a press may read while it runs: the adapter, the question and a dict for its statistics.

    ``pivot_mask`` [T', N] bool marks the visual tokens a token-stage press chose as pivots (DPSelect's peaks),
    for a later kv-stage press of the same list to protect (PivotKV); None when no press set it.
    """

    adapter: VideoAdapter
    question: str
    encoded: EncodedVideo | None = None
    inputs: LLMInputs | None = None
    stats: dict = field(default_factory=dict)
    pivot_mask: torch.Tensor | None = None


@dataclass
class Press:
    """Base class: by default a press keeps everything at every stage."""

    stages: ClassVar[tuple[str, ...]] = ()
    chunk_frames: ClassVar[int | None] = None

    def select_frames(self, video: Video) -> torch.Tensor | None:
        """Indices [k] of the frames of ``video`` to keep, sorted; None keeps all."""
        return None

    def encoder_hooks(self, context: PressContext) -> contextlib.AbstractContextManager:
        """A context manager entered around the vision encoder (attach modules to the tower here)."""
        return contextlib.nullcontext()

    def select_tokens(self, encoded: EncodedVideo, keep: torch.Tensor, context: PressContext) -> torch.Tensor:
        """Bool [T', N]: the visual tokens to keep, given ``keep`` [T', N] from the presses before."""
        return keep

    def prefill_hooks(self, context: PressContext) -> contextlib.AbstractContextManager:
        """A context manager entered around the whole prefill (install layer hooks here)."""
        return contextlib.nullcontext()

    def before_segment(self, segment: LLMInputs, context: PressContext, *, is_video: bool) -> None:
        """Called before each prefill segment is run (e.g. to tell layer hooks which segment they see)."""

    def after_segment(self, segment: LLMInputs, cache: Cache, context: PressContext, *, is_video: bool) -> None:
        """Called after each prefill segment (text before the video, each video chunk, the question)."""


def as_press_list(press: Press | list[Press] | tuple[Press, ...] | None) -> list[Press]:
    """Normalise ``None``, one press, or a sequence of presses to a list."""
    if press is None:
        return []
    presses = list(press) if isinstance(press, (list, tuple)) else [press]
    for p in presses:
        if not isinstance(p, Press):
            raise TypeError(f"expected a vidpress Press, got {type(p).__name__}")
    return presses
