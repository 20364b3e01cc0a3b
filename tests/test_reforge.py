"""ReTaKe's position reforge (PivotKVPress(reforge=True)) and DPSelect's contiguous positions, tiny Qwen-VL."""

from __future__ import annotations

import contextlib
import types
from dataclasses import replace
from unittest import mock

import pytest
import torch

from vidpress import VideoQA, load_video
from vidpress.functional.pivotkv import keep_indices_from_scores, pivotkv_keep_len, rotate, unrotate
from vidpress.generation import prefill, segment_bounds
from vidpress.presses import Press, PressContext
from vidpress.presses.dpselect import DPSelectPress
from vidpress.presses.kv_eviction import attention_hooks
from vidpress.presses.pivotkv import PivotKVPress
from tests.helpers import random_frames

QUESTION = "What object appeared in the video?"
CHUNK = 4  # frames per prefill chunk: 2 Qwen-VL temporal units


def make_video(num_frames: int = 16, seed: int = 0):
    # 1 fps: 2 s per temporal unit, so Qwen2.5-VL's temporal ids differ between units on 5.17 (which rounds
    # seconds per grid down to an integer) as on 5.23
    return load_video(list(random_frames(num_frames, seed=seed)), source_fps=1.0)


class SegmentRecorder(Press):
    """Put last in a press list: records the positions every segment ran with (after any shift)."""

    def __init__(self):
        self.segments: list[tuple[torch.Tensor, bool]] = []

    def after_segment(self, segment, cache, context, *, is_video):
        self.segments.append((segment.positions[:, 0].clone(), is_video))


class LayerInputs(Press):
    """Put first in a press list: records every layer's attention inputs of each video chunk."""

    def __init__(self):
        self.chunks: list[dict[int, tuple]] = []
        self._video = False

    @contextlib.contextmanager
    def prefill_hooks(self, context):
        with attention_hooks(context.adapter, self._record):
            yield

    def before_segment(self, segment, context, *, is_video):
        self._video = is_video
        if is_video:
            self.chunks.append({})

    def _record(self, layer_index, hidden_states, position_embeddings, cache):
        if self._video:
            self.chunks[-1][layer_index] = (hidden_states.clone(), tuple(e.clone() for e in position_embeddings))


def run_prefill(qa: VideoQA, presses: list[Press], segment_count: int | None = None):
    """The stages of ``ask`` up to the prefill of the first ``segment_count`` segments; (context, cache, segments)."""
    adapter = qa.adapter
    encoded = adapter.encode(adapter.prepare(make_video(), QUESTION))
    context = PressContext(adapter=adapter, question=QUESTION, encoded=encoded)
    inputs = context.inputs = adapter.build_inputs(encoded)
    segments = segment_bounds(encoded, inputs, CHUNK, adapter.temporal_patch_size, split_question=False)
    cache = adapter.new_cache()
    with torch.no_grad():
        prefill(adapter, inputs, cache, segments[:segment_count], presses, context)
    return context, cache, segments


@contextlib.contextmanager
def recorded_forward(adapter):
    """Record the positions [P, L] of every ``adapter.forward`` call inside the block."""
    calls = []
    forward = adapter.forward

    def recording(inputs, cache, **kwargs):
        calls.append(inputs.positions[:, 0].clone())
        return forward(inputs, cache, **kwargs)

    adapter.forward = recording
    try:
        yield calls
    finally:
        del adapter.forward


def squeezed_last(positions: torch.Tensor) -> int:
    """Squeezed largest temporal id of a chunk run at ``positions`` [3, L] with ratio 0.5 (from its first id)."""
    temporal = positions[0]
    first, last, length = int(temporal[0]), int(temporal.max()), temporal.shape[0]
    return first + (last - first) * pivotkv_keep_len(length, 0.5) // length


def expected_question_id(original: list[torch.Tensor], ran: list[torch.Tensor], question_id: int) -> int:
    """Where ``question_id`` lies on the timeline of the chunks (original and run positions [3, L] each)."""
    for before, after in reversed(list(zip(original, ran))):
        first, last = int(before[0, 0]), int(before[0].max())
        if question_id >= first:
            length = after.shape[1]
            inside = int(after[0, 0]) + (min(question_id, last) - first) * pivotkv_keep_len(length, 0.5) // length
            return inside + max(0, question_id - last)
    return question_id


# -- PivotKV position reforge ---------------------------------------------------------------------------------
def test_reforge_keep_all_equals_no_press(tiny_qa, family):
    qa = tiny_qa[family]
    video = make_video()
    plain = qa.ask(video, QUESTION, max_new_tokens=8)
    press = PivotKVPress(ratio=1.0, chunk_frames=CHUNK, reforge=True)
    reforged = qa.ask(video, QUESTION, press=press, max_new_tokens=8)
    assert reforged.token_ids == plain.token_ids
    assert reforged.stats.press["pivotkv"]["temporal_shift"] == 0
    assert len(reforged.stats.press["pivotkv"]["chunk_lengths"]) > 1


