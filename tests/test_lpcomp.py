"""LP-Comp press (XComp, ALGORITHMS.md §4) on tiny models of every family: schedule, keep modes, exactness."""

from __future__ import annotations

import pytest
import torch

from vidpress import Video, load_video
from vidpress.adapters import LLMInputs
from vidpress.functional.lpcomp import lpcomp_schedule
from vidpress.generation import prefill, segment_bounds
from vidpress.presses import PressContext
from vidpress.presses.lpcomp import LPCompPress, drop_hidden_states
from tests.helpers import random_frames

QUESTION = "What object appeared in the video?"


def make_video(num_frames: int = 8, seed: int = 0) -> Video:
    """112 x 112 frames: 16 visual tokens (4 x 4) per temporal unit in every tiny family."""
    return load_video(list(random_frames(num_frames, 112, 112, seed=seed)), source_fps=4.0)


def encode(qa, num_frames: int = 8, question: str = QUESTION):
    adapter = qa.adapter
    encoded = adapter.encode(adapter.prepare(make_video(num_frames), question))
    inputs = adapter.build_inputs(encoded)
    return encoded, inputs, PressContext(adapter=adapter, question=question, encoded=encoded, inputs=inputs)


def prefill_logits(qa, encoded, inputs, context, presses, chunk_frames=None) -> torch.Tensor:
    adapter = qa.adapter
    segments = segment_bounds(encoded, inputs, chunk_frames, adapter.temporal_patch_size, split_question=False)
    return prefill(adapter, inputs, adapter.new_cache(), segments, presses, context)


# -- the plan ------------------------------------------------------------------------------------------------
def frame_tokens(is_video: torch.Tensor) -> torch.Tensor:
    return is_video.nonzero().squeeze(1)


def layout(frames: int = 2, size: int = 16) -> torch.Tensor:
    """[L] is_video: 3 text tokens, ``frames`` x ``size`` visual tokens, 2 text tokens."""
    return torch.cat([torch.zeros(3), torch.ones(frames * size), torch.zeros(2)]).bool()


@pytest.mark.parametrize(("keep", "expected"), [("suffix", [[8, 9, 10, 11, 12, 13, 14, 15], [14, 15]]),
                                                 ("uniform", [[1, 3, 5, 7, 9, 11, 13, 15], [7, 15]])])
def test_layer_keep_modes(keep, expected):
    is_video = layout()
    plan = LPCompPress(schedule=(16, 8, 2), keep=keep).layer_keep(len(is_video), frame_tokens(is_video), torch.tensor([16, 16]), 3)
    assert plan.shape == (3, len(is_video)) and bool(plan[0].all())
    for layer, local in zip((1, 2), expected):
        assert bool(plan[layer][~is_video].all()), "a text token was dropped"
        kept = plan[layer].nonzero().squeeze(1)
        video = kept[is_video[kept]] - 3
        assert video.tolist() == local + [16 + i for i in local]


def test_layer_keep_default_schedule_and_frame_groups():
    # two temporal units of 32 tokens: four LP-Comp frames of 16, released 16/28 schedule
    is_video = layout(frames=4)
    plan = LPCompPress().layer_keep(len(is_video), frame_tokens(is_video), torch.tensor([32, 32]), 28)
    schedule = lpcomp_schedule(16, 28)
    assert plan.sum(1).tolist() == [5 + 4 * s for s in schedule]
    assert plan[-1].nonzero().squeeze(1)[3:7].tolist() == [3 + 16 * f + 15 for f in range(4)]


def test_frame_size_rules():
    assert LPCompPress(tokens_per_frame=None).frame_size(torch.tensor([36, 0, 36])) == 36
    assert LPCompPress(tokens_per_frame=4).frame_size(torch.tensor([16, 8])) == 4
    assert LPCompPress().frame_size(torch.tensor([20, 12, 0, 15, 17])) == 16  # ToMe clips: cut by count
    for even in ([36, 36], [8, 0, 8]):  # frames of evenly kept units never span two units
        with pytest.raises(ValueError, match="not a multiple"):
            LPCompPress().frame_size(torch.tensor(even))
    with pytest.raises(ValueError, match="not a multiple"):
        LPCompPress().frame_size(torch.tensor([20, 13]))
    with pytest.raises(ValueError, match="as many tokens"):
        LPCompPress(tokens_per_frame=None).frame_size(torch.tensor([16, 12]))
    with pytest.raises(ValueError, match="entries starting at"):
        LPCompPress(schedule=(16, 8)).layer_schedule(16, 4)


@pytest.mark.parametrize("kwargs", [dict(tokens_per_frame=0), dict(schedule="cosine"), dict(schedule=(4, 8)),
                                    dict(keep="prefix"), dict(schedule=())])
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        LPCompPress(**kwargs)


def test_registry_string_arguments():
    from vidpress.presses import _parse
    import typing

    hints = typing.get_type_hints(LPCompPress)
    assert _parse("16,8,1", hints["schedule"]) == (16, 8, 1)
    assert _parse("ceil", hints["schedule"]) == "ceil"
    assert _parse("none", hints["tokens_per_frame"]) is None


