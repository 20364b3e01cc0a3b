"""Prefill chunks through PyTorch's causal_lower_right bias (VideoQA(fast_prefill=True), the default): the stock path's numbers."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import vidpress.attention
from vidpress import VideoQA
from vidpress.attention import bottom_right_causal_mask, lower_right_sdpa
from tests.test_fast_decode import ALL_FAMILIES, PRESSES
from tests.test_retake import QUESTION, make_video


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (8, 2)])
def test_lower_right_chunk_equals_the_masked_stock_attention(heads, kv_heads):
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, heads, 5, 16, generator=generator)
    key, value = (torch.randn(1, kv_heads, 12, 16, generator=generator) for _ in range(2))
    module = nn.Module()
    module.num_key_value_groups = heads // kv_heads
    stock, _ = sdpa_attention_forward(module, query, key, value, bottom_right_causal_mask(5, 12, query.device), scaling=0.25)
    assert torch.equal(lower_right_sdpa(module, query, key, value, scaling=0.25), stock)


@pytest.mark.parametrize("name", ["pivotkv", "adaretake", "retake"])  # the presses that prefill in chunks
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_fast_prefill_gives_the_stock_tokens_and_cache(every_qa, family, name):
    qa, video = every_qa[family], make_video()
    press = PRESSES[name](qa.ask(video, QUESTION, max_new_tokens=1).stats.llm_input_length)
    with mock.patch.object(qa, "fast_prefill", False):  # the stock masked attention of a chunk
        stock = qa.ask(video, QUESTION, press=press, max_new_tokens=8)
    with mock.patch.object(vidpress.attention, "lower_right_sdpa", wraps=lower_right_sdpa) as chunks:
        fast = qa.ask(video, QUESTION, press=press, max_new_tokens=8)
    assert chunks.call_count > 0, "degenerate test: no chunk attended over a cache"
    assert fast.token_ids == stock.token_ids
    assert fast.stats.kv_length_per_layer == stock.stats.kv_length_per_layer
    assert len(set(fast.token_ids)) > 1, "degenerate test: the tiny model repeats one token"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_every_chunk_on_cuda_matches_the_masked_stock_attention(tiny_checkpoints):
    """On the GPU the bias dispatches to flash attention (grouped-query heads): bf16 tolerance, chunk by chunk."""
    from vidpress.presses import PivotKVPress
    from tests.test_retake import CHUNK

    qa = VideoQA.from_pretrained(tiny_checkpoints["qwen2_5_vl"], device="cuda")
    checked = []

    def compared(module, query, key, value, *, scaling):
        ours = lower_right_sdpa(module, query, key, value, scaling=scaling)
        mask = bottom_right_causal_mask(query.shape[2], key.shape[2], query.device)
        stock, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=scaling)
        torch.testing.assert_close(ours, stock, rtol=2e-2, atol=2e-2)
        checked.append(query.shape[2])
        return ours

    with mock.patch.object(vidpress.attention, "lower_right_sdpa", compared):
        qa.ask(make_video(), QUESTION, press=PivotKVPress(ratio=0.4, chunk_frames=CHUNK), max_new_tokens=4)
    assert checked, "degenerate test: no chunk attended over a cache"
