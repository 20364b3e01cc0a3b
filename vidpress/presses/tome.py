"""VideoChat-Flash clip compression (ToMe) as a token-stage press: clips merged jointly to N tokens per frame.

VideoChat-Flash, https://arxiv.org/abs/2501.00574 (ALGORITHMS.md §6); also XComp's front end,
https://arxiv.org/abs/2604.14149. The merge itself is :func:`vidpress.functional.tome.tome_merge_clips`
(:func:`~vidpress.functional.tome.tome_clip_merge` on many clips at once).

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

from vidpress.functional.tome import tome_merge_clips
from vidpress.presses.base import Press, PressContext

if TYPE_CHECKING:
    from vidpress.adapters import EncodedVideo


CLIPS_PER_CALL = 32  # clips merged in one batched call (~40 MB of float32 work per clip of 4 x 144 x 3584)


@dataclass
class ClipMerge:
    """The merges of B clips of F units x N tokens, each into K = F * tokens_per_frame tokens.

    Attributes
    ----------
    merged : [B, K, D] merged tokens (dtype of the input).
    representatives : [B, K] index in ``0 .. F*N-1`` of the original token whose slot each merged token takes.
    sources : [B, F*N] index in ``0 .. K-1`` of the merged token each original token went into.
    """

    merged: Tensor
    representatives: Tensor
    sources: Tensor

    def average(self, tokens: Tensor) -> Tensor:
        """[B, K, C] mean of ``tokens`` [B, F*N, C] over each group (the size-weighted average of unit-size tokens)."""
        batch, merged = self.representatives.shape
        index = self.sources[..., None].expand(-1, -1, tokens.shape[-1])
        total = tokens.new_zeros(batch, merged, tokens.shape[-1]).scatter_add_(1, index, tokens)
        counts = tokens.new_zeros(batch, merged).scatter_add_(1, self.sources, tokens.new_ones(self.sources.shape))
        return total / counts[..., None]


def merge_clips(tokens: Tensor, tokens_per_frame: int) -> ClipMerge:
    """Merge each clip of ``tokens`` [B, F, N, D] jointly to ``F * tokens_per_frame`` and track each group's representative.

    The bipartite soft matching of :func:`tome_clip_merge` (``[unmerged A, B]`` output order of the released
    code) on all B clips at once (:func:`tome_merge_clips`); a round's groups are a B token with the A tokens
    merged into it, or an unmerged A token alone, and that B (or lone A) token is the representative.
    """
    clips, frames, per_frame, dim = tokens.shape
    merged, sources, representatives = tome_merge_clips(tokens.reshape(clips, frames * per_frame, dim), frames * tokens_per_frame)
    return ClipMerge(merged, representatives, sources)


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
        for clips in _clip_batches(units, self.clip_frames):
            merge = merge_clips(encoded.features[clips.to(features.device)], self.tokens_per_frame)
            slots = _clip_slots(clips, encoded.tokens_per_unit).gather(1, merge.representatives.cpu()).flatten()
            features.view(-1, features.shape[-1])[slots.to(features.device)] = merge.merged.flatten(0, 1)
            for original, merged in zip(encoded.deepstack, deepstack):
                layer = original[clips.to(original.device)].flatten(1, 2)
                merged.view(-1, merged.shape[-1])[slots.to(merged.device)] = merge.average(layer).flatten(0, 1)
            new_keep.view(-1)[slots] = True
        encoded.features, encoded.deepstack = features, deepstack
        clips = -(-len(units) // self.clip_frames)
        context.stats["tome"] = {"clips": clips, "tokens_per_unit": new_keep.sum(1).tolist()}
        return new_keep


def _clip_batches(units: Tensor, clip_frames: int) -> list[Tensor]:
    """The units [U] cut into consecutive clips of ``clip_frames``, as [b, clip_frames] batches of at most
    ``CLIPS_PER_CALL`` clips, then the shorter last clip alone as [1, rest]."""
    whole = len(units) // clip_frames * clip_frames
    clips = units[:whole].reshape(-1, clip_frames)
    batches = list(clips.split(CLIPS_PER_CALL))
    if whole < len(units):
        batches.append(units[whole:][None])
    return batches


def _clip_slots(clips: Tensor, per_unit: int) -> Tensor:
    """[b, F*N] flat index in the [T', N] grid of each token of the clips' units ``clips`` [b, F]."""
    return (clips[..., None] * per_unit + torch.arange(per_unit)).flatten(1)
