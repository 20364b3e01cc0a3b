"""SDPA attention that accepts a KV cache whose layers hold different numbers of entries.

Stock transformers builds one causal mask for all layers from the first layer's cache length. Presses that
evict a different number of KV entries per layer (AdaReTaKe) or drop hidden states inside the decoder
(LP-Comp) leave layers of different lengths, so the shared mask no longer fits. ``vidpress_sdpa`` is the
stock SDPA attention, given the stock mask whenever it fits the layer, and otherwise the causal mask of the
layer's own length (batch size 1, no padding: query i sees every cached key up to its own position).
Where every layer has the same length it passes everything through unchanged, so outputs stay identical.

Chunks over a cache (the segments of a chunked prefill after the first) attend bottom-right causally
with a mask, so the stock path repeats the KV heads (transformers' ``use_gqa_in_sdpa`` is False with a mask)
and SDPA cannot use flash attention. Inside :func:`lower_right_chunks` (``VideoQA(fast_prefill=True)``, the default; batch
size 1 and no padding, as in vidpress's prefill) such a chunk runs SDPA with PyTorch's
``causal_lower_right`` bias instead: flash attention with native grouped-query heads where it applies, the
same materialised mask elsewhere (bit for bit on the CPU, tested).

Inside :func:`counting_work`, every call records its layer's query tokens and query-key pairs
(:class:`AttentionWork`): what a prefill really computed, chunked, pruned or thinned by the presses (the
benchmark's prefill FLOPs).

One-token steps inside :func:`step_attention` attend through the function it was given instead: the static
decode steps of :mod:`vidpress.fast.graph_decode`, whose cache layers return whole buffers and whose
valid lengths live on the device.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

NAME = "vidpress_sdpa"
StepAttention = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, float | None], torch.Tensor]
_PLAIN_CAUSAL = contextvars.ContextVar("vidpress_plain_causal", default=False)
_WORK: contextvars.ContextVar[AttentionWork | None] = contextvars.ContextVar("vidpress_attention_work", default=None)
_STEP_ATTENTION: contextvars.ContextVar[StepAttention | None] = contextvars.ContextVar("vidpress_step_attention", default=None)


@dataclass
class AttentionWork:
    """Per decoder layer (list index), the query tokens its attention calls took and the query-key pairs they
    scored. A call of q queries over k keys with the bottom-right causal mask scores q * k - q * (q - 1) / 2
    pairs (query i sees keys 0 .. k - q + i)."""

    tokens: list[int] = field(default_factory=list)
    pairs: list[int] = field(default_factory=list)

    def add(self, layer: int, queries: int, keys: int) -> None:
        missing = layer + 1 - len(self.tokens)
        self.tokens += [0] * missing
        self.pairs += [0] * missing
        self.tokens[layer] += queries
        self.pairs[layer] += queries * keys - queries * (queries - 1) // 2


@contextmanager
def counting_work(work: AttentionWork) -> Iterator[AttentionWork]:
    """Inside, the LLM's attention calls (``vidpress_sdpa``) add what they compute to ``work``."""
    token = _WORK.set(work)
    try:
        yield work
    finally:
        _WORK.reset(token)


def bottom_right_causal_mask(query_length: int, key_length: int, device: torch.device) -> torch.Tensor:
    """Bool [1, 1, q, k]: query i (the last q of k positions) sees keys 0 .. k - q + i."""
    rows = torch.arange(query_length, device=device).unsqueeze(1) + (key_length - query_length)
    return (torch.arange(key_length, device=device).unsqueeze(0) <= rows).view(1, 1, query_length, key_length)


def per_layer_sdpa(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Stock SDPA attention with a causal mask that fits this layer's key length."""
    query_length, key_length = query.shape[2], key.shape[2]
    work = _WORK.get()
    if work is not None:
        work.add(module.layer_idx, query_length, key_length)
    step = _STEP_ATTENTION.get()
    if step is not None and query_length == 1:
        return step(module, query, key, value, kwargs.get("scaling")), None
    if _PLAIN_CAUSAL.get() and 1 < query_length < key_length and query.shape[0] == 1 and kwargs.get("sliding_window") is None:
        return lower_right_sdpa(module, query, key, value, scaling=kwargs.get("scaling")), None
    fits = attention_mask is None or attention_mask.shape[-1] == key_length
    if not fits or (attention_mask is None and 1 < query_length < key_length):
        attention_mask = bottom_right_causal_mask(query_length, key_length, query.device)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def lower_right_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, scaling: float | None) -> torch.Tensor:
    """[1, q, H, D] attention of the last q of k positions (query [1, H, q, D], key/value [1, H_kv, k, D])."""
    bias = causal_lower_right(query.shape[2], key.shape[2])
    groups = query.shape[1] // key.shape[1]
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=scaling, enable_gqa=groups > 1)
    return output.transpose(1, 2).contiguous()


@contextmanager
def lower_right_chunks() -> Iterator[None]:
    """Inside, chunks over a cache use the ``causal_lower_right`` bias (see the module docstring): only for
    prompts of batch size 1 without padding, whose masks are plain causal."""
    token = _PLAIN_CAUSAL.set(True)
    try:
        yield
    finally:
        _PLAIN_CAUSAL.reset(token)


@contextmanager
def step_attention(attention: StepAttention) -> Iterator[None]:
    """Inside, one-token steps run ``attention(module, query, key, value, scaling)`` -> [1, 1, H, D] (query
    [1, H, 1, D], key/value as the cache layer's ``update`` returned them)."""
    token = _STEP_ATTENTION.set(attention)
    try:
        yield
    finally:
        _STEP_ATTENTION.reset(token)


AttentionInterface.register(NAME, per_layer_sdpa)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_per_layer_sdpa(model: PreTrainedModel) -> None:
    """Switch the LLM of ``model`` from SDPA to ``vidpress_sdpa`` (other implementations are left alone)."""
    text_config = model.config.get_text_config()
    if text_config._attn_implementation == "sdpa":
        text_config._attn_implementation = NAME
