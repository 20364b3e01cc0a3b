"""KV cache layers with room reserved for decoding: each step writes one entry per layer, in place.

The stock ``DynamicLayer.update`` appends by ``torch.cat`` of the whole layer, so every decoded token copies
the whole KV cache (7.9 GiB read and written per token for Qwen2.5-VL-7B at 2048 frames) and allocates a new
block per layer. :func:`reserve` moves each layer's entries, once, into buffers of capacity ``length + room``;
:class:`BufferedLayer` then writes the new entries after the valid prefix and hands the attention views of
that prefix, so a step reads every KV entry once (inside SDPA) and copies none.

Everything else stays stock: the cache object is still the ``DynamicCache`` the prefill filled (only its
layer objects change), its layers report their own lengths (so per-layer lengths left by AdaReTaKe or LP-Comp
work through ``vidpress_sdpa`` as before), the layers are not "compileable" (so transformers still skips the
decode mask and grouped-query attention runs as SDPA ``enable_gqa`` without repeating keys), and the presses'
in-place edits (``keep_last_entries``, ``rerotate_last_keys``) keep working, as they only move entries inside
the prefix view and shorten it. The tokens are the stock path's: the same attention runs on the same values.

Attention backend: :func:`decode_attention` puts flash attention first for the one-token steps on CUDA.
PyTorch 2.11 picks cuDNN attention first on Hopper, which builds an execution plan for each new key length:
on one H200, Qwen2.5-VL-7B at 1024 frames spent 44 of its 74 ms of CPU per decode step in
``_cudnn_attention_forward`` (1.6 ms a call, 7 ms of GPU work per step), and a cache whose layers have
different lengths (LP-Comp: 660 ms per token) builds a plan per layer per step. Flash attention takes the
same inputs (no mask, grouped-query heads natively) with no plan to build.

Faithful form: the stock dynamic layers and backend choice (``VideoQA(fast_decode=False)``). Fast form: this module.
"""

from __future__ import annotations

import contextlib
import copy as copy_module

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.cache_utils import Cache, DynamicLayer

DECODE_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]


class BufferedLayer(DynamicLayer):
    """A full-attention cache layer whose entries live at the start of preallocated buffers.

    ``keys`` / ``values`` are always views [B, H_kv, S, D] of the first S slots of ``key_buffer`` /
    ``value_buffer`` [B, H_kv, capacity, D]; :meth:`update` writes after them, in place.

    Parameters
    ----------
    keys, values : [B, H_kv, S, D] the layer's entries so far (copied in).
    room : free slots after them (tokens the layer may still receive).
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int):
        super().__init__()
        length = keys.shape[-2]
        self.key_buffer = keys.new_empty(*keys.shape[:-2], length + room, keys.shape[-1])
        self.value_buffer = values.new_empty(*values.shape[:-2], length + room, values.shape[-1])
        self.key_buffer[:, :, :length] = keys
        self.value_buffer[:, :, :length] = values
        self.key_buffer[:, :, length:] = 0  # finite free slots: a masked attention over the whole buffer stays finite
        self.value_buffer[:, :, length:] = 0
        self.dtype, self.device = keys.dtype, keys.device
        self.keys, self.values = self.key_buffer[:, :, :length], self.value_buffer[:, :, :length]
        self.is_initialized = True
        self.write_index: torch.Tensor | None = None  # [1] long on the device: static steps (see update)

    @property
    def capacity(self) -> int:
        return self.key_buffer.shape[-2]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new entries [B, H_kv, q, D] after the prefix; return the prefix views [B, H_kv, S + q, D].

        With ``write_index`` set (the static steps of :mod:`vidpress.fast.graph_decode`), write the one new
        entry at that device-held slot instead and return the whole buffers [B, H_kv, capacity, D]: no host
        value decides anything, so the step can be replayed as a CUDA graph; the prefix views are left as
        they were until the steps end (``graph_decode`` sets them then).
        """
        if self.write_index is not None:
            self.key_buffer.index_copy_(2, self.write_index, key_states)
            self.value_buffer.index_copy_(2, self.write_index, value_states)
            return self.key_buffer, self.value_buffer
        if self.keys.data_ptr() != self.key_buffer.data_ptr() or self.values.data_ptr() != self.value_buffer.data_ptr():
            raise RuntimeError("the layer's keys/values were replaced by tensors outside its buffers")
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"cache layer full: {end} entries do not fit its {self.capacity} slots")
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values


def reserve(cache: Cache, room: int, *, copy: bool = False) -> Cache:
    """``cache`` with every filled full-attention layer moved into a :class:`BufferedLayer` with ``room`` free slots.

    In place by default: the layers are replaced one after the other, so the old tensors are freed as it goes
    (peak memory: the cache plus one layer). ``copy=True`` leaves ``cache`` untouched and returns a new cache
    (what ``VideoQA.ask_many`` needs to reuse a video prefix for several questions). Other layer types
    (sliding-window, not yet filled) are kept as they are (copied when ``copy``).
    """
    if room < 0:
        raise ValueError(f"room must be >= 0, got {room}")
    target = copy_module.copy(cache) if copy else cache
    if copy:
        target.layers = list(cache.layers)
    for index, layer in enumerate(cache.layers):
        if type(layer) in (DynamicLayer, BufferedLayer) and layer.is_initialized and layer.keys.numel():
            target.layers[index] = BufferedLayer(layer.keys, layer.values, room)
        elif copy:
            target.layers[index] = copy_module.deepcopy(layer)
    return target


def decode_attention(device: torch.device) -> contextlib.AbstractContextManager:
    """SDPA backends for decoding on ``device``: on CUDA flash first, then efficient, cuDNN and math (see the
    module docstring); elsewhere PyTorch's own choice."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return sdpa_kernel(DECODE_BACKENDS, set_priority=True)
