"""QCCompPress (XComp question-conditioned frame selection) and the XComp preset, on tiny models."""

from __future__ import annotations

import pytest
import torch

from vidpress import Video, load_video
from vidpress.presses import PressContext
from vidpress.presses.lpcomp import LPCompPress
from vidpress.presses.qccomp import QCCompPress, question_span
from vidpress.presses.tome import ToMePress
from vidpress.presses.xcomp import XCompPress
from tests.helpers import random_frames

QUESTION = "What object appeared in the video?"
OTHER_QUESTION = "How many times did the red circle appear? Which appeared first?"
# 24 frames = 12 temporal units; clips of 1 unit, windows of 4 units sliding by 2, one chunk (WRAP: wrap-around
# chunks of 4 + 4 units)
SMALL = dict(segment_frames=8, stride_frames=4, clip_frames=2, score_chunk_frames=64)
WRAP = dict(SMALL, score_chunk_frames=8)


def make_video(num_frames: int = 24, seed: int = 0) -> Video:
    return load_video(list(random_frames(num_frames, seed=seed)), source_fps=4.0)


def encode(qa, question: str = QUESTION, num_frames: int = 24):
    return qa.adapter.encode(qa.adapter.prepare(make_video(num_frames), question))


def all_kept(encoded) -> torch.Tensor:
    return torch.ones(encoded.features.shape[:2], dtype=torch.bool)


def test_selecting_every_frame_equals_no_press(tiny_qa, family):
    qa = tiny_qa[family]
    video = make_video()
    plain = qa.ask(video, QUESTION, max_new_tokens=8)
    answer = qa.ask(video, QUESTION, press=QCCompPress(n_select=24, **SMALL), max_new_tokens=8)
    assert answer.token_ids == plain.token_ids
    assert answer.stats.press["qccomp"]["selection"] == "on" and len(answer.stats.press["qccomp"]["unit_scores"]) == 12


def test_selection_keeps_the_top_frames_in_time_order(tiny_qa, family):
    qa = tiny_qa[family]
    video = make_video()
    answer = qa.ask(video, QUESTION, press=QCCompPress(n_select=6, **SMALL), max_new_tokens=4)
    stats = answer.stats.press["qccomp"]
    scores = torch.tensor(stats["unit_scores"])
    kept = stats["kept_units"]
    assert kept == sorted(kept) and len(kept) == 3
    assert set(kept) == set(scores.topk(3).indices.tolist())
    assert answer.stats.frames_kept == 6
    assert answer.stats.kept_frames == sorted(answer.stats.kept_frames)
    assert answer.stats.kept_frames == [int(video.frame_indices[2 * u + i]) for u in kept for i in (0, 1)]
    assert answer.stats.visual_tokens_after * 4 == answer.stats.visual_tokens_before


def _window_sequence(qa, encoded, units: list[int]):
    """Rows of the prompt for [text before the video] + ``units`` + [text after it up to the assistant turn]."""
    spans = encoded.unit_spans
    _, end = question_span(encoded, qa.adapter)
    return torch.cat([torch.arange(int(spans[0, 0])), *[torch.arange(*spans[u].tolist()) for u in units],
                      torch.arange(int(spans[-1, 1]), end)])


def _unit_means(weights: torch.Tensor, query: slice, columns: list[torch.Tensor]) -> torch.Tensor:
    """Mean attention [1, H, L, L] of the ``query`` rows to each group of ``columns``."""
    mass = weights[0, :, query].float().mean(dim=(0, 1))
    return torch.stack([mass[c].mean() for c in columns])


@pytest.mark.parametrize("causal", [True, False])
def test_global_scores_equal_eager_attention_weights(tiny_qa, family, causal):
    qa = tiny_qa[family]
    adapter = qa.adapter
    encoded = encode(qa)
    press = QCCompPress(n_select=4, local=False, clip_frames=2, causal=causal)
    scores = press.score_units(encoded, all_kept(encoded), adapter)
    assert scores.layers == [1, 2]

    rows = _window_sequence(qa, encoded, list(range(12)))
    full = adapter.build_inputs(encoded)
    sequence = full.slice(0, len(rows))
    assert torch.equal(full.source_index[: len(rows)], rows)
    sequence.positions = torch.arange(len(rows)).view(1, 1, -1).expand(3, 1, -1)
    start, end = question_span(encoded, adapter)
    columns = [encoded.video_token_index[u] for u in range(12)]
    text_config = qa.model.config.get_text_config()
    for index, layer in enumerate(scores.layers):
        captured = {}
        attention = adapter.decoder_layers[layer].self_attn

        def unmask(module, args, kwargs):
            kwargs["attention_mask"] = None
            return args, kwargs

        def capture(module, args, output):
            captured["weights"] = output[1]

        handles = [attention.register_forward_hook(capture)]
        if not causal:
            handles.append(attention.register_forward_pre_hook(unmask, with_kwargs=True))
        text_config._attn_implementation = "eager"
        try:
            with torch.no_grad():
                adapter.forward(sequence, adapter.new_cache())
        finally:
            text_config._attn_implementation = "vidpress_sdpa"
            for handle in handles:
                handle.remove()
        expected = _unit_means(captured["weights"], slice(start, end), columns)
        torch.testing.assert_close(scores.per_layer[index], expected, rtol=1e-4, atol=1e-7)


