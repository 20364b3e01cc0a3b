"""Model-free checks of whether a compression method kept the needle.

needle_kept is for frame-level presses (frame selection, keyframes): an event counts as kept when at least one
of its frames survives. needle_tokens_kept is for token-level presses (merging, pruning, KV eviction): the
fraction of the sampled needle frames' tokens that survive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from vidpress.synth.sample import SynthSample

if TYPE_CHECKING:
    import torch


def needle_kept(sample: SynthSample, kept_frame_indices: Iterable[int]) -> float:
    """Fraction of ``sample``'s needle events with at least one frame among ``kept_frame_indices`` (0..1)."""
    kept = {int(t) for t in kept_frame_indices}
    events = sample.video.needles
    return sum(any(t in kept for t in event.frames) for event in events) / len(events)


def needle_tokens_kept(needle_frames: Iterable[int], keep_mask: np.ndarray | torch.Tensor, frame_indices: Sequence[int]) -> float:
    """Fraction of needle-frame tokens that a token-level press kept (0..1).

    keep_mask: bool [T, N] (numpy or torch), True where token n of input frame t survives; frame_indices: the
    video frame index of each of the T input frames. Only input frames that are needle frames count; when none
    of the input frames is a needle frame the needle is lost and the result is 0.
    """
    if hasattr(keep_mask, "detach"):
        keep_mask = keep_mask.detach().cpu().numpy()
    mask = np.asarray(keep_mask, dtype=bool)
    if mask.ndim != 2 or len(mask) != len(frame_indices):
        raise ValueError(f"keep_mask must be [T, N] with T = len(frame_indices) = {len(frame_indices)}, got {mask.shape}")
    needles = {int(t) for t in needle_frames}
    rows = [i for i, t in enumerate(frame_indices) if int(t) in needles]
    return float(mask[rows].mean()) if rows else 0.0
