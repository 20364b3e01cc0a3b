"""ReTaKe as released: DPSelect pivots feeding PivotKV, as one preset.

ReTaKe, "Reducing Temporal and Knowledge Redundancy for Long Video Understanding", arXiv:2412.20504
(https://arxiv.org/abs/2412.20504); reference configs of github.com/SCZwangxiao/video-ReTaKe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vidpress.presses.base import CompositePress, Press
from vidpress.presses.dpselect import DPSelectPress
from vidpress.presses.pivotkv import PivotKVPress


@dataclass(kw_only=True)  # keyword-only: the inherited chunk_frames would come first
class ReTaKePress(CompositePress):
    """The reference ReTaKe configuration: :class:`DPSelectPress` then :class:`PivotKVPress` with its pivots.

    The same as ``[DPSelectPress(keep_ratio, sync), PivotKVPress(ratio=ratio, max_input_length=max_input_length,
    chunk_frames=chunk_frames, hard_pivots=hard_pivots, reforge=reforge)]``; the defaults are the released
    Qwen2-VL configs (async DPSelect at ratio 1.0, which only marks pivots, and a dynamic PivotKV ratio for
    32000 tokens); ``reforge=True`` is the reference's LVBench / VideoMME setting.

    Parameters
    ----------
    keep_ratio, sync : see :class:`~vidpress.presses.dpselect.DPSelectPress`.
    ratio, max_input_length, chunk_frames, hard_pivots, reforge : see :class:`~vidpress.presses.pivotkv.PivotKVPress`.
    """

    keep_ratio: float = 1.0
    sync: bool = False
    ratio: float | None = None
    max_input_length: int = 32000
    chunk_frames: int = 32
    hard_pivots: bool = False
    reforge: bool = False
    part_types: ClassVar[tuple[type[Press], ...]] = (DPSelectPress, PivotKVPress)

    def parts(self) -> list[Press]:
        return [
            DPSelectPress(keep_ratio=self.keep_ratio, sync=self.sync),
            PivotKVPress(
                ratio=self.ratio, max_input_length=self.max_input_length, chunk_frames=self.chunk_frames,
                hard_pivots=self.hard_pivots, reforge=self.reforge,
            ),
        ]
