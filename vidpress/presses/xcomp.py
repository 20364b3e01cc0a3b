"""XComp preset: QC-Comp frame selection, then LP-Comp progressive token dropping inside the LLM.

XComp, "One Token per Highly Selective Frame", https://arxiv.org/abs/2604.14149 (ALGORITHMS.md §4-5). The
released system is VideoChat-Flash (whose projector merges each clip to 16 tokens per frame) with QC-Comp
choosing the frames and LP-Comp, after supervised compression tuning, thinning each frame's tokens layer
by layer. On Qwen-VL, prepend :class:`~vidpress.presses.tome.ToMePress` to merge first (LP-Comp then groups
each merged clip's tokens by count, as VideoChat-Flash does), or use ``tokens_per_frame=None`` for one LP-Comp
frame per temporal unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vidpress.presses.base import CompositePress, Press
from vidpress.presses.lpcomp import LPCompPress
from vidpress.presses.qccomp import QCCompPress


@dataclass
class XCompPress(CompositePress):
    """QC-Comp then LP-Comp: the same as ``[QCCompPress(n_select, local, min_frames), LPCompPress(...)]``.

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
    schedule: tuple[int, ...] | str = "round"
    keep: str = "suffix"
    part_types: ClassVar[tuple[type[Press], ...]] = (QCCompPress, LPCompPress)

    def parts(self) -> list[Press]:
        return [
            QCCompPress(n_select=self.n_select, local=self.local, min_frames=self.min_frames),
            LPCompPress(tokens_per_frame=self.tokens_per_frame, schedule=self.schedule, keep=self.keep),
        ]
