"""Shared pieces of the kv-stage presses that evict KV entries per decoder layer during chunked prefill.

- :func:`attention_hooks` calls ``hook(layer_index, hidden_states, position_embeddings, cache)`` right after
  every decoder layer's attention module has run (and so after it appended its KV entries to ``cache``),
  with the module's own inputs: a forward hook ``with_kwargs=True`` on ``layer.self_attn``, where the stock
  Qwen-VL decoder layers pass ``hidden_states``, ``position_embeddings`` and ``past_key_values`` as keywords
  (transformers 5.17 to 5.23). The layer's output was computed with every entry, as in the reference; only
  what later tokens see is pruned.
- :func:`keep_last_entries` prunes the last entries of one cache layer in place.
- :func:`rerotate_last_keys` moves the last keys of one cache layer to other rotary positions in place
  (ReTaKe's position reforge).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from vidpress.adapters import VideoAdapter
from vidpress.functional.pivotkv import rotate, unrotate

AttentionHook = Callable[[int, torch.Tensor, tuple[torch.Tensor, torch.Tensor], Cache], None]


@contextlib.contextmanager
def attention_hooks(adapter: VideoAdapter, hook: AttentionHook) -> Iterator[None]:
    """Call ``hook`` after the attention module of every decoder layer of ``adapter``'s LLM.

    ``hook(layer_index, hidden_states [1, L, C], (cos, sin), cache)`` receives the attention module's inputs
    (the normed hidden states and the rotary embeddings of the tokens being run) and the KV cache, which
    already holds this forward's L new entries of that layer last.
    """

    def make(index: int):
        def after_attention(module, args, kwargs, output) -> None:
            hook(index, kwargs["hidden_states"], kwargs["position_embeddings"], kwargs["past_key_values"])

        return after_attention

    handles = [
        layer.self_attn.register_forward_hook(make(index), with_kwargs=True)
        for index, layer in enumerate(adapter.decoder_layers)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def keep_last_entries(layer: CacheLayerMixin, count: int, keep: torch.Tensor) -> None:
    """Of the last ``count`` entries of one cache layer, keep only those at ``keep``; earlier entries stay.

    Parameters
    ----------
    layer : a dynamic cache layer whose ``keys`` / ``values`` are [1, H_kv, S, D] (S >= count).
    count : number of trailing entries concerned (a video chunk, or appended question tokens).
    keep : LongTensor [K], ascending indices in ``[0, count)``; empty drops all ``count`` entries.

    The kept entries are moved into place inside the existing storage and the layer is left holding a view
    of its first S - count + K entries: no second copy of the cache is allocated (the next update
    concatenates into a fresh tensor anyway).
    """
    if getattr(layer, "is_sliding", False):
        raise TypeError("KV eviction needs a full-attention cache layer, not a sliding-window one")
    length = layer.keys.shape[2]
    if not 0 < count <= length:
        raise ValueError(f"count must be in [1, {length}], got {count}")
    start = length - count
    keep = keep.to(layer.keys.device)
    for name in ("keys", "values"):
        states = getattr(layer, name)
        states[:, :, start : start + len(keep)] = states[:, :, start + keep]
        setattr(layer, name, states[:, :, : start + len(keep)])


def rerotate_last_keys(
    layer: CacheLayerMixin, old: tuple[torch.Tensor, torch.Tensor], new: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Re-rotate the last ``K`` keys of one cache layer from the rotary embedding ``old`` to ``new``, in place.

    Parameters
    ----------
    layer : a dynamic cache layer whose ``keys`` are [1, H_kv, S, D] (S >= K).
    old : (cos, sin) [1, K, D] that rotated the last ``K`` keys (the rows of the kept entries).
    new : (cos, sin) [1, K, D] of the positions the keys are moved to.

    The keys are un-rotated exactly (:func:`~vidpress.functional.pivotkv.unrotate`, which also undoes an
    attention scaling carried by cos/sin) and rotated again (:func:`~vidpress.functional.pivotkv.rotate`).
    """
    count = old[0].shape[-2]
    keys = layer.keys[:, :, layer.keys.shape[2] - count :]
    plain = unrotate(keys, old[0].unsqueeze(1), old[1].unsqueeze(1))
    keys.copy_(rotate(plain, new[0].unsqueeze(1), new[1].unsqueeze(1)))