# -- on the models ---------------------------------------------------------------------------------------
def test_schedule_applied_inside_the_decoder(tiny_qa, family):
    """Each layer's attention sees text + frames x schedule[j] tokens, with the kept tokens' own positions."""
    qa = tiny_qa[family]
    encoded, inputs, context = encode(qa)
    press = LPCompPress()
    layers = qa.adapter.decoder_layers
    plan = press.plan(context)
    seen = {}

    def record(index):
        def hook(module, args, kwargs):
            seen[index] = (kwargs["hidden_states"].shape[1], kwargs["position_embeddings"][0][0])
        return hook

    handles = [layer.self_attn.register_forward_pre_hook(record(j), with_kwargs=True) for j, layer in enumerate(layers)]
    try:
        prefill_logits(qa, encoded, inputs, context, [press])
    finally:
        for handle in handles:
            handle.remove()
    text = int((~inputs.is_video).sum())
    frames = int(inputs.is_video.sum()) // 16
    schedule = lpcomp_schedule(16, len(layers))
    assert schedule[-1] < schedule[0]
    full_cos = seen[0][1]
    for j in range(len(layers)):
        length, cos = seen[j]
        assert length == text + frames * schedule[j] == int(plan[j].sum())
        assert bool(plan[j][~inputs.is_video].all()), "a text token was dropped"
        assert torch.equal(cos, full_cos[plan[j]]), f"layer {j} got other tokens or other positions"
    assert context.stats["lpcomp_tokens_per_layer"] == plan.sum(1).tolist()


def reference_logits(qa, inputs: LLMInputs, plan: torch.Tensor) -> torch.Tensor:
    """Last-token logits [1, V] of the decoder run by hand, dropping rows between layers (no hooks, no cache)."""
    inner = qa.adapter.inner
    text_model = inner.language_model
    is_video = inputs.is_video
    hidden = text_model.embed_tokens(inputs.input_ids)
    hidden[0, is_video] = inputs.video_embeds
    cos, sin = text_model.rotary_emb(hidden, inputs.positions)
    video_rank = is_video.cumsum(0) - 1
    rows = torch.arange(len(inputs))
    for j, layer in enumerate(text_model.layers):
        kept = plan[j].nonzero().squeeze(1)
        hidden = hidden[:, torch.searchsorted(rows, kept)]
        rows = kept
        hidden = layer(hidden, attention_mask=None, position_embeddings=(cos[:, rows], sin[:, rows]), position_ids=None)
        if j < len(inputs.deepstack):
            visual = is_video[rows]
            hidden = hidden.clone()
            hidden[0, visual] += inputs.deepstack[j][video_rank[rows][visual]]
    return qa.model.lm_head(text_model.norm(hidden))[:, -1]


@pytest.mark.parametrize("keep", ["suffix", "uniform"])
def test_press_equals_hand_run_decoder(tiny_qa, family, keep):
    qa = tiny_qa[family]
    encoded, inputs, context = encode(qa)
    press = LPCompPress(keep=keep)
    plan = press.plan(context)
    with torch.no_grad():
        logits = prefill_logits(qa, encoded, inputs, context, [press])
        expected = reference_logits(qa, inputs, plan)
        full = prefill_logits(qa, encoded, inputs, context, [])
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    assert (logits - full).abs().max() > 1e-3, "the press changed nothing"


@pytest.mark.parametrize("press", [LPCompPress(schedule=(16, 16, 16, 16)), LPCompPress(tokens_per_frame=1)])
def test_keep_everything_equals_no_press(tiny_qa, family, press):
    qa = tiny_qa[family]
    video = make_video()
    pressed = qa.ask(video, QUESTION, press=press, max_new_tokens=10)
    plain = qa.ask(video, QUESTION, max_new_tokens=10)
    assert pressed.token_ids == plain.token_ids
    assert pressed.stats.kv_length_per_layer == plain.stats.kv_length_per_layer


def with_tokens(inputs: LLMInputs, tokens: list[int], first_position: int) -> LLMInputs:
    """``inputs`` followed by text ``tokens`` at positions ``first_position``, ``first_position + 1``, ..."""
    positions = torch.arange(first_position, first_position + len(tokens)).view(1, 1, -1).expand(inputs.positions.shape[0], 1, -1)
    return LLMInputs(
        input_ids=torch.cat([inputs.input_ids, torch.tensor([tokens], dtype=inputs.input_ids.dtype)], 1),
        positions=torch.cat([inputs.positions, positions], -1),
        video_embeds=inputs.video_embeds,
        deepstack=inputs.deepstack,
        source_index=torch.cat([inputs.source_index, torch.full((len(tokens),), -1)]),
        video_keep=inputs.video_keep,
        video_token_id=inputs.video_token_id,
    )


