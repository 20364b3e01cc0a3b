"""VideoChat-Flash clip compression (ToMe) as a token-stage press: clips merged jointly to N tokens per frame.

VideoChat-Flash, https://arxiv.org/abs/2501.00574 (ALGORITHMS.md §6); also XComp's front end,
https://arxiv.org/abs/2604.14149. The merge itself is :func:`vidpress.functional.tome.tome_clip_merge`.

Mapping onto the token stage, which keeps a mask [T', N] over the encoded visual tokens:

- Frames are temporal units (T'): on Qwen-VL one unit holds 2 video frames, so ``tokens_per_frame=16``
  gives 16 tokens per unit, i.e. 8 per video frame, where VideoChat-Flash's 16 are per video frame. A clip is
  ``clip_frames`` consecutive kept units (the last clip may be shorter).
- Every merged token stands for one original token, its representative: the one token of its group that
  was never merged away (an unmerged A token of a round keeps its identity, a B token that absorbed A
  tokens keeps its identity). The merged value is written into the representative's slot of new feature
  tensors (``encoded.features``, and each of Qwen3-VL's ``encoded.deepstack`` merged with the same groups
  and size weights), and the keep mask marks the representatives. The tensors are replaced on the
  ``EncodedVideo`` (never modified in place), so ``build_inputs`` and every question of ``ask_many`` read
  the merged values.
- Positions are the model's own positions of the representatives, and the LLM sees the merged tokens in
  the original order of their representatives. VideoChat-Flash orders a clip's output as
  ``[unmerged A, B]`` of the last round (a 1-D RoPE model given contiguous positions); with M-RoPE positions
  attached to slots, the order follows the positions instead.
- The merge runs on the projected LLM-input embeddings (the features the adapter exposes), matched by
  their cosine similarity; VideoChat-Flash merges the vision tower's output before its MLP projector.
- A clip merges to ``tokens_per_frame * units`` tokens jointly, so single units may keep more or fewer
  than ``tokens_per_frame`` (a unit left with none is dropped with its own tokens, e.g. Qwen3-VL's
  timestamp text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from vidpress.functional.tome import tome_clip_merge, tome_merge_schedule
from vidpress.presses.base import Press, PressContext

if TYPE_CHECKING:
    from vidpress.adapters import EncodedVideo


@dataclass
class ClipMerge:
    """The merge of one clip of F units x N tokens into K = F * tokens_per_frame tokens.

    Attributes
    ----------
    merged : [K, D] merged tokens (dtype of the input).
    representatives : [K] index in ``0 .. F*N-1`` of the original token whose slot each merged token takes.
    sources : [F*N] index in ``0 .. K-1`` of the merged token each original token went into.
    """

    merged: Tensor
    representatives: Tensor
    sources: Tensor

    def average(self, tokens: Tensor) -> Tensor:
        """[K, C] mean of ``tokens`` [F*N, C] over each group (the size-weighted average of unit-size tokens)."""
        total = tokens.new_zeros(len(self.representatives), tokens.shape[-1]).index_add_(0, self.sources, tokens)
        counts = torch.bincount(self.sources, minlength=len(self.representatives)).to(tokens)
        return total / counts[:, None]


def merge_clip(tokens: Tensor, tokens_per_frame: int) -> ClipMerge:
    """Merge a clip's tokens [F, N, D] jointly to ``F * tokens_per_frame`` and track each group's representative.

    The rounds of :func:`tome_clip_merge` (bipartite soft matching, ``[unmerged A, B]`` output order of the
    released code) are run one call per round in float32 (float64 for float64 input), which is exactly the
    computation of one call over all rounds; a round's groups are a B token with the A tokens merged into it,
    or an unmerged A token alone, and that B (or lone A) token is the representative.
    """
    frames, per_frame, dim = tokens.shape
    compute = torch.float64 if tokens.dtype == torch.float64 else torch.float32
    current = tokens.reshape(frames * per_frame, dim).to(compute)
    representatives = torch.arange(frames * per_frame, device=tokens.device)
    sources = representatives.clone()
    sizes = None
    for removed in tome_merge_schedule(frames * per_frame, frames * tokens_per_frame):
        remaining = current.shape[0] - removed
        current, sizes, slots = tome_clip_merge(current, remaining, num_frames=1, sizes=sizes, return_sources=True)
        survivors = torch.empty(remaining, dtype=torch.long, device=tokens.device)
        survivors[slots[0::2]] = representatives[0::2]  # A tokens first,
        survivors[slots[1::2]] = representatives[1::2]  # then each group's B token overwrites its A tokens
        representatives, sources = survivors, slots[sources]
    return ClipMerge(current.to(tokens.dtype), representatives, sources)


@dataclass
class ToMePress(Press):
    """VideoChat-Flash clip merge: each clip of ``clip_frames`` temporal units keeps ``tokens_per_frame`` per unit.

    Parameters
    ----------
    tokens_per_frame : merged tokens per temporal unit of a clip (VideoChat-Flash and XComp: 16); a value
        >= the tokens per unit keeps everything unchanged.
    clip_frames : temporal units per clip (VideoChat-Flash: 4 frames; here 4 units = 8 Qwen-VL frames).

    The presses before it must keep whole temporal units (all or none of a unit's tokens).
    """

    tokens_per_frame: int = 16
    clip_frames: int = 4
    stages: ClassVar[tuple[str, ...]] = ("token",)

    def __post_init__(self) -> None:
        for name in ("tokens_per_frame", "clip_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")

    def select_tokens(self, encoded: EncodedVideo, keep: Tensor, context: PressContext) -> Tensor:
        units = keep.any(1).nonzero().squeeze(1)
        if not bool(keep[units].all()):
            raise ValueError("ToMePress needs whole temporal units from the presses before it")
        if self.tokens_per_frame >= encoded.tokens_per_unit or len(units) == 0:
            return keep
        features = encoded.features.clone()
        deepstack = [d.clone() for d in encoded.deepstack]
        new_keep = torch.zeros_like(keep)
        for start in range(0, len(units), self.clip_frames):
            clip = units[start : start + self.clip_frames]
            merge = merge_clip(encoded.features[clip.to(features.device)], self.tokens_per_frame)
            slots = _clip_slots(clip, encoded.tokens_per_unit)[merge.representatives.cpu()]
            features.view(-1, features.shape[-1])[slots.to(features.device)] = merge.merged
            for original, merged in zip(encoded.deepstack, deepstack):
                layer = original[clip.to(original.device)].flatten(0, 1)
                merged.view(-1, merged.shape[-1])[slots.to(merged.device)] = merge.average(layer)
            new_keep.view(-1)[slots] = True
        encoded.features, encoded.deepstack = features, deepstack
        clips = -(-len(units) // self.clip_frames)
        context.stats["tome"] = {"clips": clips, "tokens_per_unit": new_keep.sum(1).tolist()}
        return new_keep


def _clip_slots(clip: Tensor, per_unit: int) -> Tensor:
    """[F*N] flat index in the [T', N] grid of each token of the clip's units ``clip`` [F]."""
    return (clip[:, None] * per_unit + torch.arange(per_unit)).flatten()
