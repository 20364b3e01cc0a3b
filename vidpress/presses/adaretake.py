"""AdaReTaKe: question-guided KV eviction per video chunk with temporal (per chunk) and layer budgets.

AdaReTaKe, "Adaptively Reducing Temporal and Knowledge Redundancy for Efficient Long Video Understanding",
arXiv:2503.12559 (https://arxiv.org/abs/2503.12559), the follow-up of ReTaKe. The cores are
:func:`vidpress.functional.prompt_guided_scores`, :func:`~vidpress.functional.temporal_budgets` and
:func:`~vidpress.functional.layer_budgets`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Iterator

import torch
from transformers.cache_utils import Cache

from vidpress.adapters import LLMInputs
from vidpress.functional.adaretake import layer_budgets, prompt_guided_scores, temporal_budgets
from vidpress.functional.pivotkv import dynamic_ratio, keep_indices_from_scores, pivotkv_keep_len
from vidpress.presses.base import Press, PressContext
from vidpress.presses.kv_eviction import attention_hooks, keep_last_entries


@dataclass
class _Run:
    """State of one prefill: the ratios, the question tokens, and the chunk being scored."""

    context: PressContext
    base_ratio: float
    chunk_ratios: dict[int, float]  # chunk index (first unit // units per chunk) -> keep ratio
    unit_of_source: torch.Tensor  # long [L_prompt]: temporal unit of each visual token, -1 elsewhere
    question: LLMInputs  # the question tokens appended to every chunk (their last max_guide_length)
    scored_length: int | None = None  # length of the chunk during its question pass, else None
    scores: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)


@dataclass(kw_only=True)  # keyword-only: the inherited chunk_frames would come first
class AdaReTaKePress(Press):
    """KV stage: after each video chunk, keep per layer the chunk's KV entries the question attends to most.

    The video is prefilled in chunks of ``chunk_frames`` frames (text before the video and the question are
    never pruned). After a chunk is prefilled, the question (the text after the video, its last
    ``max_guide_length`` tokens) is run after it, at positions continuing right after the chunk's last
    temporal id, as the reference appends it to the chunk: in every layer its rotated queries score the
    chunk's keys (``prompt_guided_scores``: softmax over the chunk keys, summed over question rows, mean over
    heads) and its own KV entries are removed right away. Then each layer keeps its top entries:

    - temporal budget: chunk ratio ``r_c`` from ``temporal_budgets`` on the chunks' mean visual features
      (novel chunks keep more, sum of ``r_c`` = base ratio x number of chunks);
    - layer budget: ``layer_budgets`` of the chunk's scores in all layers (AdaKV-like), so layers keep
      different numbers of entries (``vidpress_sdpa`` gives each layer its own causal mask).

    The base ratio is ``min(1, max_input_length / len(LLM input))``; at 1 nothing is run or pruned. Running the
    question after the chunk with the cache is the same computation as appending it to the chunk's forward
    (causal attention), without touching the chunk's own forward.

    Parameters
    ----------
    max_input_length : target length of the base ratio (16000 in the released configs).
    chunk_frames : video frames per prefill chunk (32 in the released configs).
    max_guide_length : question tokens appended to each chunk (its last ones); None (the reference default)
        appends the whole text after the video.
    temporal : adapt each chunk's ratio to its novelty (False: every chunk uses the base ratio).
    layer : adapt each layer's budget (False: every layer keeps ``max(1, int(r_c * L))``).

    Not implemented: the reference's position reforge (see :class:`~vidpress.presses.pivotkv.PivotKVPress`).
    """

    max_input_length: int = 16000
    chunk_frames: int = 32
    max_guide_length: int | None = None
    temporal: bool = True
    layer: bool = True
    stages: ClassVar[tuple[str, ...]] = ("kv",)

    def __post_init__(self) -> None:
        if self.max_input_length < 1:
            raise ValueError(f"max_input_length must be >= 1, got {self.max_input_length}")
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {self.chunk_frames}")
        if self.max_guide_length is not None and self.max_guide_length < 1:
            raise ValueError(f"max_guide_length must be >= 1 or None, got {self.max_guide_length}")
        self._run: _Run | None = None

    # -- press protocol ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def prefill_hooks(self, context: PressContext) -> Iterator[None]:
        base_ratio = dynamic_ratio(len(context.inputs), self.max_input_length)
        if base_ratio >= 1.0:
            yield
            return
        self._run = self._start(context, base_ratio)
        try:
            with attention_hooks(context.adapter, self._score):
                yield
        finally:
            self._run = None

    def after_segment(self, segment: LLMInputs, cache: Cache, context: PressContext, *, is_video: bool) -> None:
        run = self._run
        if run is None or not is_video:
            return
        length = len(segment)
        ratio = run.chunk_ratios[self._chunk_index(run, segment)]
        scores = self._question_scores(run, segment, cache)  # [layers, L]
        if self.layer:
            keeps = layer_budgets(scores, ratio)
        else:
            keeps = [pivotkv_keep_len(length, ratio)] * len(scores)
        for layer_index, keep_len in enumerate(keeps):
            keep = keep_indices_from_scores(scores[layer_index], keep_len)
            keep_last_entries(cache.layers[layer_index], length, keep)
        stats = context.stats.setdefault(
            "adaretake", {"base_ratio": run.base_ratio, "chunk_ratios": [], "chunk_lengths": [], "chunk_kept": []}
        )
        stats["chunk_ratios"].append(ratio)
        stats["chunk_lengths"].append(length)
        stats["chunk_kept"].append(keeps)

    # -- budgets and scores ------------------------------------------------------------------------------
    def _start(self, context: PressContext, base_ratio: float) -> _Run:
        encoded, inputs = context.encoded, context.inputs
        units = encoded.num_units
        unit_of_source = torch.full((encoded.input_ids.shape[1],), -1, dtype=torch.long)
        unit_of_source[encoded.video_token_index] = torch.arange(units).unsqueeze(1)
        question_start = int(torch.searchsorted(inputs.source_index, torch.tensor(encoded.question_start)))
        if self.max_guide_length is not None:
            question_start = max(question_start, len(inputs) - self.max_guide_length)
        return _Run(
            context=context,
            base_ratio=base_ratio,
            chunk_ratios=self._chunk_ratios(context, base_ratio),
            unit_of_source=unit_of_source,
            question=inputs.slice(question_start, len(inputs)),
        )

    def _units_per_chunk(self, context: PressContext) -> int:
        return max(1, self.chunk_frames // context.adapter.temporal_patch_size)

    def _chunk_ratios(self, context: PressContext, base_ratio: float) -> dict[int, float]:
        """Keep ratio of every chunk that has kept visual tokens, keyed by chunk index."""
        features = context.encoded.features  # [T', N, D]
        keep = context.inputs.video_keep.to(features.device)  # [T', N]
        kept_units = keep.any(1)
        frames = (features * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)  # [T', D]
        step = self._units_per_chunk(context)
        chunk_of_unit = torch.arange(len(frames), device=features.device) // step
        chunks = [c for c in chunk_of_unit.unique().tolist() if kept_units[chunk_of_unit == c].any()]
        if not self.temporal:
            return dict.fromkeys(chunks, base_ratio)
        chunk_frames = [frames[(chunk_of_unit == c) & kept_units] for c in chunks]
        return dict(zip(chunks, temporal_budgets(chunk_frames, base_ratio).tolist()))

    def _chunk_index(self, run: _Run, segment: LLMInputs) -> int:
        units = run.unit_of_source[segment.source_index]
        return int(units[units >= 0][0]) // self._units_per_chunk(run.context)

    def _question_scores(self, run: _Run, segment: LLMInputs, cache: Cache) -> torch.Tensor:
        """Float32 [layers, L]: run the question after the chunk and collect each layer's chunk scores."""
        question = run.question
        shift = question.positions[0, 0, 0] - segment.positions[0, 0, -1] - 1
        run.scored_length, run.scores = len(segment), {}
        try:
            run.context.adapter.forward(dataclasses.replace(question, positions=question.positions - shift), cache)
        finally:
            run.scored_length = None
        return torch.stack([run.scores[i] for i in range(len(run.scores))])

    def _score(
        self, layer_index: int, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
        cache: Cache,
    ) -> None:
        """During a question pass: score the chunk's keys in this layer, then drop the question's entries."""
        run = self._run
        if run.scored_length is None:
            return
        layer = cache.layers[layer_index]
        question_length = hidden_states.shape[1]
        end = layer.keys.shape[2] - question_length
        query, _ = run.context.adapter.layer_qk(layer_index, hidden_states, position_embeddings)
        run.scores[layer_index] = prompt_guided_scores(query, layer.keys[:, :, end - run.scored_length : end])
        keep_last_entries(layer, question_length, torch.zeros(0, dtype=torch.long))
