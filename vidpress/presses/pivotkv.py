"""PivotKV (ReTaKe): evict each video chunk's KV entries in every decoder layer during chunked prefill.

ReTaKe, "Reducing Temporal and Knowledge Redundancy for Long Video Understanding", arXiv:2412.20504
(https://arxiv.org/abs/2412.20504). The cores are :func:`vidpress.functional.pivotkv_scores` and
:func:`vidpress.functional.keep_indices_from_scores` (together :func:`vidpress.functional.pivotkv_keep`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Iterator

import torch
from transformers.cache_utils import Cache

from vidpress.adapters import LLMInputs, VideoAdapter
from vidpress.functional.pivotkv import dynamic_ratio, keep_indices_from_scores, pivotkv_keep_len, pivotkv_scores
from vidpress.presses.base import Press, PressContext
from vidpress.presses.kv_eviction import attention_hooks, keep_last_entries


@dataclass
class _Run:
    """What the layer hooks of one prefill need: the ratio, the pivots and the video chunk being run."""

    context: PressContext
    ratio: float
    pivot_by_source: torch.Tensor | None  # bool [L_prompt]: pivot flag of every full-prompt token
    segment: LLMInputs | None = None


@dataclass(kw_only=True)  # keyword-only: the inherited chunk_frames would come first
class PivotKVPress(Press):
    """KV stage: prefill the video in chunks and keep, per layer, the chunk's most attended KV entries.

    In every decoder layer, each video chunk's tokens attend to the compressed past and the whole chunk
    (stock SDPA); right after the layer's attention the chunk's own entries are scored from the layer's own
    rotated Q and K of the chunk (``adapter.layer_qk``, no causal mask, summed over queries, averaged over
    heads) and only the top ``max(1, int(ratio * L))`` stay in that layer's cache. Text before the video and
    the question (prefilled after every chunk, so the scores never see it) are not pruned; every visual and
    per-frame text token of a chunk is a candidate. Memory: the cache of one chunk plus the compressed cache.

    Parameters
    ----------
    ratio : fraction of each chunk kept, in (0, 1]; None (the reference) uses the dynamic ratio
        ``min(1, max_input_length / len(LLM input))``.
    max_input_length : target length of the dynamic ratio (32000 for Qwen2-VL in the released configs).
    chunk_frames : video frames per prefill chunk (32 = 16 Qwen-VL temporal units).
    pivots : protect the pivots a :class:`~vidpress.presses.dpselect.DPSelectPress` earlier in the press list
        put in ``context.pivot_mask`` (no effect without one).
    hard_pivots : False (the reference, "soft"): a pivot's score is set to 1.0, the mean score of a chunk, so
        pivots rank above only the below-average entries. True: pivots are kept first while they fit.
    reforge : ReTaKe's position reforge (squeezed temporal ids, continued by later chunks, the question and
        decoding, per layer). Not implemented: it needs per-layer positions during decoding, which the press
        protocol does not offer; True raises NotImplementedError.
    """

    ratio: float | None = None
    max_input_length: int = 32000
    chunk_frames: int = 32
    pivots: bool = True
    hard_pivots: bool = False
    reforge: bool = False
    stages: ClassVar[tuple[str, ...]] = ("kv",)

    def __post_init__(self) -> None:
        if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1] or None, got {self.ratio}")
        if self.max_input_length < 1:
            raise ValueError(f"max_input_length must be >= 1, got {self.max_input_length}")
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {self.chunk_frames}")
        if self.reforge:
            raise NotImplementedError(
                "PivotKVPress(reforge=True) is not implemented: position reforge shifts the positions of later "
                "chunks, of the question and of decoding per layer; kept entries keep their original positions"
            )
        self._run: _Run | None = None

    # -- press protocol ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def prefill_hooks(self, context: PressContext) -> Iterator[None]:
        ratio = self.ratio if self.ratio is not None else dynamic_ratio(len(context.inputs), self.max_input_length)
        self._run = _Run(context=context, ratio=ratio, pivot_by_source=self._pivot_by_source(context))
        try:
            with attention_hooks(context.adapter, self._evict):
                yield
        finally:
            self._run = None

    def before_segment(self, segment: LLMInputs, context: PressContext, *, is_video: bool) -> None:
        self._run.segment = segment if is_video else None

    def after_segment(self, segment: LLMInputs, cache: Cache, context: PressContext, *, is_video: bool) -> None:
        if not is_video:
            return
        run = self._run
        run.segment = None
        stats = context.stats.setdefault("pivotkv", {"ratio": run.ratio, "chunk_lengths": [], "chunk_kept": []})
        stats["chunk_lengths"].append(len(segment))
        stats["chunk_kept"].append(pivotkv_keep_len(len(segment), run.ratio))

    # -- scoring and eviction ------------------------------------------------------------------------------
    def scores(
        self, adapter: VideoAdapter, layer_index: int, hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor], pivots: torch.Tensor | None,
    ) -> torch.Tensor:
        """Float32 [L] PivotKV scores of a chunk in one layer, from the layer's own rotated Q and K.

        ``hidden_states`` [1, L, C] and ``position_embeddings`` are the layer attention's inputs for the chunk;
        ``pivots`` bool [L] or None. Soft pivots score 1.0; with ``hard_pivots`` the scores stay raw (the pivots
        are ranked first when the entries are chosen).
        """
        query, key = adapter.layer_qk(layer_index, hidden_states, position_embeddings)
        return pivotkv_scores(query, key, None if self.hard_pivots else pivots)

    def _evict(
        self, layer_index: int, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
        cache: Cache,
    ) -> None:
        run = self._run
        if run.segment is None:
            return
        length = hidden_states.shape[1]
        if length != len(run.segment):
            raise RuntimeError(f"layer {layer_index} ran {length} tokens in a video chunk of {len(run.segment)}")
        keep_len = pivotkv_keep_len(length, run.ratio)
        if keep_len == length:
            return
        pivots = None
        if run.pivot_by_source is not None:
            pivots = run.pivot_by_source[run.segment.source_index].to(hidden_states.device)
        scores = self.scores(run.context.adapter, layer_index, hidden_states, position_embeddings, pivots)
        keep = keep_indices_from_scores(scores, keep_len, pivots, self.hard_pivots)
        keep_last_entries(cache.layers[layer_index], length, keep)

    def _pivot_by_source(self, context: PressContext) -> torch.Tensor | None:
        """Bool [L_prompt]: which tokens of the full prompt are DPSelect pivots (None without pivots)."""
        if not self.pivots or context.pivot_mask is None:
            return None
        encoded = context.encoded
        flags = torch.zeros(encoded.input_ids.shape[1], dtype=torch.bool)
        flags[encoded.video_token_index.flatten()] = context.pivot_mask.flatten().cpu()
        return flags
