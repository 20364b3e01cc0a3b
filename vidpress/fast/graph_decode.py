"""Greedy decoding with the whole step on the device: one CUDA graph replayed per token.

With the KV buffers of :mod:`vidpress.fast.decode`, a decode step of Qwen2.5-VL-7B at 1024 frames still spent
about 60 ms of CPU (some 900 kernel launches through transformers' Python) for 7 ms of GPU work on an H200
(``scripts/profile_stage.py``). Here no host value changes from one step to the next: the token fed, its
position and each layer's number of entries are device tensors that the step reads and advances itself. Each
:class:`~vidpress.fast.decode.BufferedLayer` writes its new entry at a device-held slot and hands its whole
buffer to the attention, which reads only the valid prefix (flash attention's ``seqused_k`` on CUDA, a
boolean mask elsewhere). The step is captured once as a CUDA graph after one eager step, then replayed: one
launch and one host read (the new token, to stop at EOS) per token.

The step runs the stock modules: the token embedding, the LLM's own forward and decoder layers, the output
head. Only the cache write and the attention call differ, and they compute the same thing over the same
entries. Faithful form: :func:`vidpress.generation.greedy_decode` with ``on_device=False`` (the stock forward
per step); the CPU tests run the device step eagerly and compare its tokens and logits with that.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache

from vidpress.adapters import VideoAdapter
from vidpress.attention import NAME as PER_LAYER_SDPA, step_attention
from vidpress.fast.decode import BufferedLayer

FLASH_DTYPES = (torch.float16, torch.bfloat16)


def supports_device_steps(adapter: VideoAdapter, cache: Cache) -> bool:
    """True when the LLM attends through ``vidpress_sdpa`` and every cache layer is a :class:`BufferedLayer` on
    the model's device (a model split over several devices decodes with the stock forward per step)."""
    attention = adapter.text_config._attn_implementation
    return attention == PER_LAYER_SDPA and all(
        type(layer) is BufferedLayer and layer.key_buffer.device == adapter.device for layer in cache.layers
    )


def attend_valid_prefix(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, used: torch.Tensor, scaling: float | None,
    bounds: torch.Tensor | None = None,
) -> torch.Tensor:
    """[1, 1, H, D] attention of one query [1, H, 1, D] to the first ``used`` ([1] int32, on the device)
    entries of key/value buffers [1, H_kv, C, D] (grouped-query heads read each entry once).

    ``bounds`` ([0, C, 0, 1] int32 on CUDA: the keys' and the query's cumulative lengths) selects flash
    attention's variable-length kernel, whose ``seqused_k`` bounds the keys read; without it, SDPA with a
    boolean mask over the C slots.
    """
    if bounds is not None:
        output = torch.ops.aten._flash_attention_forward(
            query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1), bounds[2:], bounds[:2],
            1, key.shape[2], 0.0, False, False, scale=scaling, seqused_k=used,
        )[0]
        return output.unsqueeze(0)
    valid = torch.arange(key.shape[2], device=key.device) < used
    groups = query.shape[1] // key.shape[1]
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=valid.view(1, 1, 1, -1), scale=scaling, enable_gqa=groups > 1)
    return output.transpose(1, 2)


class DeviceStep:
    """One greedy decoding step of ``adapter``'s LLM over ``cache``, with its state in device tensors.

    Attributes
    ----------
    token : [1, 1] long, the token the step feeds; the step overwrites it with the next greedy token.
    positions : [P, 1, 1] long, its position on each axis (P = ``adapter.position_axes``).
    lengths : [layers] long, entries each layer holds before the step.
    """

    def __init__(self, adapter: VideoAdapter, cache: Cache, token: int, position: int):
        device = adapter.device
        self.adapter, self.cache = adapter, cache
        self.token = torch.tensor([[token]], device=device)
        self.positions = torch.full((adapter.position_axes, 1, 1), position, device=device)
        self.lengths = torch.tensor([layer.get_seq_length() for layer in cache.layers], device=device)
        self.used = torch.zeros(len(cache.layers), dtype=torch.int32, device=device)
        flash = device.type == "cuda" and adapter.model.dtype in FLASH_DTYPES
        self.bounds = [
            torch.tensor([0, layer.capacity, 0, 1], dtype=torch.int32, device=device) if flash else None for layer in cache.layers
        ]
        self.language_model = adapter.inner.language_model
        self.embed = adapter.model.get_input_embeddings()
        self.head = adapter.model.get_output_embeddings()

    def __call__(self) -> None:
        """Write one KV entry per layer, put the next greedy token in ``token``, advance positions and lengths."""
        self.used.copy_(self.lengths + 1)
        positions = self.positions if self.adapter.position_axes > 1 else self.positions[0]
        with step_attention(self._attend):
            hidden = self.language_model(
                inputs_embeds=self.embed(self.token), position_ids=positions, past_key_values=self.cache, use_cache=True
            ).last_hidden_state
        self.token.copy_(self.head(hidden[:, -1:]).argmax(-1))
        self.positions += 1
        self.lengths += 1

    def _attend(self, module: nn.Module, query, key, value, scaling) -> torch.Tensor:
        index = module.layer_idx
        return attend_valid_prefix(query, key, value, self.used[index : index + 1], scaling, self.bounds[index])

    @contextlib.contextmanager
    def writing_on_device(self) -> Iterator[None]:
        """Inside, the cache layers write at ``lengths``; after, their prefix views cover what was written."""
        layers = self.cache.layers
        for index, layer in enumerate(layers):
            layer.write_index = self.lengths[index : index + 1]
        try:
            yield
        finally:
            for layer, length in zip(layers, self.lengths.tolist()):
                layer.write_index = None
                layer.keys, layer.values = layer.key_buffer[:, :, :length], layer.value_buffer[:, :, :length]


def decode_on_device(adapter: VideoAdapter, cache: Cache, token: int, position: int, steps: int, stop: set[int]) -> list[int]:
    """Up to ``steps`` greedy tokens after ``token`` (fed at ``position``), ending after one in ``stop``.

    On CUDA, when there is more than one step, the step is captured as a CUDA graph after its first, eager run
    and replayed (if capturing fails, the steps run eagerly, with a warning); elsewhere every step runs eagerly.
    """
    step = DeviceStep(adapter, cache, token, position)
    graph = adapter.device.type == "cuda" and steps > 1
    run = step
    tokens: list[int] = []
    with step.writing_on_device():
        for index in range(steps):
            if graph and index == 0:
                run = _run_and_capture(step)
            else:
                run()
            tokens.append(int(step.token))
            if tokens[-1] in stop:
                break
    return tokens


def _run_and_capture(step: DeviceStep) -> Callable[[], None]:
    """Run ``step`` once (on a side stream, the warm-up a capture wants) and return its CUDA graph's replay
    (``step`` itself if capturing fails)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
    cuda_graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(cuda_graph, stream=stream):
            step()
    except RuntimeError as error:
        warnings.warn(f"decoding without a CUDA graph: capturing the step failed ({error})", stacklevel=3)
        return step
    finally:
        torch.cuda.current_stream().wait_stream(stream)
    return cuda_graph.replay
