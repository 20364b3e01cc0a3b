"""PivotKV (ReTaKe): evict each video chunk's KV entries in every decoder layer during chunked prefill.

ReTaKe, "Reducing Temporal and Knowledge Redundancy for Long Video Understanding", arXiv:2412.20504
(https://arxiv.org/abs/2412.20504). The cores are :func:`vidpress.functional.pivotkv_scores` and
:func:`vidpress.functional.keep_indices_from_scores` (together :func:`vidpress.functional.pivotkv_keep`);
position reforge uses :func:`vidpress.functional.reforge_temporal_ids` and
:func:`~vidpress.functional.pivotkv.unrotate` / :func:`~vidpress.functional.pivotkv.rotate`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Iterator

import torch
from transformers.cache_utils import Cache

from vidpress.adapters import LLMInputs, VideoAdapter
from vidpress.functional.pivotkv import (
    dynamic_ratio,
    keep_indices_from_scores,
    pivotkv_keep_len,
    pivotkv_scores,
    reforge_temporal_ids,
    unrotate,
)
from vidpress.presses.base import Press, PressContext
from vidpress.presses.kv_eviction import attention_hooks, keep_last_entries, rerotate_last_keys


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
    reforge : ReTaKe's position reforge (the reference's setting for LVBench and VideoMME), M-RoPE models only
        (Qwen2/2.5/3-VL; a model with 1-D positions raises ValueError when the prefill starts). See below.

    Position reforge
    ----------------
    In every layer the chunk is scored from its un-rotated Q and K (no positions), and the kept keys are
    re-rotated with squeezed temporal ids ``t0 + floor((t - t0) * K / L)`` (:func:`reforge_temporal_ids`;
    ``t0`` the chunk's first temporal id, ``K = max(1, int(ratio * L))``; height and width ids untouched).
    Later chunks run on the squeezed timeline: each is shifted on the temporal axis so that it follows the
    squeezed id of the previous chunk's largest temporal id with the original gap (1 on Qwen2-VL:
    "continuous"). The question (and the decoded tokens after it) is shifted on every axis so that its first
    id lands where that id lies on the squeezed timeline (:func:`squeezed_id`): after the video, as in the
    reference's positions (transformers 4.x), it follows the squeezed end; transformers 5.x Qwen2/2.5-VL
    place text after a video at ``start + max(H', W')``, inside the video's temporal range, and it is mapped
    there. The shift goes through ``context.position_shift`` (set in ``before_segment``, applied by the prefill
    and by decoding); ``context.stats["pivotkv"]`` keeps ``temporal_shift`` and the per-chunk ``timeline``.

    Deviation from the reference, needed for positions shared by all layers: the reference squeezes from the
    smallest *kept* id and continues after each layer's last *kept* id, so later positions differ per layer.
    Here ``t0`` and the continuation point come from the chunk's first and largest ids, kept or not: since
    ``K`` is the same in every layer, the next chunk's first id is the same in every layer, and the stock
    forward (one position tensor for all layers) runs unchanged. The reference's per-layer form would need
    per-layer positions for later chunks, the question and decoding, and is not offered.
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
        self._run: _Run | None = None

    # -- press protocol ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def prefill_hooks(self, context: PressContext) -> Iterator[None]:
        if self.reforge and context.adapter.position_axes != 3:
            raise ValueError(
                f"PivotKVPress(reforge=True) squeezes the temporal axis of M-RoPE positions; "
                f"{type(context.adapter).__name__} has {context.adapter.position_axes}-D positions"
            )
        ratio = self.ratio if self.ratio is not None else dynamic_ratio(len(context.inputs), self.max_input_length)
        self._run = _Run(context=context, ratio=ratio, pivot_by_source=self._pivot_by_source(context))
        try:
            with attention_hooks(context.adapter, self._evict):
                yield
        finally:
            self._run = None

    def before_segment(self, segment: LLMInputs, context: PressContext, *, is_video: bool) -> None:
        if self.reforge:
            context.position_shift = self._reforge_shift(segment, context, is_video)
        self._run.segment = segment if is_video else None

    def after_segment(self, segment: LLMInputs, cache: Cache, context: PressContext, *, is_video: bool) -> None:
        if not is_video:
            return
        run = self._run
        run.segment = None
        stats = context.stats.setdefault("pivotkv", {"ratio": run.ratio, "chunk_lengths": [], "chunk_kept": []})
        keep_len = pivotkv_keep_len(len(segment), run.ratio)
        stats["chunk_lengths"].append(len(segment))
        stats["chunk_kept"].append(keep_len)
        if self.reforge:  # ``segment`` ran shifted: its temporal ids are on the squeezed timeline
            shift = stats.get("temporal_shift", 0)
            first, last = int(segment.positions[0, 0, 0]), int(segment.positions[0, 0].max())
            stats.setdefault("timeline", []).append([first - shift, last - shift, first, keep_len, len(segment)])
            stats["temporal_shift"] = shift + (last - first) * keep_len // len(segment) - (last - first)

    # -- position reforge ----------------------------------------------------------------------------------
    @staticmethod
    def _reforge_shift(segment: LLMInputs, context: PressContext, is_video: bool) -> torch.Tensor:
        """[3] shift of the next segment: temporal only for a video chunk, every axis for text.

        A text segment (all axes equal) moves to where its first id lies on the squeezed timeline.
        """
        stats = context.stats.get("pivotkv", {})
        if is_video:
            return torch.tensor([stats.get("temporal_shift", 0), 0, 0])
        first = int(segment.positions[0, 0, 0])
        return torch.tensor([squeezed_id(first, stats.get("timeline", [])) - first] * 3)

    @staticmethod
    def reforged_positions(positions: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """[3, 1, K] positions of the kept entries ``keep`` [K] of a chunk run at ``positions`` [3, 1, L].

        The temporal ids from the chunk's first one on are squeezed towards it by ``K / L`` (ids below it,
        such as the closing vision-end token of transformers 5.x Qwen2/2.5-VL, stay); height and width stay.
        """
        temporal = positions[0, 0]
        kept = positions[:, :, keep].clone()
        first = temporal[0]
        squeezed = reforge_temporal_ids(temporal, keep, first)
        kept[0, 0] = torch.where(kept[0, 0] >= first, squeezed, kept[0, 0])
        return kept

    # -- scoring and eviction ------------------------------------------------------------------------------
    def scores(
        self, adapter: VideoAdapter, layer_index: int, hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor], pivots: torch.Tensor | None,
    ) -> torch.Tensor:
        """Float32 [L] PivotKV scores of a chunk in one layer, from the layer's own rotated Q and K.

        ``hidden_states`` [1, L, C] and ``position_embeddings`` are the layer attention's inputs for the chunk;
        ``pivots`` bool [L] or None. Soft pivots score 1.0; with ``hard_pivots`` the scores stay raw (the pivots
        are ranked first when the entries are chosen). With ``reforge`` Q and K are un-rotated first.
        """
        query, key = adapter.layer_qk(layer_index, hidden_states, position_embeddings)
        if self.reforge:
            cos, sin = (e.unsqueeze(1) for e in position_embeddings)
            query, key = unrotate(query, cos, sin), unrotate(key, cos, sin)
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
        if self.reforge:
            self._reforge_keys(cache, layer_index, hidden_states, position_embeddings, keep)

    def _reforge_keys(
        self, cache: Cache, layer_index: int, hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor], keep: torch.Tensor,
    ) -> None:
        """Re-rotate the kept keys of the chunk (the last ``len(keep)`` of the layer) at their squeezed ids."""
        run = self._run
        positions = run.segment.positions + run.context.position_shift.view(-1, 1, 1)
        new_positions = self.reforged_positions(positions, keep.cpu()).to(hidden_states.device)
        rotary = run.context.adapter.inner.language_model.rotary_emb
        new = rotary(hidden_states, new_positions)
        old = tuple(e[:, keep] for e in position_embeddings)
        rerotate_last_keys(cache.layers[layer_index], old, new)

    def _pivot_by_source(self, context: PressContext) -> torch.Tensor | None:
        """Bool [L_prompt]: which tokens of the full prompt are DPSelect pivots (None without pivots)."""
        if not self.pivots or context.pivot_mask is None:
            return None
        encoded = context.encoded
        flags = torch.zeros(encoded.input_ids.shape[1], dtype=torch.bool)
        flags[encoded.video_token_index.flatten()] = context.pivot_mask.flatten().cpu()
        return flags


def squeezed_id(temporal_id: int, timeline: list[list[int]]) -> int:
    """Where ``temporal_id`` of the prompt lies on the squeezed timeline of the video chunks reforged so far.

    ``timeline`` holds one ``[first, last, new_first, K, L]`` per chunk, in order: the chunk's first and
    largest original temporal ids, the id its first token ran at, and its kept and total lengths. Inside a
    chunk an id is squeezed by ``K / L`` from ``new_first``; after it, ids are translated with its end.
    """
    for first, last, new_first, keep, length in reversed(timeline):
        if temporal_id >= first:
            return new_first + (min(temporal_id, last) - first) * keep // length + max(0, temporal_id - last)
    return temporal_id
