"""DPSelect (ReTaKe): keep the visual tokens whose temporal distance to the previous unit peaks; mark pivots.

ReTaKe, "Reducing Temporal and Knowledge Redundancy for Long Video Understanding", arXiv:2412.20504
(https://arxiv.org/abs/2412.20504). The core is :func:`vidpress.functional.dpselect`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
from transformers import BatchFeature

from vidpress.adapters import EncodedVideo, VideoAdapter
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
    gathered by the adapter) unless ``contiguous_positions``. Visual tokens that an earlier press dropped stay
    dropped (the selection runs on every unit's features and is intersected with what was kept before).

    Parameters
    ----------
    keep_ratio : fraction of the temporal units kept, in (0, 1].
    sync : True scores whole units by their mean distance (frame dropping); False (default, the reference)
        scores each token position on its own.
    contiguous_positions : the reference's form (an option; the default keeps the original positions): the
        positions are the model's own for a video of only the kept units, whose temporal ids thus become those
        of consecutive units (:func:`contiguous_unit_positions`, through ``context.renumber_positions``, applied
        to the final keep mask). Needs ``sync``: in async mode the reference re-packs each column's kept time
        steps into dense frames, an order a keep mask cannot express.
    """

    keep_ratio: float = 1.0
    sync: bool = False
    contiguous_positions: bool = False
    stages: ClassVar[tuple[str, ...]] = ("token",)

    def __post_init__(self) -> None:
        if not 0.0 < self.keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if self.contiguous_positions and not self.sync:
            raise ValueError("contiguous_positions=True needs sync=True (whole temporal units kept or dropped)")

    def select_tokens(self, encoded: EncodedVideo, keep: torch.Tensor, context: PressContext) -> torch.Tensor:
        selected, pivots = self.select(encoded.features)
        context.pivot_mask = pivots & keep
        if self.contiguous_positions:
            context.renumber_positions = functools.partial(
                contiguous_unit_positions, adapter=context.adapter, unit_spans=encoded.unit_spans
            )
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


def contiguous_unit_positions(
    inputs: BatchFeature, keep: torch.Tensor, *, adapter: VideoAdapter, unit_spans: torch.Tensor
) -> torch.Tensor:
    """Full-prompt positions [P, L] as if the video held only its kept temporal units, one after the other.

    The model's own position function (``adapter.full_positions``) runs on the prompt without the dropped
    units' tokens and with the video grid's temporal size set to the number of kept units: the i-th kept unit
    takes the temporal ids of the i-th unit, and the text after the video goes where the model puts it after
    a shorter video. Entries of dropped units keep their original positions (they are never gathered).

    Parameters
    ----------
    inputs : the processor's output for the whole prompt (``input_ids`` [1, L], ``video_grid_thw`` [1, 3], ...).
    keep : [T', N] bool, the visual tokens kept; a unit counts as kept if any of its tokens is.
    adapter : the model's adapter.
    unit_spans : [T', 2] start and end (exclusive) of each unit's own tokens (``EncodedVideo.unit_spans``).
    """
    kept = keep.any(1).cpu()
    length = inputs["input_ids"].shape[1]
    mask = torch.ones(length, dtype=torch.bool)
    for start, end in unit_spans[~kept].tolist():
        mask[start:end] = False
    per_token = {name for name, value in inputs.items() if torch.is_tensor(value) and value.shape == (1, length)}
    reduced = BatchFeature({name: value[:, mask] if name in per_token else value for name, value in inputs.items()})
    grid = inputs["video_grid_thw"].clone()
    grid[0, 0] = int(kept.sum())
    reduced["video_grid_thw"] = grid
    positions = adapter.full_positions(inputs)[:, 0].clone()
    positions[:, mask] = adapter.full_positions(reduced)[:, 0]
    return positions