def test_local_window_scores_equal_eager_attention_on_the_window_sequence(tiny_qa, family):
    qa = tiny_qa[family]
    adapter = qa.adapter
    encoded = encode(qa)
    # windows of 4 units that do not overlap: every unit's score is that of its one window
    press = QCCompPress(n_select=4, segment_frames=8, stride_frames=8, clip_frames=2, score_chunk_frames=64)
    scores = press.score_units(encoded, all_kept(encoded), adapter)

    rows = _window_sequence(qa, encoded, list(range(12)))
    sequence = adapter.build_inputs(encoded).slice(0, len(rows))
    sequence.positions = torch.arange(len(rows)).view(1, 1, -1).expand(3, 1, -1)
    captured = {}
    hooks = [adapter.decoder_layers[layer].self_attn.register_forward_pre_hook(
        lambda m, a, kw, layer=layer: captured.__setitem__(layer, kw["hidden_states"]), with_kwargs=True)
        for layer in scores.layers]
    with torch.no_grad():
        adapter.forward(sequence, adapter.new_cache())
    for hook in hooks:
        hook.remove()

    start, end = question_span(encoded, adapter)
    rotary = qa.model.model.language_model.rotary_emb
    text_config = qa.model.config.get_text_config()
    for first in (0, 4, 8):
        units = list(range(first, first + 4))
        window = _window_sequence(qa, encoded, units)
        question = slice(len(window) - (end - start), len(window))
        columns = [torch.searchsorted(window, encoded.video_token_index[u]) for u in units]
        for index, layer in enumerate(scores.layers):
            hidden = captured[layer][:, torch.searchsorted(rows, window)]
            positions = torch.arange(len(window)).view(1, 1, -1).expand(3, 1, -1)
            text_config._attn_implementation = "eager"
            try:
                with torch.no_grad():
                    _, weights = adapter.decoder_layers[layer].self_attn(
                        hidden_states=hidden, position_embeddings=rotary(hidden, positions), attention_mask=None
                    )
            finally:
                text_config._attn_implementation = "vidpress_sdpa"
            expected = _unit_means(weights, question, columns)
            torch.testing.assert_close(scores.per_layer[index, first : first + 4], expected, rtol=1e-4, atol=1e-7)


def test_scores_depend_on_the_question(tiny_qa, family):
    qa = tiny_qa[family]
    press = QCCompPress(n_select=4, local=False, clip_frames=2)
    encoded = encode(qa, QUESTION)
    first = press.score_units(encoded, all_kept(encoded), qa.adapter).total
    again = press.score_units(encoded, all_kept(encoded), qa.adapter).total
    other_encoded = encode(qa, OTHER_QUESTION)
    other = press.score_units(other_encoded, all_kept(other_encoded), qa.adapter).total
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3 * first.abs().max()


def test_question_span_is_the_question_up_to_the_assistant_turn(tiny_qa, family):
    qa = tiny_qa[family]
    encoded = encode(qa)
    start, end = question_span(encoded, qa.adapter)
    text = qa.processor.tokenizer.decode(encoded.input_ids[0, start:end])
    assert text == QUESTION + "<|im_end|>\n"
    assert qa.processor.tokenizer.decode(encoded.input_ids[0, end:]) == "<|im_start|>assistant\n"


def test_local_and_global_scores_differ(tiny_qa):
    qa = tiny_qa["qwen2_5_vl"]
    video = make_video()
    local = qa.ask(video, QUESTION, press=QCCompPress(n_select=8, **SMALL), max_new_tokens=2)
    global_ = qa.ask(video, QUESTION, press=QCCompPress(n_select=8, local=False, **SMALL), max_new_tokens=2)
    local_scores = torch.tensor(local.stats.press["qccomp"]["unit_scores"])
    global_scores = torch.tensor(global_.stats.press["qccomp"]["unit_scores"])
    assert local.stats.frames_kept == global_.stats.frames_kept == 8
    assert (local_scores - global_scores).abs().max() > 1e-3 * global_scores.abs().max()


@pytest.mark.parametrize("n_repeat", [1, 2])
def test_wrap_around_chunks_score_every_frame_n_repeat_times(tiny_qa, n_repeat):
    qa = tiny_qa["qwen2_vl"]
    encoded = encode(qa)
    press = QCCompPress(n_select=4, n_repeat=n_repeat, **WRAP)
    scores = press.score_units(encoded, all_kept(encoded), qa.adapter)
    assert scores.counts.tolist() == [n_repeat] * 12
    assert torch.isfinite(scores.total).all()