def assert_cached_decoding_equals_recomputation(qa, press: LPCompPress) -> None:
    answer = qa.ask(make_video(), QUESTION, press=press, max_new_tokens=8)
    assert answer.stats.kv_length_per_layer == answer.stats.press["lpcomp_tokens_per_layer"]
    assert len(set(answer.stats.kv_length_per_layer)) == len(qa.adapter.decoder_layers)
    adapter = qa.adapter
    _, inputs, context = encode(qa)
    plan = press.plan(context)
    next_position = int(inputs.positions.max()) + 1
    recomputed: list[int] = []
    with torch.no_grad(), drop_hidden_states(adapter, plan):
        for _ in answer.token_ids:
            logits = adapter.forward(with_tokens(inputs, recomputed, next_position), adapter.new_cache())
            recomputed.append(int(logits[0, -1].argmax()))
    assert recomputed == answer.token_ids


def test_cached_decoding_equals_recomputation(tiny_qa, family):
    press = LPCompPress(keep="uniform") if family == "qwen2_vl" else LPCompPress()
    assert_cached_decoding_equals_recomputation(tiny_qa[family], press)


@pytest.mark.parametrize("name", ["llava_onevision", "internvl"])
def test_framewise_families(name):
    """1-D RoPE families: frames are each frame's tokens; LLaVA-OneVision's newline placeholder is never dropped."""
    from vidpress import VideoQA

    tiny_families = pytest.importorskip("vidpress.tiny_families")
    qa = VideoQA(*tiny_families.build_tiny_family(name))
    press = LPCompPress(tokens_per_frame=None)
    assert_cached_decoding_equals_recomputation(qa, press)
    _, inputs, context = encode(qa)
    plan = press.plan(context)
    frames, per_frame = inputs.video_keep.shape
    extra = int(inputs.is_video.sum()) - frames * per_frame  # visual placeholders of no frame
    assert extra == (1 if name == "llava_onevision" else 0)
    schedule = lpcomp_schedule(per_frame, len(qa.adapter.decoder_layers))
    assert (plan & inputs.is_video).sum(1).tolist() == [frames * s + extra for s in schedule]
    if extra:
        assert bool(plan[:, inputs.is_video.nonzero()[-1]].all()), "the newline placeholder was dropped"
    video = make_video()
    assert qa.ask(video, QUESTION, press=LPCompPress(tokens_per_frame=None, schedule=(per_frame,) * 4), max_new_tokens=6).token_ids \
        == qa.ask(video, QUESTION, max_new_tokens=6).token_ids


def test_chunked_prefill_with_press_equals_one_shot(tiny_qa, family):
    qa = tiny_qa[family]
    encoded, inputs, context = encode(qa, num_frames=12)
    press = LPCompPress()
    with torch.no_grad():
        one_shot = prefill_logits(qa, encoded, inputs, context, [press])
        chunked = prefill_logits(qa, encoded, inputs, context, [press], chunk_frames=4)
    torch.testing.assert_close(chunked, one_shot, rtol=1e-4, atol=1e-5)


def test_ask_many_with_press_matches_ask(tiny_qa):
    qa = tiny_qa["qwen2_5_vl"]
    video = make_video()
    questions = [QUESTION, "How many times did the red circle appear?"]
    press = LPCompPress()
    many = qa.ask_many(video, questions, press=press, max_new_tokens=6)
    single = [qa.ask(video, q, press=press, max_new_tokens=6) for q in questions]
    assert [a.token_ids for a in many] == [a.token_ids for a in single]


def test_explicit_mask_is_sliced_per_layer(tiny_qa):
    """A 4-D mask handed to the layers (as from generate or padding) is cut to each layer's rows and keys."""
    qa = tiny_qa["qwen2_vl"]
    _, inputs, context = encode(qa)
    press = LPCompPress()
    plan = press.plan(context)
    text_model = qa.adapter.inner.language_model
    hidden = text_model.embed_tokens(inputs.input_ids)
    hidden[0, inputs.is_video] = inputs.video_embeds
    causal = torch.ones(len(inputs), len(inputs), dtype=torch.bool).tril().view(1, 1, len(inputs), len(inputs))
    with torch.no_grad(), drop_hidden_states(qa.adapter, plan):
        implicit = text_model(inputs_embeds=hidden, position_ids=inputs.positions, use_cache=False).last_hidden_state
        explicit = text_model(inputs_embeds=hidden, position_ids=inputs.positions, use_cache=False,
                              attention_mask={"full_attention": causal}).last_hidden_state
    assert implicit.shape[1] == int(plan[-1].sum())
    torch.testing.assert_close(explicit, implicit, rtol=1e-5, atol=1e-6)


def test_units_not_multiple_of_tokens_per_frame_is_a_clear_error(tiny_qa):
    qa = tiny_qa["qwen2_vl"]
    video = load_video(list(random_frames(4)), source_fps=4.0)  # 56 x 84: 6 tokens per unit
    with pytest.raises(ValueError, match="not a multiple of tokens_per_frame=16"):
        qa.ask(video, QUESTION, press=LPCompPress(), max_new_tokens=2)
    answer = qa.ask(video, QUESTION, press=LPCompPress(tokens_per_frame=None), max_new_tokens=2)
    text = answer.stats.llm_input_length - 12
    assert answer.stats.kv_length_per_layer == [text + 2 * s for s in lpcomp_schedule(6, 4)]
