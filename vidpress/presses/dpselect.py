"""DPSelect (ReTaKe): keep the visual tokens whose temporal distance to the previous unit peaks; mark pivots.

ReTaKe, "Reducing Temporal and Knowledge Redundancy for Long Video Understanding", arXiv:2412.20504
(https://arxiv.org/abs/2412.20504). The core is :func:`vidpress.functional.dpselect`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vidpress.adapters import EncodedVideo
from vidpress.functional.dpselect import dpselect, dpselect_num_keep
from vidpress.presses.base import Press, PressContext


@dataclass
class DPSelectPress(Press):
    """Token stage: DPSelect on the encoded visual tokens [T', N, D] (T' temporal units: 2 frames for Qwen-VL).

    With ``keep_ratio`` 1.0 (the released ReTaKe configs) nothing is dropped: the press only sets
    ``context.pivot_mask`` [T', N], the peaks that a later :class:`~vidpress.presses.pivotkv.PivotKVPress`
    of the same press list protects. Below 1.0 (the paper's ablation) it keeps ``max(1, round(keep_ratio * T'))``
    time steps: whole units when ``sync``, else per token position its own time steps.

    Kept tokens keep their original positions (the model's own ``get_rope_index`` on the full prompt,
    gathered by the adapter). Visual tokens that an earlier press dropped stay dropped (the selection runs on
    every unit's features and is intersected with what was kept before).

    Parameters
    ----------
    keep_ratio : fraction of the temporal units kept, in (0, 1].
    sync : True scores whole units by their mean distance (frame dropping); False (default, the reference)
        scores each token position on its own.
    contiguous_positions : the reference renumbers the kept frames' temporal positions contiguously. Not
        implemented: it needs positions that the model's position function never produces (DESIGN.md keeps
        positions from ``get_rope_index``), and in async mode the reference re-packs each column's kept time
        steps into dense frames, an order a keep mask cannot express. True raises NotImplementedError.
    """

    keep_ratio: float = 1.0
    sync: bool = False
    contiguous_positions: bool = False
    stages: ClassVar[tuple[str, ...]] = ("token",)

    def __post_init__(self) -> None:
        if not 0.0 < self.keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if self.contiguous_positions:
            raise NotImplementedError(
                "DPSelectPress(contiguous_positions=True) is not implemented: kept tokens keep their original "
                "positions from the model's get_rope_index"
            )

    def select_tokens(self, encoded: EncodedVideo, keep: torch.Tensor, context: PressContext) -> torch.Tensor:
        selected, pivots = self.select(encoded.features)
        context.pivot_mask = pivots & keep
        context.stats["dpselect"] = {
            "units_kept": int((selected & keep).any(1).sum()),
            "pivots": int(context.pivot_mask.sum()),
        }
        return keep & selected

    def select(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept tokens and pivots as bool [T', N] masks over the units of ``features`` [T', N, D]."""
        units, tokens = features.shape[:2]
        index, pivot = dpselect(features, dpselect_num_keep(units, self.keep_ratio), sync=self.sync)
        index, pivot = index.cpu(), pivot.cpu()
        if self.sync:
            index = index.unsqueeze(1).expand(-1, tokens)
        selected = torch.zeros(units, tokens, dtype=torch.bool).scatter_(0, index, True)
        pivots = torch.zeros(units, tokens, dtype=torch.bool).scatter_(0, index, pivot)
        return selected, pivots
