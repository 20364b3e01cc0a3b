"""Decoding into reserved KV buffers (vidpress.fast.decode): the stock decode's tokens, one entry written per step."""

from __future__ import annotations

from typing import Callable
from unittest import mock

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers.cache_utils import DynamicCache, DynamicLayer

from vidpress.fast import BufferedLayer, reserve
from vidpress.generation import next_position
from vidpress.presses import AdaReTaKePress, LPCompPress, PivotKVPress, Press, QCCompPress, ReTaKePress
from vidpress.presses.kv_eviction import keep_last_entries
from vidpress.tiny_families import FAMILIES as FRAMEWISE_FAMILIES
from tests.test_qccomp import SMALL
from tests.test_retake import CHUNK, QUESTION, make_video

ALL_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", *FRAMEWISE_FAMILIES)
PRESSES: dict[str, Callable[[int], Press | None]] = {  # built from the LLM input length without a press
    "none": lambda length: None,
    "pivotkv": lambda length: PivotKVPress(ratio=0.4, chunk_frames=CHUNK),
    "adaretake": lambda length: AdaReTaKePress(chunk_frames=CHUNK, max_input_length=int(0.4 * length)),
    "retake": lambda length: ReTaKePress(ratio=0.4, chunk_frames=CHUNK),
    "lpcomp": lambda length: LPCompPress(tokens_per_frame=None),
    "qccomp": lambda length: QCCompPress(n_select=6, **SMALL),
}


@pytest.mark.parametrize("name", PRESSES)
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_tokens_equal_the_stock_decode(every_qa, family, name):
    qa, video = every_qa[family], make_video()
    press = PRESSES[name](qa.ask(video, QUESTION, max_new_tokens=1).stats.llm_input_length)
    fast = qa.ask(video, QUESTION, press=press, max_new_tokens=10)
    with mock.patch.object(qa, "fast_decode", False):  # the stock dynamic cache
        stock = qa.ask(video, QUESTION, press=press, max_new_tokens=10)
    assert fast.token_ids == stock.token_ids
    assert fast.stats.kv_length_per_layer == stock.stats.kv_length_per_layer
    assert len(set(fast.token_ids)) > 1, "degenerate test: the tiny model repeats one token"
    if name in ("adaretake", "lpcomp"):
        assert len(set(fast.stats.kv_length_per_layer)) > 1, "degenerate test: every layer keeps as many entries"


@pytest.mark.parametrize("press", [None, PivotKVPress(ratio=0.4, chunk_frames=CHUNK)], ids=["none", "pivotkv"])
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_ask_many_reuses_the_video_prefix(every_qa, family, press):
    qa, video = every_qa[family], make_video()
    questions = [QUESTION, "How many times did the red circle appear?", "Which colour came first?"]
    many = qa.ask_many(video, questions, press=press, max_new_tokens=6)
    with mock.patch.object(qa, "fast_decode", False):  # the stock dynamic cache
        stock = qa.ask_many(video, questions, press=press, max_new_tokens=6)
    single = [qa.ask(video, question, press=press, max_new_tokens=6) for question in questions]
    assert [a.token_ids for a in many] == [a.token_ids for a in stock] == [a.token_ids for a in single]
    assert [a.stats.kv_length_per_layer for a in many] == [a.stats.kv_length_per_layer for a in single]


class LargestOutput(TorchDispatchMode):
    """Records the number of elements of the largest new tensor any operation returns (views are not new)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        sizes = [
            t.numel() for t in tree_leaves(output)
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs
        ]
        self.largest = max([self.largest, *sizes])
        return output


@pytest.mark.parametrize("fast", [True, False], ids=["reserved", "stock"])
@pytest.mark.parametrize("family", ["qwen2_5_vl", "internvl"])
def test_a_step_writes_one_entry_per_layer_in_place(every_qa, family, fast):
    """With reserved buffers no decode step produces a tensor as large as one layer's keys (the stock step
    concatenates every layer's whole cache), and the buffers stay where they are."""
    adapter = every_qa[family].adapter
    inputs = adapter.build_inputs(adapter.encode(adapter.prepare(make_video(), QUESTION)))
    cache = adapter.new_cache()
    with torch.no_grad():
        logits = adapter.forward(inputs, cache)[:, -1]
    if fast:
        reserve(cache, 8)
    buffers = [(layer.key_buffer.data_ptr(), layer.value_buffer.data_ptr()) for layer in cache.layers] if fast else []
    length = cache.get_seq_length()
    layer_size = cache.layers[0].keys.numel()
    for step in range(4):
        with torch.no_grad(), LargestOutput() as mode:
            token = adapter.text_inputs([int(logits.argmax(-1))], next_position(inputs) + step)
            logits = adapter.forward(token, cache)[:, -1]
        assert [cache.get_seq_length(i) for i in range(len(cache.layers))] == [length + step + 1] * len(cache.layers)
        assert (mode.largest < layer_size) == fast
        if fast:
            assert [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in cache.layers] == buffers


def random_entries(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values [1, 2, count, 4]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 2, count, 4, generator=generator), torch.randn(1, 2, count, 4, generator=generator)


def test_buffered_layer_follows_in_place_pruning():
    """A press's keep_last_entries on a buffered layer leaves what it leaves on a dynamic one."""
    dynamic, buffered = DynamicLayer(), BufferedLayer(*random_entries(5, 0), room=6)
    dynamic.update(*random_entries(5, 0))
    for layer in (dynamic, buffered):
        layer.update(*random_entries(4, 1))
        keep_last_entries(layer, 4, torch.tensor([0, 3]))
        keys, values = layer.update(*random_entries(1, 2))
    assert torch.equal(buffered.keys, dynamic.keys) and torch.equal(buffered.values, dynamic.values)
    assert buffered.get_seq_length() == 8 and buffered.capacity == 11
    assert keys.data_ptr() == buffered.key_buffer.data_ptr()
    buffered.update(*random_entries(3, 3))
    with pytest.raises(RuntimeError, match="full"):
        buffered.update(*random_entries(1, 4))


def test_reserve_in_place_or_on_a_copy():
    cache = DynamicCache()
    for index in range(2):
        cache.update(*random_entries(3 + index, index), index)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    copied = reserve(cache, 2, copy=True)
    copied.update(*random_entries(2, 5), 0)
    assert all(type(layer) is DynamicLayer for layer in cache.layers), "the source of a copy was changed"
    assert [layer.get_seq_length() for layer in copied.layers] == [5, 4]
    assert torch.equal(copied.layers[0].keys[:, :, :3], before[0][0])
    assert reserve(cache, 1) is cache and all(isinstance(layer, BufferedLayer) for layer in cache.layers)
    for layer, (keys, values) in zip(cache.layers, before):
        assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)
        assert layer.capacity == keys.shape[-2] + 1
    with pytest.raises(RuntimeError, match="outside its buffers"):
        cache.layers[0].keys = cache.layers[0].keys.clone()
        cache.update(*random_entries(1, 6), 0)