def test_unrotate_inverts_the_layers_rotation_of_real_keys(tiny_qa, family):
    adapter = tiny_qa[family].adapter
    recorder = LayerInputs()
    run_prefill(tiny_qa[family], [recorder], segment_count=2)
    for layer, (hidden, (cos, sin)) in recorder.chunks[0].items():
        query, key = adapter.layer_qk(layer, hidden, (cos, sin))
        plain_query, plain_key = adapter.layer_qk(layer, hidden, (torch.ones_like(cos), torch.zeros_like(sin)))
        assert not torch.allclose(key, plain_key), "degenerate test: the rotation is the identity"
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        torch.testing.assert_close(unrotate(key, cos, sin), plain_key, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(unrotate(query, cos, sin), plain_query, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rotate(unrotate(key, cos, sin), cos, sin), key, rtol=1e-5, atol=1e-5)


def test_reforged_keys_equal_keys_computed_at_the_squeezed_ids(tiny_qa, family):
    adapter = tiny_qa[family].adapter
    recorder = LayerInputs()
    press = PivotKVPress(ratio=0.5, chunk_frames=CHUNK, reforge=True)
    context, cache, segments = run_prefill(tiny_qa[family], [recorder, press], segment_count=2)
    start, end, is_video = segments[1]
    assert is_video
    positions = context.inputs.positions[..., start:end]  # the first chunk runs unshifted
    rotary = adapter.inner.language_model.rotary_emb
    moved = 0
    for layer, (hidden, embeddings) in recorder.chunks[0].items():
        keep_len = pivotkv_keep_len(end - start, 0.5)
        keep = keep_indices_from_scores(press.scores(adapter, layer, hidden, embeddings, None), keep_len, None, False)
        new_positions = PivotKVPress.reforged_positions(positions, keep)
        assert torch.equal(new_positions[1:], positions[1:, :, keep]), "height and width ids are untouched"
        moved += int((new_positions[0] != positions[0, :, keep]).sum())
        expected = adapter.layer_qk(layer, hidden[:, keep], rotary(hidden, new_positions))[1]
        cached = cache.layers[layer].keys[:, :, -keep_len:]
        assert cache.layers[layer].keys.shape[2] == start + keep_len
        torch.testing.assert_close(cached, expected, rtol=1e-5, atol=1e-5)
    assert moved > 0, "degenerate test: no kept id was squeezed"


def test_temporal_ids_follow_the_squeezed_timeline(tiny_qa, family):
    qa = tiny_qa[family]
    recorder = SegmentRecorder()
    press = PivotKVPress(ratio=0.5, chunk_frames=CHUNK, reforge=True)
    context, _, segments = run_prefill(qa, [press, recorder])
    original = [context.inputs.positions[:, 0, a:b] for a, b, _ in segments]
    ran = [positions for positions, _ in recorder.segments]
    assert [v for _, v in recorder.segments] == [v for _, _, v in segments]
    assert torch.equal(ran[0], original[0]), "text before the video is not moved"
    chunks = [i for i, (_, _, v) in enumerate(segments) if v]
    assert len(chunks) >= 3 and chunks[-1] == len(segments) - 2
    for previous, current in zip(chunks[:-1], chunks[1:]):
        assert torch.equal(ran[current][1:], original[current][1:]), "height and width ids are untouched"
        gap = int(original[current][0].min()) - int(original[previous][0].max())
        assert int(ran[current][0].min()) == squeezed_last(ran[previous]) + gap  # 1 on Qwen2-VL: continuous
        assert torch.all(ran[previous][0].diff() >= 0)
    question = ran[-1]
    assert torch.equal(question[0], question[1]) and torch.equal(question[0], question[2])
    video = [original[i] for i in chunks], [ran[i] for i in chunks]
    assert int(question[0, 0]) == expected_question_id(*video, int(original[-1][0, 0]))
    shift = int(question[0, 0]) - int(original[-1][0, 0])
    assert torch.equal(question, original[-1] + shift)
    assert shift < 0
    assert torch.equal(context.position_shift, torch.tensor([shift] * 3))


def test_decoding_follows_the_squeezed_timeline_and_answers_differ(tiny_qa, family):
    qa = tiny_qa[family]
    video = make_video()
    plain = qa.ask(video, QUESTION, press=PivotKVPress(ratio=0.5, chunk_frames=CHUNK), max_new_tokens=8)
    # the stock forward per decoding step, whose positions the recorder sees (the device steps of
    # vidpress.fast.graph_decode start from the same position: tests/test_graph_decode.py)
    with recorded_forward(qa.adapter) as calls, mock.patch.object(qa, "fast_decode", False):
        reforged = qa.ask(video, QUESTION, press=PivotKVPress(ratio=0.5, chunk_frames=CHUNK, reforge=True),
                          max_new_tokens=8)
    shift = reforged.stats.press["pivotkv"]["temporal_shift"]
    assert shift < 0
    decoded = calls[-(len(reforged.token_ids) - 1):]
    question = calls[-len(reforged.token_ids)]
    for step, positions in enumerate(decoded):
        assert positions.tolist() == [[int(question[0, -1]) + 1 + step]] * 3
    assert reforged.stats.kv_length_per_layer == plain.stats.kv_length_per_layer
    assert reforged.token_ids != plain.token_ids


def test_reforge_keeps_ask_many_equal_to_ask(tiny_qa):
    qa = tiny_qa["qwen2_vl"]
    video = make_video()
    press = PivotKVPress(ratio=0.5, chunk_frames=CHUNK, reforge=True)
    questions = [QUESTION, "How many times did the red circle appear?"]
    many = qa.ask_many(video, questions, press=press, max_new_tokens=6)
    assert [a.token_ids for a in many] == [qa.ask(video, q, press=press, max_new_tokens=6).token_ids for q in questions]


def test_reforge_needs_mrope_positions():
    press = PivotKVPress(ratio=0.5, reforge=True)
    context = PressContext(adapter=types.SimpleNamespace(position_axes=1), question=QUESTION)
    with pytest.raises(ValueError, match="M-RoPE"), press.prefill_hooks(context):
        pass


# -- DPSelect contiguous positions -------------------------------------------------------------------------
def test_contiguous_positions_needs_sync():
    with pytest.raises(ValueError, match="sync"):
        DPSelectPress(keep_ratio=0.5, contiguous_positions=True)


def select_contiguous(qa: VideoQA, keep_ratio: float = 0.5):
    adapter = qa.adapter
    encoded = adapter.encode(adapter.prepare(make_video(), QUESTION))
    context = PressContext(adapter=adapter, question=QUESTION, encoded=encoded)
    press = DPSelectPress(keep_ratio=keep_ratio, sync=True, contiguous_positions=True)
    keep = press.select_tokens(encoded, torch.ones(encoded.features.shape[:2], dtype=torch.bool), context)
    return encoded, keep, context.renumber_positions(encoded.inputs, keep)


def test_contiguous_positions_renumber_kept_units(tiny_qa, family):
    encoded, keep, positions = select_contiguous(tiny_qa[family])
    units = keep.any(1).nonzero().squeeze(1).tolist()
    assert 0 < len(units) < encoded.num_units and units != list(range(len(units))), "degenerate test"
    first = encoded.unit_spans[:, 0]
    for previous, current in zip(units[:-1], units[1:]):
        extent = int(encoded.positions[0, first[previous + 1]] - encoded.positions[0, first[previous]])
        assert int(positions[0, first[current]] - positions[0, first[previous]]) == extent
    assert int(positions[0, first[units[0]]]) == int(encoded.positions[0, first[0]])
    video = encoded.video_token_index[units].flatten()
    if family != "qwen3_vl":  # Qwen3-VL's position function advances every axis with each unit's tokens
        assert torch.equal(positions[1:, video], encoded.positions[1:, video]), "height and width ids are untouched"
    inputs = tiny_qa[family].adapter.build_inputs(replace(encoded, positions=positions), keep)
    after = int(torch.searchsorted(inputs.source_index, encoded.unit_spans[-1, 1]))
    kept_positions = inputs.positions[:, 0]
    assert torch.all(kept_positions[0, :after].diff() >= 0)
    assert torch.equal(kept_positions[0, after:], kept_positions[1, after:]), "text after the video"


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_contiguous_positions_equal_a_video_of_the_kept_frames(tiny_qa, family):
    adapter = tiny_qa[family].adapter
    encoded, keep, positions = select_contiguous(tiny_qa[family])
    inputs = adapter.build_inputs(replace(encoded, positions=positions), keep)
    shorter = adapter.prepare(make_video(int(keep.any(1).sum()) * adapter.temporal_patch_size), QUESTION)
    assert torch.equal(inputs.input_ids, shorter["input_ids"])
    assert torch.equal(inputs.positions, adapter.full_positions(shorter))


def test_contiguous_positions_keep_all_is_identity_and_answers(tiny_qa, family):
    qa = tiny_qa[family]
    encoded, keep, positions = select_contiguous(qa, keep_ratio=1.0)
    assert torch.equal(positions, encoded.positions)
    video = make_video()
    press = DPSelectPress(keep_ratio=0.5, sync=True, contiguous_positions=True)
    questions = [QUESTION, "How many times did the red circle appear?"]
    many = qa.ask_many(video, questions, press=press, max_new_tokens=6)
    assert [a.token_ids for a in many] == [qa.ask(video, q, press=press, max_new_tokens=6).token_ids for q in questions]


def test_contiguous_positions_compose_with_reforge(tiny_qa):
    qa = tiny_qa["qwen2_vl"]
    video = make_video()
    presses = [DPSelectPress(keep_ratio=0.5, sync=True, contiguous_positions=True),
               PivotKVPress(ratio=0.5, chunk_frames=CHUNK, reforge=True)]
    answer = qa.ask(video, QUESTION, press=presses, max_new_tokens=6)
    assert answer.stats.frames_kept == 8
    assert answer.stats.press["pivotkv"]["temporal_shift"] < 0
    assert answer.token_ids != qa.ask(video, QUESTION, press=presses[:1], max_new_tokens=6).token_ids
