"""Near-duplicate frame filtering: a cheap pixel-distance test on downscaled frames, before any encoder.

Each frame is area-averaged to ``size x size`` in RGB (every channel is compared, so a colour change of
equal brightness still counts) and scaled to 0..1. A frame is kept when its mean absolute difference to
the LAST KEPT frame exceeds ``threshold``: comparing with the last kept frame rather than the previous one
lets a slow drift accumulate until it triggers a keep.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vidpress.functional.checks import check_float, check_int

__all__ = ["downscale_frames", "near_duplicate_keep"]


def downscale_frames(frames: Tensor | np.ndarray, size: int) -> Tensor:
    """Area average of uint8 frames [T, H, W, C] to float32 [T, C, size, size] in 0..1 (on the frames' device)."""
    pixels = frames.float() if isinstance(frames, Tensor) else torch.from_numpy(frames.astype(np.float32))
    return F.adaptive_avg_pool2d(pixels.permute(0, 3, 1, 2), size) / 255.0


def near_duplicate_keep(
    frames: Tensor | np.ndarray,
    threshold: float,
    size: int = 32,
    max_gap: int | None = None,
    *,
    chunk_frames: int = 64,
) -> Tensor:
    """Indices [k] of the frames of ``frames`` that are not near-duplicates of the last kept frame, sorted.

    Parameters
    ----------
    frames : uint8 [T, H, W, C] (C = 3 for RGB), a tensor or an array, T >= 1.
    threshold : a frame is kept when its mean absolute difference (0..1 scale, over ``size x size`` RGB
        pixels) to the last kept frame is > ``threshold``; 0 keeps every frame that differs at all.
    size : side of the downscaled frames compared.
    max_gap : when set, a frame is kept anyway after ``max_gap`` consecutive dropped frames.
    chunk_frames : frames converted and downscaled at a time; only one chunk is held at full size, and the
        result does not depend on it.

    Returns
    -------
    Long [k] on the CPU; frame 0 is always kept.
    """
    uint8 = torch.uint8 if isinstance(frames, Tensor) else np.uint8
    if frames.ndim != 4 or frames.dtype != uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, C], got {frames.dtype} {tuple(frames.shape)}")
    if len(frames) == 0:
        raise ValueError("frames must hold at least one frame")
    check_float("threshold", threshold, 0.0)
    check_int("size", size, 1)
    check_int("chunk_frames", chunk_frames, 1)
    if max_gap is not None:
        check_int("max_gap", max_gap, 1)

    kept: list[int] = []
    reference: Tensor | None = None  # [C, size, size], the last kept frame downscaled
    gap = 0  # frames dropped since the last kept one
    for start in range(0, len(frames), chunk_frames):
        small = downscale_frames(frames[start : start + chunk_frames], size)
        position = 0
        if reference is None:
            kept.append(0)
            reference, position = small[0], 1
        while position < len(small):
            distances = (small[position:] - reference).abs().mean(dim=(1, 2, 3))
            trigger = distances > threshold
            if max_gap is not None:
                trigger[max_gap - gap :] = True  # slot j follows gap + j dropped frames
            hits = trigger.nonzero()
            if len(hits) == 0:
                gap += len(small) - position
                break
            position += int(hits[0])
            kept.append(start + position)
            reference, gap = small[position], 0
            position += 1
    return torch.tensor(kept, dtype=torch.long)
