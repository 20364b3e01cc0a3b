"""Batched attention for the Qwen-VL vision encoders: one SDPA call per group of equal-length segments.

The stock vision attention of Qwen2-VL, Qwen2.5-VL and Qwen3-VL (transformers 5.17 to 5.23) packs every
patch token of a call into one sequence cut into segments by ``cu_seqlens``: one segment per temporal unit
(full attention), or, in Qwen2.5-VL's windowed blocks, one per attention window (8 x 8 patches, smaller at
the right and bottom edges). With SDPA it runs one attention call per segment in a Python loop: for
Qwen2.5-VL at 448x252 that is 12 windows per temporal unit in 28 of its 32 blocks, about 344k small calls
for 2048 frames, and the GPU idles between them. Segments come in a few lengths only (full windows and
edge windows, one length per frame size), so here the segments of each length are gathered into one batch
[G, H, L, D] and attended in a single SDPA call; the outputs are scattered back to their tokens. Every
segment still attends to itself only, so the result equals the stock loop (the same SDPA on the same rows;
float32 CPU agrees to rounding, see tests/test_fast_vision.py).

The seam is the attention interface, not a forked module: the stock module hands the whole packed sequence
and its ``cu_seqlens`` to the attention function only when the vision config's implementation name contains
"flash" (``transformers.utils.generic.is_flash_attention_requested``); :data:`NAME` contains it for that
reason alone. The function it names runs PyTorch SDPA (flash, memory-efficient or math kernels, as SDPA
picks), not the flash-attn package. Called without ``cu_seq_lens_q`` (should the stock module stop routing
packed sequences) it attends over the whole given sequence, which is what the stock loop asks of it, so the
output stays correct.

The tower's fast path (:func:`enable_fast_vision`) is this attention plus Qwen2.5-VL's MLPs on widened
weights (:mod:`vidpress.fast.vision_mlp`) and, on request, the blocks under ``torch.compile``
(:mod:`vidpress.fast.vision_compile`). Faithful form: the stock encoder (``disable_fast_vision`` or never
enabling it).
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface

from vidpress.fast.vision_compile import compile_blocks, compiled_backend, uncompile_blocks
from vidpress.fast.vision_mlp import align_vision_mlps, restore_vision_mlps

NAME = "vidpress_packed_sdpa_flash_api"
"""Attention implementation name of the batched path ("flash" only selects the stock packed-call branch)."""

_STOCK = "sdpa"
MAX_SEGMENTS_PER_CALL = 2**15
"""Segments per SDPA call at most: CUDA kernels put the batch on a grid axis limited to 65535 blocks."""


def segment_groups(cu_seqlens: torch.Tensor) -> list[torch.Tensor]:
    """Token indices of the segments, grouped by length.

    Parameters
    ----------
    cu_seqlens : [K + 1] cumulative segment boundaries (0, end of segment 1, ..., S).

    Returns
    -------
    One long tensor [G, L] per distinct non-zero segment length L (ascending): row g holds the token
    indices of the g-th segment of that length, in sequence order.
    """
    cu_seqlens = cu_seqlens.long()
    starts, lengths = cu_seqlens[:-1], cu_seqlens.diff()
    groups = []
    for length in torch.unique(lengths).tolist():
        if length > 0:
            first = starts[lengths == length]
            groups.append(first.unsqueeze(1) + torch.arange(length, device=cu_seqlens.device))
    return groups


_RECENT_GROUPS: OrderedDict[int, tuple[torch.Tensor, int, torch.device, list[torch.Tensor]]] = OrderedDict()
RECENT_GROUPS = 4


def groups_of(cu_seqlens: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """:func:`segment_groups` of ``cu_seqlens`` on ``device``, remembered for the last few tensors passed.

    A tower passes the same boundary tensors (its windows, its whole units) to every block of one forward,
    and grouping reads them on the host (a GPU synchronisation per block otherwise: 32 a chunk for
    Qwen2.5-VL). A tensor is recognised by identity and version (in-place edits are seen); the remembered
    tensors are held, so their ids are not reused.
    """
    entry = _RECENT_GROUPS.get(id(cu_seqlens))
    if entry is not None and entry[0] is cu_seqlens and entry[1:3] == (cu_seqlens._version, device):
        return entry[3]
    groups = segment_groups(cu_seqlens.to(device))
    _RECENT_GROUPS[id(cu_seqlens)] = (cu_seqlens, cu_seqlens._version, device, groups)
    while len(_RECENT_GROUPS) > RECENT_GROUPS:
        _RECENT_GROUPS.popitem(last=False)
    return groups


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, **kwargs) -> torch.Tensor:
    """SDPA on [G, H, L, D] batches of at most :data:`MAX_SEGMENTS_PER_CALL` segments (CUDA grid limits)."""
    if query.shape[0] <= MAX_SEGMENTS_PER_CALL:
        return F.scaled_dot_product_attention(query, key, value, **kwargs)
    parts = zip(*(t.split(MAX_SEGMENTS_PER_CALL) for t in (query, key, value)))
    return torch.cat([F.scaled_dot_product_attention(q, k, v, **kwargs) for q, k, v in parts])


def packed_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Non-causal attention of every segment over itself, one SDPA call per segment length.

    Parameters
    ----------
    query, key, value : [1, H, S, D] the packed sequence (as the stock vision attention passes them).
    cu_seqlens : [K + 1] segment boundaries in the sequence.
    scale : softmax scale (SDPA's default 1 / sqrt(D) when None).

    Returns
    -------
    [1, S, H, D] attention output, laid out as the attention interfaces return it.
    """
    tokens = [t[0].transpose(0, 1) for t in (query, key, value)]  # [S, H, D] views
    seq_len, heads = tokens[0].shape[:2]
    groups = groups_of(cu_seqlens, query.device)
    options = dict(scale=scale, dropout_p=dropout_p)
    if len(groups) == 1 and groups[0].numel() == seq_len:  # equal segments tile the sequence: no gather
        count, length = groups[0].shape
        q, k, v = (t.reshape(count, length, heads, -1).transpose(1, 2) for t in tokens)
        return _attend(q, k, v, **options).transpose(1, 2).reshape(1, seq_len, heads, -1)
    out = value.new_empty(seq_len, heads, value.shape[-1])
    for index in groups:
        count, length = index.shape
        flat = index.flatten()
        q, k, v = (t[flat].view(count, length, heads, -1).transpose(1, 2) for t in tokens)
        out[flat] = _attend(q, k, v, **options).transpose(1, 2).reshape(count * length, heads, -1)
    return out.unsqueeze(0)


