"""ReTaKe as released: DPSelect pivots feeding PivotKV, as one press.

ReTaKe, "Reducing Temporal and Knowledge Redundancy for Long Video Understanding", arXiv:2412.20504
(https://arxiv.org/abs/2412.20504); reference configs of github.com/SCZwangxiao/video-ReTaKe.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar

import torch
from transformers.cache_utils import Cache

from vidpress.adapters import EncodedVideo, LLMInputs
from vidpress.presses.base import Press, PressContext
from vidpress.presses.dpselect import DPSelectPress
from vidpress.presses.pivotkv import PivotKVPress


@dataclass(kw_only=True)  # keyword-only: the inherited chunk_frames would come first
class ReTaKePress(Press):
    """The reference ReTaKe configuration: :class:`DPSelectPress` then :class:`PivotKVPress` with its pivots.

    Equivalent to ``[DPSelectPress(keep_ratio, sync), PivotKVPress(ratio, max_input_length, chunk_frames,
    hard_pivots=hard_pivots)]``; the defaults are the released Qwen2-VL configs (async DPSelect at ratio 1.0,
    which only marks pivots, and a dynamic PivotKV ratio for 32000 tokens), without position reforge.

    Parameters
    ----------
    keep_ratio, sync : see :class:`~vidpress.presses.dpselect.DPSelectPress`.
    ratio, max_input_length, chunk_frames, hard_pivots : see :class:`~vidpress.presses.pivotkv.PivotKVPress`.
    """

    keep_ratio: float = 1.0
    sync: bool = False
    ratio: float | None = None
    max_input_length: int = 32000
    chunk_frames: int = 32
    hard_pivots: bool = False
    stages: ClassVar[tuple[str, ...]] = ("token", "kv")

    def __post_init__(self) -> None:
        self._dpselect = DPSelectPress(keep_ratio=self.keep_ratio, sync=self.sync)
        self._pivotkv = PivotKVPress(
            ratio=self.ratio, max_input_length=self.max_input_length, chunk_frames=self.chunk_frames,
            hard_pivots=self.hard_pivots,
        )

    def select_tokens(self, encoded: EncodedVideo, keep: torch.Tensor, context: PressContext) -> torch.Tensor:
        return self._dpselect.select_tokens(encoded, keep, context)

    def prefill_hooks(self, context: PressContext) -> contextlib.AbstractContextManager:
        return self._pivotkv.prefill_hooks(context)

    def before_segment(self, segment: LLMInputs, context: PressContext, *, is_video: bool) -> None:
        self._pivotkv.before_segment(segment, context, is_video=is_video)

    def after_segment(self, segment: LLMInputs, cache: Cache, context: PressContext, *, is_video: bool) -> None:
        self._pivotkv.after_segment(segment, cache, context, is_video=is_video)
