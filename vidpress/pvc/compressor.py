"""PVC's per-frame compression to a token budget, placed in representative slots of the frame's token grid.

Each temporal unit's H' x W' merged tokens [N, D] are average-pooled to a rows x cols grid (rows * cols =
the budget, the aspect closest to the frame's), then refined by a learned cross-attention from the pooled
tokens to all N tokens of the unit, added through a zero-initialised gate: untrained, the compressor is
plain adaptive average pooling. The LLM then sees the compressed tokens in the placeholders of the centre
token of each pooled cell, so their positions are the model's own positions of those slots.

PVC (https://arxiv.org/abs/2412.09613) compresses each frame to 64 tokens; its exact compressor is not
public in code, so this is one learnable form that can be bolted onto a pretrained model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from vidpress.adapters import EncodedVideo


def pooling_grid(height: int, width: int, budget: int) -> tuple[int, int]:
    """(rows, cols) of the pooled grid of an ``height`` x ``width`` token grid.

    rows * cols = min(budget, height * width), rows <= height, cols <= width, and the aspect rows / cols is
    the closest to height / width (in log ratio; ties go to more rows).
    """
    budget = min(budget, height * width)
    shapes = [(rows, budget // rows) for rows in range(1, height + 1) if budget % rows == 0 and budget // rows <= width]
    if not shapes:
        raise ValueError(f"{budget} tokens cannot be laid out as a grid within {height} x {width} tokens")
    target = height / width
    return min(shapes, key=lambda s: (abs(math.log(s[0] / s[1] / target)), -s[0]))


def cell_bounds(size: int, cells: int) -> tuple[list[int], list[int]]:
    """Start and end (exclusive) of each of ``cells`` adaptive-pooling cells along an axis of ``size``."""
    starts = [i * size // cells for i in range(cells)]
    ends = [-(-(i + 1) * size // cells) for i in range(cells)]
    return starts, ends


def cell_slots(height: int, width: int, rows: int, cols: int) -> torch.Tensor:
    """[rows * cols] raster index (in the height x width grid) of the centre token of each pooled cell."""
    centres = []
    for size, cells in ((height, rows), (width, cols)):
        starts, ends = cell_bounds(size, cells)
        centres.append(torch.tensor([(s + e - 1) // 2 for s, e in zip(starts, ends)]))
    return (centres[0][:, None] * width + centres[1][None, :]).flatten()


def pool_frames(features: torch.Tensor, grid: tuple[int, int], cells: tuple[int, int]) -> torch.Tensor:
    """Adaptive average pooling of each unit: [T', H' * W', D] → [T', rows * cols, D] (raster order)."""
    units, _, dim = features.shape
    image = features.view(units, *grid, dim).permute(0, 3, 1, 2)
    return F.adaptive_avg_pool2d(image, cells).flatten(2).transpose(1, 2)


class FrameCompressor(nn.Module):
    """Per-unit compression: adaptive pooling + a zero-gated cross-attention residual over the unit's tokens.

    Parameters
    ----------
    width : D, the dimension of the merged (LLM-input) visual tokens.
    heads : attention heads of the cross-attention.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.norm_query = nn.LayerNorm(width, eps=1e-6)
        self.norm_context = nn.LayerNorm(width, eps=1e-6)
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.gate = nn.Parameter(torch.zeros(width))

    def forward(self, features: torch.Tensor, grid: tuple[int, int], budget: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Compress [T', H' * W', D] features to ``budget`` tokens per unit.

        Returns the compressed tokens [T', k, D] (in the module's dtype) and their slots [k] (raster indices
        in the H' x W' grid), k = min(budget, H' * W').
        """
        rows, cols = pooling_grid(*grid, budget)
        features = features.to(self.proj.weight.dtype)
        pooled = pool_frames(features, grid, (rows, cols))
        units, tokens, width = features.shape
        split = (units, -1, self.heads, width // self.heads)
        query = self.query(self.norm_query(pooled)).view(split).transpose(1, 2)
        key, value = self.key_value(self.norm_context(features)).view(units, tokens, 2, *split[2:]).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(query, key, value).transpose(1, 2).reshape(pooled.shape)
        return pooled + self.gate * self.proj(attended), cell_slots(*grid, rows, cols).to(features.device)


def compress_features(
    compressor: FrameCompressor, features: torch.Tensor, deepstack: list[torch.Tensor], grid: tuple[int, int], budget: int
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Compress every unit of ``features`` [T', H' * W', D] and place the result in the slots.

    Returns new features [T', N, D] holding the compressed tokens at the slots (the other rows are copied
    from the input and are not meant to be kept), the ``deepstack`` features (Qwen3-VL, each [T', N, D])
    average-pooled to the same cells and placed likewise, and the slot mask [T', N] (on the CPU). The
    inputs are not modified.
    """
    compressed, slots = compressor(features, grid, budget)
    cells = pooling_grid(*grid, budget)
    features = features.index_copy(1, slots, compressed.to(features.dtype))
    deepstack = [d.index_copy(1, slots, pool_frames(d, grid, cells)) for d in deepstack]
    mask = torch.zeros(features.shape[:2], dtype=torch.bool)
    mask[:, slots.cpu()] = True
    return features, deepstack, mask


def compress_encoded(compressor: FrameCompressor, encoded: EncodedVideo, budget: int) -> torch.Tensor:
    """Compress ``encoded`` in place of its features (new tensors are set on it); returns the slot mask [T', N]."""
    grid = encoded.grid[1:]
    encoded.features, encoded.deepstack, mask = compress_features(compressor, encoded.features, encoded.deepstack, grid, budget)
    return mask