def packed_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The attention-interface function registered as :data:`NAME` (vision towers only: no mask, non-causal)."""
    if attention_mask is not None:
        raise ValueError(f"{NAME} is for the Qwen-VL vision encoders, which attend without a mask")
    if cu_seq_lens_q is None:
        cu_seq_lens_q = torch.tensor([0, query.shape[2]], device=query.device)
    return packed_sdpa(query, key, value, cu_seq_lens_q, scale=scaling, dropout_p=dropout), None


AttentionInterface.register(NAME, packed_attention)


def _tower(model: nn.Module) -> nn.Module | None:
    """The Qwen-VL vision tower (``model.model.visual``) when it has a config, else None."""
    visual = getattr(getattr(model, "model", None), "visual", None)
    return visual if getattr(visual, "config", None) is not None else None


def enable_fast_vision(model: nn.Module, compile_backend: str | None = None) -> bool:
    """Switch the vision tower of a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model to its fast path.

    The fast path is the batched attention (this module) and gated MLPs on widened weights
    (:mod:`vidpress.fast.vision_mlp`); with ``compile_backend`` (e.g. "inductor") the blocks also run under
    ``torch.compile`` (:mod:`vidpress.fast.vision_compile`), else uncompiled. Only a tower on stock SDPA is
    switched (a flash-attention tower already packs its segments; eager attention is left for those who
    asked for it); other models are left alone. Returns whether the tower runs the fast path now.
    """
    tower = _tower(model)
    if tower is None:
        return False
    if tower.config._attn_implementation == _STOCK:
        tower.config._attn_implementation = NAME
    if tower.config._attn_implementation != NAME:
        return False
    align_vision_mlps(tower)
    if compile_backend is None:
        uncompile_blocks(tower)
    else:
        compile_blocks(tower, compile_backend)
    return True


def disable_fast_vision(model: nn.Module) -> None:
    """Give the vision tower its stock attention, MLPs and uncompiled blocks back (no-op when the fast path is off)."""
    tower = _tower(model)
    if tower is not None and tower.config._attn_implementation == NAME:
        tower.config._attn_implementation = _STOCK
        restore_vision_mlps(tower)
        uncompile_blocks(tower)


def is_fast(model: nn.Module) -> bool:
    """Whether ``model``'s vision tower runs the fast path."""
    tower = _tower(model)
    return tower is not None and tower.config._attn_implementation == NAME


@contextmanager
def fast_vision(model: nn.Module) -> Iterator[bool]:
    """``with fast_vision(model):`` runs the vision tower on the fast path (uncompiled, unless it already ran
    compiled), restoring it afterwards.

    Yields whether the fast path is on (False when the model has no Qwen-VL tower on SDPA).
    """
    tower = _tower(model)
    switched = tower is not None and tower.config._attn_implementation == _STOCK
    try:
        yield enable_fast_vision(model) if switched else is_fast(model)
    finally:
        if switched:
            disable_fast_vision(model)


@contextmanager
def stock_vision(model: nn.Module) -> Iterator[None]:
    """``with stock_vision(model):`` runs the vision tower stock, restoring the fast path (and its compilation) after."""
    tower = _tower(model)
    switched = is_fast(model)
    backend = compiled_backend(tower) if switched else None
    disable_fast_vision(model)
    try:
        yield
    finally:
        if switched:
            enable_fast_vision(model, backend)
