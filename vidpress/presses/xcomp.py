"""XComp preset: QC-Comp frame selection, then LP-Comp progressive token dropping inside the LLM.

XComp, "One Token per Highly Selective Frame", https://arxiv.org/abs/2604.14149 (ALGORITHMS.md §4-5). The
released system is VideoChat-Flash (whose projector merges each clip to 16 tokens per frame) with QC-Comp
choosing the frames and LP-Comp, after supervised compression tuning, thinning each frame's tokens layer
by layer. On Qwen-VL, prepend :class:`~vidpress.presses.tome.ToMePress` to merge first, or use
``tokens_per_frame=None`` for one LP-Comp frame per temporal unit.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers.cache_utils import Cache

from vidpress.presses.base import Press, PressContext
from vidpress.presses.lpcomp import LPCompPress
from vidpress.presses.qccomp import QCCompPress

if TYPE_CHECKING:
    from vidpress.adapters import EncodedVideo, LLMInputs
    from vidpress.video import Video


@dataclass
class XCompPress(Press):
    """QC-Comp then LP-Comp as one press (``presses`` holds them; a list of the two is equivalent).

    Parameters
    ----------
    n_select, local, min_frames : QC-Comp's frames kept, window-local scoring and selection threshold (see
        :class:`~vidpress.presses.qccomp.QCCompPress`, whose other parameters keep their defaults).
    tokens_per_frame, schedule, keep : LP-Comp's frame size, drop schedule and kept tokens (see
        :class:`~vidpress.presses.lpcomp.LPCompPress`).
    """

    n_select: int = 256
    local: bool = True
    min_frames: int = 0
    tokens_per_frame: int | None = 16
    schedule: str = "round"
    keep: str = "suffix"

    def __post_init__(self) -> None:
        self.presses: list[Press] = [
            QCCompPress(n_select=self.n_select, local=self.local, min_frames=self.min_frames),
            LPCompPress(tokens_per_frame=self.tokens_per_frame, schedule=self.schedule, keep=self.keep),
        ]

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(stage for p in self.presses for stage in p.stages))

    @property
    def chunk_frames(self) -> int | None:
        return min((p.chunk_frames for p in self.presses if p.chunk_frames), default=None)

    def select_frames(self, video: Video) -> torch.Tensor | None:
        kept = None
        for press in self.presses:
            index = press.select_frames(video)
            if index is not None:
                video = video.select(index)
                kept = index if kept is None else kept[index]
        return kept

    def encoder_hooks(self, context: PressContext) -> contextlib.AbstractContextManager:
        return _all_entered(press.encoder_hooks(context) for press in self.presses)

    def select_tokens(self, encoded: EncodedVideo, keep: torch.Tensor, context: PressContext) -> torch.Tensor:
        for press in self.presses:
            keep = press.select_tokens(encoded, keep, context)
        return keep

    def prefill_hooks(self, context: PressContext) -> contextlib.AbstractContextManager:
        return _all_entered(press.prefill_hooks(context) for press in self.presses)

    def before_segment(self, segment: LLMInputs, context: PressContext, *, is_video: bool) -> None:
        for press in self.presses:
            press.before_segment(segment, context, is_video=is_video)

    def after_segment(self, segment: LLMInputs, cache: Cache, context: PressContext, *, is_video: bool) -> None:
        for press in self.presses:
            press.after_segment(segment, cache, context, is_video=is_video)


@contextlib.contextmanager
def _all_entered(managers):
    with contextlib.ExitStack() as stack:
        for manager in managers:
            stack.enter_context(manager)
        yield