def test_a_video_shorter_than_a_chunk_scores_its_edges_too(tiny_qa):
    qa = tiny_qa["qwen2_vl"]
    encoded = encode(qa)
    scores = QCCompPress(n_select=4, **SMALL).score_units(encoded, all_kept(encoded), qa.adapter)
    assert scores.counts.tolist() == [0, 0] + [1] * 8 + [0, 0]  # edge clips are covered by one window of two
    assert torch.isfinite(scores.total).all() and (scores.total > 0).all()


def test_scoring_stops_after_the_last_scored_layer(tiny_qa):
    qa = tiny_qa["qwen2_vl"]
    encoded = encode(qa)
    finished = []
    layers = qa.adapter.decoder_layers
    handles = [layer.register_forward_hook(lambda *args, i=i: finished.append(i)) for i, layer in enumerate(layers)]
    try:
        QCCompPress(n_select=4, local=False, clip_frames=2).score_units(encoded, all_kept(encoded), qa.adapter)
    finally:
        for handle in handles:
            handle.remove()
    assert finished == [0, 1]  # scored layers 1 and 2 of 4: layer 2 stops in its attention, layer 3 never runs


def test_min_frames_turns_selection_off(tiny_qa):
    qa = tiny_qa["qwen3_vl"]
    video = make_video()
    answer = qa.ask(video, QUESTION, press=QCCompPress(n_select=2, min_frames=25, **SMALL), max_new_tokens=6)
    assert answer.stats.press["qccomp"]["selection"].startswith("off")
    assert answer.token_ids == qa.ask(video, QUESTION, max_new_tokens=6).token_ids


def test_after_a_merge_press_partial_units_are_scored(tiny_qa):
    qa = tiny_qa["qwen3_vl"]
    presses = [ToMePress(tokens_per_frame=2, clip_frames=3), QCCompPress(n_select=8, **SMALL)]
    answer = qa.ask(make_video(), QUESTION, press=presses, max_new_tokens=2)
    assert len(answer.stats.press["qccomp"]["kept_units"]) == 4
    assert answer.stats.frames_kept == 8


def test_layer_range_scales_with_depth():
    press = QCCompPress()
    assert press.layer_range(28) == range(6, 24)
    assert press.layer_range(4) == range(1, 3)
    assert press.layer_range(36) == range(8, 31)
    assert QCCompPress(layers=(6, 24), layers_depth=None).layer_range(4) == range(3, 4)
    assert QCCompPress(layers=(0, 1)).layer_range(2) == range(0, 1)


@pytest.mark.parametrize("kwargs", [
    {"n_select": 0}, {"segment_frames": 60}, {"stride_frames": 128}, {"layers": (5, 5)}, {"layers": (6, 30)},
    {"layers_depth": 0}, {"min_frames": -1}, {"n_repeat": 0}, {"n_select": 2.5},
])
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        QCCompPress(**kwargs)


def test_lengths_must_fit_the_temporal_unit(tiny_qa):
    qa = tiny_qa["qwen2_vl"]
    encoded = encode(qa)
    context = PressContext(adapter=qa.adapter, question=QUESTION, encoded=encoded)
    keep = all_kept(encoded)
    with pytest.raises(ValueError, match="clip_frames"):
        QCCompPress(n_select=4, segment_frames=9, stride_frames=3, clip_frames=3).select_tokens(encoded, keep, context)
    with pytest.raises(ValueError, match="n_repeat"):
        QCCompPress(n_select=4, **dict(SMALL, score_chunk_frames=6)).select_tokens(encoded, keep, context)


def test_xcomp_preset_equals_its_two_presses(tiny_qa):
    qa = tiny_qa["qwen3_vl"]
    video = make_video()
    preset = XCompPress(n_select=8, tokens_per_frame=None)
    assert [type(p) for p in preset.parts()] == [QCCompPress, LPCompPress]
    assert set(preset.stages) == {"token", "layer"} and preset.chunk_frames is None
    answer = qa.ask(video, QUESTION, press=preset, max_new_tokens=6)
    listed_presses = [QCCompPress(n_select=8), LPCompPress(tokens_per_frame=None)]
    listed = qa.ask(video, QUESTION, press=listed_presses, max_new_tokens=6)
    assert answer.token_ids == listed.token_ids
    assert answer.stats.frames_kept == 8
    assert answer.stats.press["qccomp"]["kept_units"] == listed.stats.press["qccomp"]["kept_units"]
    assert answer.stats.press["lpcomp_tokens_per_layer"] == listed.stats.press["lpcomp_tokens_per_layer"]
