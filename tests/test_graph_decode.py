"""Decoding with the step's state on the device (vidpress.fast.graph_decode): the stock decode's tokens and cache."""

from __future__ import annotations

import copy
from unittest import mock

import pytest
import torch

from vidpress import VideoQA
from vidpress.fast import reserve
from vidpress.fast.graph_decode import DeviceStep, attend_valid_prefix, supports_device_steps
from vidpress.generation import greedy_decode, next_position
from vidpress.presses import AdaReTaKePress, LPCompPress
from tests.test_fast_decode import ALL_FAMILIES
from tests.test_retake import CHUNK, run_prefill

STEPS = 8


def prefilled(qa: VideoQA, press=None):
    """(first logits [1, V], cache, next position) of the test video and question, prefilled with ``press``."""
    run = run_prefill(qa, [press] if press else [])
    return run.logits, run.cache, next_position(run.inputs, run.context.position_shift)


@pytest.mark.parametrize("press", [None, "adaretake", "lpcomp"])
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_device_steps_give_the_stock_tokens_and_cache(every_qa, family, press):
    """The device step (run eagerly on the CPU) against the stock forward per step, on caches whose layers hold
    the same or different numbers of entries; the buffered layers end holding what the stock layers hold."""
    qa = every_qa[family]
    press = {None: None, "adaretake": AdaReTaKePress(chunk_frames=CHUNK, max_input_length=40), "lpcomp": LPCompPress(tokens_per_frame=None)}[press]
    logits, cache, position = prefilled(qa, press)
    stock_cache = copy.deepcopy(cache)
    reserve(cache, STEPS)
    with mock.patch.object(DeviceStep, "__call__", autospec=True, side_effect=DeviceStep.__call__) as steps:
        tokens = greedy_decode(qa.adapter, logits, cache, position, STEPS, on_device=True)
    stock = greedy_decode(qa.adapter, logits, stock_cache, position, STEPS)
    assert steps.call_count == len(tokens) - 1 > 0
    assert tokens == stock
    assert len(set(tokens)) > 1, "degenerate test: the tiny model repeats one token"
    for layer, stock_layer in zip(cache.layers, stock_cache.layers):
        assert layer.write_index is None
        assert layer.keys.shape == stock_layer.keys.shape
        torch.testing.assert_close(layer.keys, stock_layer.keys)
        torch.testing.assert_close(layer.values, stock_layer.values)


def test_the_valid_prefix_is_all_the_attention_reads():
    """Slots after ``used`` (here large finite values, as a reserved buffer holds zeros or stale entries) do
    not reach the output, with grouped-query heads."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, 8, 1, 16, generator=generator)
    key, value = (torch.randn(1, 2, 12, 16, generator=generator) for _ in range(2))
    key[:, :, 7:], value[:, :, 7:] = 50.0, 1e4
    expected = torch.nn.functional.scaled_dot_product_attention(query, key[:, :, :7], value[:, :, :7], scale=0.3, enable_gqa=True)
    output = attend_valid_prefix(query, key, value, torch.tensor([7], dtype=torch.int32), 0.3)
    assert output.shape == (1, 1, 8, 16)
    torch.testing.assert_close(output, expected.transpose(1, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_cuda_graph_replays_give_the_eager_steps_tokens(tiny_checkpoints, family, dtype):
    """On CUDA the step is captured and replayed (flash attention's seqused_k in bf16, the masked path in
    float32): the same tokens as the eager device steps, and in float32 as the stock forward per step."""
    qa = VideoQA.from_pretrained(tiny_checkpoints[family], device="cuda", dtype=dtype)
    logits, cache, position = prefilled(qa, AdaReTaKePress(chunk_frames=CHUNK, max_input_length=40))
    eager_cache, stock_cache = copy.deepcopy(cache), copy.deepcopy(cache)
    with mock.patch("torch.cuda.CUDAGraph.replay", autospec=True, side_effect=torch.cuda.CUDAGraph.replay) as replays:
        graphed = greedy_decode(qa.adapter, logits, reserve(cache, STEPS), position, STEPS, on_device=True)
    assert replays.call_count == len(graphed) - 2 > 0
    with mock.patch("vidpress.fast.graph_decode._run_and_capture", side_effect=lambda step: step() or step):
        eager = greedy_decode(qa.adapter, logits, reserve(eager_cache, STEPS), position, STEPS, on_device=True)
    assert graphed == eager
    if dtype == torch.float32:
        assert graphed == greedy_decode(qa.adapter, logits, stock_cache, position, STEPS)
    for layer, eager_layer in zip(cache.layers, eager_cache.layers):
        assert torch.equal(layer.keys, eager_layer.keys)


def test_unsupported_caches_fall_back_to_the_stock_step(every_qa):
    """Unbuffered layers, or buffers on another device than the model's, fall back to the stock step."""
    qa = every_qa["qwen2_5_vl"]
    logits, cache, position = prefilled(qa)
    with mock.patch.object(DeviceStep, "__call__") as steps:
        greedy_decode(qa.adapter, logits, cache, position, 3, on_device=True)
        reserve(cache, 3)
        with mock.patch.object(type(qa.adapter), "device", new=torch.device("meta")):
            assert not supports_device_steps(qa.adapter, cache)
    assert steps.call_count == 0
    assert supports_device_steps(qa.adapter, cache)
