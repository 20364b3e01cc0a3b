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
from typing import TYPE_CHECKING, Callable, ClassVar

import torch
from transformers.cache_utils import Cache

if TYPE_CHECKING:
    from transformers import BatchFeature

    from vidpress.adapters import EncodedVideo, LLMInputs, VideoAdapter
    from vidpress.video import Video


@dataclass
class PressContext:
    """What a press may read while it runs: the adapter, the question and a dict for its statistics.

    ``pivot_mask`` [T', N] bool marks the visual tokens a token-stage press chose as pivots (DPSelect's peaks),
    for a later kv-stage press of the same list to protect (PivotKV); None when no press set it.

    ``position_shift`` [P] long, set by a press in ``before_segment`` (PivotKV's position reforge): added to
    every axis of the positions of each segment prefilled from then on and of the decoded tokens; None (the
    default) leaves the positions exactly as built.

    ``renumber_positions(prompt, keep [T', N]) -> [P, L]``, set by a token-stage press (DPSelect's
    ``contiguous_positions``): the full positions a prompt's LLM inputs are built from (``prompt`` the
    processor's output), given the final keep mask; None keeps the model's own positions of the full prompt.
    """

    adapter: VideoAdapter
    question: str
    encoded: EncodedVideo | None = None
    inputs: LLMInputs | None = None
    stats: dict = field(default_factory=dict)
    pivot_mask: torch.Tensor | None = None
    position_shift: torch.Tensor | None = None
    renumber_positions: Callable[[BatchFeature, torch.Tensor], torch.Tensor] | None = None


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


@dataclass
class CompositePress(Press):
    """A preset: a fixed list of presses built from hyper-parameters of its own (the dataclass fields).

    :func:`as_press_list` replaces a composite by its :meth:`parts`, so the pipeline runs every stage of the
    parts itself: a composite forwards no stage method (called on the composite, they keep everything), and a
    stage added to :class:`Press` later reaches the parts unchanged. ``stages`` is the union of the stages of
    ``part_types``, the classes :meth:`parts` returns, in order.
    """

    part_types: ClassVar[tuple[type[Press], ...]] = ()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.stages = tuple(dict.fromkeys(stage for part in cls.part_types for stage in part.stages))

    def __post_init__(self) -> None:
        self.parts()  # each part validates its own hyper-parameters

    def parts(self) -> list[Press]:
        """The presses this preset stands for, in pipeline order, built from its current fields."""
        raise NotImplementedError


def as_press_list(press: Press | list[Press] | tuple[Press, ...] | None) -> list[Press]:
    """Normalise ``None``, one press, or a sequence of presses to a flat list, each composite replaced by its parts."""
    if press is None:
        return []
    presses = []
    for p in list(press) if isinstance(press, (list, tuple)) else [press]:
        if not isinstance(p, Press):
            raise TypeError(f"expected a vidpress Press, got {type(p).__name__}")
        presses.extend(as_press_list(p.parts()) if isinstance(p, CompositePress) else [p])
    return presses
