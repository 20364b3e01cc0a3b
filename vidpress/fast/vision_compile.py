"""The Qwen-VL vision blocks under ``torch.compile``: their float32 norms, rotations and casts fused.

The stock blocks run RMSNorm and the rotary embedding in float32 with casts around them: many passes over
[S, C] tensors between the matrix products (at 1024 frames of Qwen2.5-VL-7B on an H200, 0.35 s of dtype
copies and 0.34 s of multiplications in 2.5 s of GPU time). ``torch.compile`` fuses them; the batched
attention (:mod:`vidpress.fast.vision`) stays a graph break, so every block compiles to two graphs shared by
all blocks of the tower. The graphs are compiled for dynamic sizes, once per process (other chunk and frame
sizes reuse them); that costs seconds on the first call, so it pays on long videos and many questions,
not on one short clip: it is opt-in (``VideoQA(compile_vision=True)``, ``--compile-vision``).

Each block's ``_compiled_call_impl`` is set as ``nn.Module.compile`` sets it (hooks, parameters and state
dict stay the block's own); the compiled callable is kept on the block, so switching the stock encoder on
and off again does not compile again. Outputs equal the uncompiled blocks up to the fused kernels' rounding.
"""

from __future__ import annotations

import torch
from torch import nn

_COMPILED = "_vidpress_compiled"


def _blocks(tower: nn.Module) -> list[nn.Module]:
    return list(getattr(tower, "blocks", []))


def compile_blocks(tower: nn.Module, backend: str = "inductor") -> None:
    """Compile every block of ``tower`` (``tower.blocks``) with ``backend``, reusing earlier compilations."""
    for block in _blocks(tower):
        compiled = block.__dict__.setdefault(_COMPILED, {})
        if backend not in compiled:
            compiled[backend] = torch.compile(block._call_impl, backend=backend, dynamic=True)
        block._compiled_call_impl = compiled[backend]


def uncompile_blocks(tower: nn.Module) -> None:
    """Run ``tower``'s blocks uncompiled again (their compiled callables are kept for a later switch)."""
    for block in _blocks(tower):
        if block.__dict__.get(_COMPILED):
            block._compiled_call_impl = None


def compiled_backend(tower: nn.Module) -> str | None:
    """The backend ``tower``'s blocks run compiled with, or None."""
    blocks = _blocks(tower)
    if not blocks:
        return None
    current = blocks[0]._compiled_call_impl
    return next((name for name, fn in blocks[0].__dict__.get(_COMPILED, {}).items() if fn is current), None)
