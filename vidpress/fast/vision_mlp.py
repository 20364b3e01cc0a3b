"""Gated vision MLPs widened with zeros to a width the GPU's matrix kernels like: the same outputs, faster.

Qwen2.5-VL's vision MLP is 3420 wide. A bf16 row of 3420 values is 6840 bytes, not a multiple of 16, and
cuBLAS then falls back to kernels for 2-element alignment: on an H200 the products [147456, 1280] x
[1280, 3420] and back ran at 260 and 228 TFLOP/s, the same products 3456 wide at 762 and 787 TFLOP/s
(docs/benchmarks.md, section "Vision at 52 % of peak"); the 1024-frame encoder went from 2.7 s to 1.9 s.

Here the gate and up projections get zero rows (and zero biases) up to a multiple of :data:`ALIGN`, and
the down projection zero columns. The added activations are ``act(0) * 0 = 0`` and meet zero weights, so
the output is the stock MLP's up to the summation order inside the products (float32 on the CPU agrees to
rounding: tests/test_fast_vision.py). Gate and up run as one product of the stacked weights. The widened
weights are copies (about 850 MB for Qwen2.5-VL-7B's tower in bf16), kept on the module and made again when
a weight changes, moves or needs gradients (then per call, so gradients reach the stock weights).

The seam is the MLP instance's ``forward`` (the module, its parameters and its state dict stay stock).
Faithful form: the stock MLP (:func:`restore_vision_mlps`).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

ALIGN = 64
"""Widths are padded up to a multiple of this many columns."""

_CACHE = "_vidpress_aligned_weights"
_FORWARD = "_vidpress_aligned_forward"


def needs_alignment(width: int) -> bool:
    """Whether a ``width``-wide bf16/fp16 row misses the 16-byte alignment of the fast matrix kernels."""
    return width % 8 != 0


def is_gated_mlp(module: nn.Module) -> bool:
    """A ``down(act(gate(x)) * up(x))`` MLP of ``nn.Linear`` layers (Qwen2.5-VL's vision blocks)."""
    parts = [getattr(module, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
    return all(isinstance(part, nn.Linear) for part in parts) and callable(getattr(module, "act_fn", None))


def _source(mlp: nn.Module) -> list[torch.Tensor]:
    return [t for layer in (mlp.gate_proj, mlp.up_proj, mlp.down_proj) for t in (layer.weight, layer.bias) if t is not None]


def widened_weights(mlp: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The MLP's weights padded with zeros to a width of a multiple of :data:`ALIGN`.

    Returns
    -------
    gate_up : [2 * W', C] the gate rows then the up rows, each block zero-padded from W to W'.
    gate_up_bias : [2 * W'] their biases likewise (None without biases).
    down : [C_out, W'] the down projection with zero columns past W.
    """
    width = mlp.gate_proj.out_features
    extra = -width % ALIGN
    gate_up = torch.cat([F.pad(mlp.gate_proj.weight, (0, 0, 0, extra)), F.pad(mlp.up_proj.weight, (0, 0, 0, extra))])
    bias = None
    if mlp.gate_proj.bias is not None:
        bias = torch.cat([F.pad(mlp.gate_proj.bias, (0, extra)), F.pad(mlp.up_proj.bias, (0, extra))])
    return gate_up, bias, F.pad(mlp.down_proj.weight, (0, extra))


def _weights(mlp: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """:func:`widened_weights`, remembered while the stock weights are the same tensors at the same version."""
    source = _source(mlp)
    if torch.is_grad_enabled() and any(t.requires_grad for t in source):
        return widened_weights(mlp)
    key = [(t.data_ptr(), t._version, t.device, t.dtype) for t in source]
    cached = mlp.__dict__.get(_CACHE)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, widened_weights(mlp))
        mlp.__dict__[_CACHE] = cached
    return cached[1]


def aligned_forward(mlp: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """The gated MLP on widened weights: [..., C] -> [..., C_out], as the stock forward."""
    gate_up, bias, down = _weights(mlp)
    gate, up = F.linear(hidden_states, gate_up, bias).chunk(2, dim=-1)
    return F.linear(mlp.act_fn(gate) * up, down, mlp.down_proj.bias)


def align_vision_mlps(tower: nn.Module) -> int:
    """Run every gated MLP of ``tower`` whose width misses the alignment on widened weights; returns how many.

    Each MLP gets one bound forward for good (a deep copy rebinds it to the copy), so switching back and forth
    hands ``torch.compile`` the same function and does not compile the blocks again.
    """
    count = 0
    for module in tower.modules():
        if is_gated_mlp(module) and needs_alignment(module.gate_proj.out_features):
            module.forward = module.__dict__.setdefault(_FORWARD, types.MethodType(aligned_forward, module))
            count += 1
    return count


def restore_vision_mlps(tower: nn.Module) -> None:
    """Give ``tower``'s MLPs their stock forward back and drop the widened copies."""
    for module in tower.modules():
        if _FORWARD in module.__dict__ and module.__dict__.get("forward") is module.__dict__[_FORWARD]:
            del module.forward
            module.__dict__.pop(_CACHE, None)
