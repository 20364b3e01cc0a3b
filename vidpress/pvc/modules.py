"""PVC's building blocks inside the vision tower: time embedding, AdaLN modulation, causal temporal attention.

PVC (Yang et al., CVPR 2025, https://arxiv.org/abs/2412.09613) adds to the last L blocks of a vision encoder a
causal temporal attention (each patch token attends to the tokens at the same spatial position in the current
and earlier frames) and an AdaLN modulation conditioned on the frame's relative time. Every added branch is
zero-initialised, so a freshly built add-on leaves the pretrained tower's output unchanged, exactly.

Not in the paper: an optional sliding temporal window limits each frame's temporal attention to the last
``window`` frames (itself included), so the keys/values carried across chunked calls stay bounded on long
videos. It is a deviation for memory only; without it the attention is the paper's full causal one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidpress.attention import bottom_right_causal_mask

TemporalKV = tuple[torch.Tensor, torch.Tensor]


def sinusoidal_embedding(times: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Float32 sinusoidal embedding [U, dim] of ``times`` [U]: cosines then sines of geometric frequencies.

    Frequencies run from 1 down towards ``1 / max_period`` (``dim`` must be even).
    """
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=times.device) / half
    angles = times.to(torch.float32)[:, None] * torch.exp(-math.log(max_period) * exponent)[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimeEmbedding(nn.Module):
    """Relative time [U] → sinusoidal ``frequency_dim``-d embedding → MLP → [U, width]."""

    def __init__(self, width: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, times: torch.Tensor) -> torch.Tensor:
        embedding = sinusoidal_embedding(times, self.frequency_dim)
        return self.mlp(embedding.to(self.mlp[0].weight.dtype))


class AdaLNModulation(nn.Module):
    """Shift and scale of a block's ``norms`` normalisations from the time embedding, zero-initialised.

    ``modulate(x, shift, scale) = x * (1 + scale) + shift`` is the identity until the weights are trained.
    """

    def __init__(self, width: int, norms: int = 2):
        super().__init__()
        self.norms = norms
        self.linear = nn.Linear(width, 2 * norms * width)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, time_embedding: torch.Tensor) -> torch.Tensor:
        """[U, width] → [U, norms, 2, width]: (shift, scale) of each normalisation for each unit."""
        out = self.linear(F.silu(time_embedding))
        return out.view(time_embedding.shape[0], self.norms, 2, -1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN: ``x * (1 + scale) + shift`` (all broadcastable to ``x``)."""
    return x * (1 + scale) + shift


def temporal_mask(frames: int, keys: int, window: int | None, device: torch.device) -> torch.Tensor:
    """Bool [1, 1, U, K]: frame i (the last U of K frames) sees frames K - U + i - window + 1 .. K - U + i.

    Without a window (None) it sees every frame up to itself (the paper's causal attention).
    """
    mask = bottom_right_causal_mask(frames, keys, device)
    if window is None:
        return mask
    rows = torch.arange(frames, device=device).unsqueeze(1) + (keys - frames)
    return mask & (torch.arange(keys, device=device).unsqueeze(0) > rows - window).view(mask.shape)


class CausalTemporalAttention(nn.Module):
    """Attention along time at each spatial position, causal, as a gated residual branch (gate zero-initialised).

    The input ``x`` [U, n, C] holds U consecutive frames of n tokens each, token ``j`` of every frame being
    the same spatial position. Token (u, j) attends to (u', j) for u' <= u, including ``past`` frames of
    earlier calls (their keys and values), so encoding a video in chunks equals encoding it at once.
    With a ``window`` w (not in the paper: a deviation that bounds memory on long videos), only the frames
    u - w + 1 <= u' <= u, and only the last w - 1 frames are returned to carry to the next call.
    No temporal position encoding is used: the time reaches the tokens through the AdaLN modulation.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.gate = nn.Parameter(torch.zeros(width))

    def forward(
        self, x: torch.Tensor, past: TemporalKV | None = None, window: int | None = None
    ) -> tuple[torch.Tensor, TemporalKV]:
        """Gated branch output [U, n, C] and the keys/values to carry, [n, heads, K, C / heads] each.

        K = P + U (all frames so far) without a window, else min(P + U, window - 1) (the last frames only).
        Computed in the module's dtype; the output is cast back to the dtype of ``x``.
        """
        frames, positions, width = x.shape
        qkv = self.qkv(self.norm(x.to(self.qkv.weight.dtype))).view(frames, positions, 3, self.heads, width // self.heads)
        query, key, value = qkv.permute(2, 1, 3, 0, 4).unbind(0)  # each [n, heads, U, d]
        if past is not None:
            key, value = torch.cat([past[0], key], dim=2), torch.cat([past[1], value], dim=2)
        mask = temporal_mask(frames, key.shape[2], window, x.device)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        out = out.permute(2, 0, 1, 3).reshape(frames, positions, width)
        carried = (key, value) if window is None else _last_frames(key, value, window - 1)
        return (self.gate * self.proj(out)).to(x.dtype), carried


def _last_frames(key: torch.Tensor, value: torch.Tensor, frames: int) -> TemporalKV:
    """Compact copies of the last ``frames`` frames of keys/values [n, heads, K, d].

    Copies, not views: a view would keep the memory of all K frames (and of the queries) alive.
    """
    start = max(key.shape[2] - frames, 0)
    compact = torch.contiguous_format
    return key[:, :, start:].clone(memory_format=compact), value[:, :, start:].clone(memory_format=compact)
