"""Running the LLM: prefill in segments (text before the video, video chunks, question) and greedy decoding."""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from transformers.cache_utils import Cache

from vidpress.adapters import EncodedVideo, LLMInputs, VideoAdapter
from vidpress.fast.graph_decode import decode_on_device, supports_device_steps
from vidpress.presses.base import Press, PressContext


def segment_bounds(
    encoded: EncodedVideo, inputs: LLMInputs, chunk_frames: int | None, temporal_patch: int, *, split_question: bool = True
) -> list[tuple[int, int, bool]]:
    """Split the kept sequence into prefill segments: (start, end, is_video) in ``inputs`` indices.

    Without chunking, the prompt up to the question is one segment (the whole prompt, one forward as the
    stock generate, unless ``split_question``); with ``chunk_frames``, the text before the video, then the
    video in chunks of that many frames. The last segment is everything after the video (the question and
    the assistant prefix).
    """
    question = int(torch.searchsorted(inputs.source_index, torch.tensor(encoded.question_start)))
    if chunk_frames is None:
        if not split_question:
            return [(0, len(inputs), True)]
        return [(a, b, v) for a, b, v in [(0, question, True), (question, len(inputs), False)] if b > a]
    spans = encoded.unit_spans
    units = encoded.num_units
    step = max(1, chunk_frames // temporal_patch)
    full_bounds = [int(spans[0, 0])] + [int(spans[u, 0]) for u in range(step, units, step)] + [encoded.question_start]
    kept = torch.searchsorted(inputs.source_index, torch.tensor(full_bounds)).tolist()
    segments = [(0, kept[0], False)]
    segments += [(a, b, True) for a, b in zip(kept[:-1], kept[1:])]
    segments.append((kept[-1], len(inputs), False))
    return [(a, b, v) for a, b, v in segments if b > a]


def prefill(
    adapter: VideoAdapter,
    inputs: LLMInputs,
    cache: Cache,
    segments: list[tuple[int, int, bool]],
    presses: list[Press],
    context: PressContext,
) -> torch.Tensor:
    """Prefill ``segments`` of ``inputs`` into ``cache`` with the presses' hooks; returns the last logits [1, V].

    Each segment runs at its positions plus ``context.position_shift`` as the presses' ``before_segment``
    left it (None, the default, runs the positions as built).
    """
    logits = None
    with contextlib.ExitStack() as stack:
        for press in presses:
            stack.enter_context(press.prefill_hooks(context))
        for start, end, is_video in segments:
            segment = inputs.slice(start, end)
            for press in presses:
                press.before_segment(segment, context, is_video=is_video)
            segment = shift_positions(segment, context.position_shift)
            logits = adapter.forward(segment, cache)
            for press in presses:
                press.after_segment(segment, cache, context, is_video=is_video)
    if logits is None:
        raise ValueError("nothing to prefill: the prompt is empty")
    return logits[:, -1]


def shift_positions(segment: LLMInputs, shift: torch.Tensor | None) -> LLMInputs:
    """``segment`` with ``shift`` [P] added to each axis of its positions [P, 1, L]; itself when None."""
    if shift is None:
        return segment
    return dataclasses.replace(segment, positions=segment.positions + shift.view(-1, 1, 1))


def next_position(inputs: LLMInputs, shift: torch.Tensor | None = None) -> int:
    """Position of the first decoded token after ``inputs`` run with ``shift`` (see :func:`shift_positions`)."""
    return int(shift_positions(inputs, shift).positions[..., -1].max()) + 1


@torch.no_grad()
def greedy_decode(
    adapter: VideoAdapter,
    first_logits: torch.Tensor,
    cache: Cache,
    next_position: int,
    max_new_tokens: int,
    *,
    on_device: bool = False,
) -> list[int]:
    """Greedy tokens after a prefill whose last logits are ``first_logits`` [1, V].

    Each new token's position is ``next_position`` + step (on every M-RoPE axis: text after the video),
    which is what the stock generate computes from the model's rope deltas. Stops after an EOS token.
    Each step writes its KV entries in place when ``cache`` has room reserved (:func:`vidpress.fast.reserve`,
    as ``VideoQA`` does by default); the stock dynamic layers copy their whole cache at every step.
    ``on_device`` (for such a cache) runs the steps with their state on the device, as one CUDA graph on
    CUDA (:mod:`vidpress.fast.graph_decode`); otherwise each step is the stock forward.
    """
    eos = adapter.eos_token_ids
    first = int(first_logits.argmax(-1))
    if on_device and supports_device_steps(adapter, cache) and first not in eos and max_new_tokens > 1:
        return [first, *decode_on_device(adapter, cache, first, next_position, max_new_tokens - 1, eos)]
    tokens: list[int] = []
    logits = first_logits
    for step in range(max_new_tokens):
        token = int(logits.argmax(-1))
        tokens.append(token)
        if token in eos or step == max_new_tokens - 1:
            break
        logits = adapter.forward(adapter.text_inputs([token], next_position + step), cache)[:, -1]
    return tokens
