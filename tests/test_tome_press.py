"""ToMePress: VideoChat-Flash clip merging as a token-stage press, on tiny models of every family."""

from __future__ import annotations

import copy

import pytest
import torch

from vidpress import Video, load_video
from vidpress.functional.tome import tome_clip_merge
from vidpress.presses import PressContext
from vidpress.presses.tome import ToMePress, merge_clips
from tests.helpers import random_frames

QUESTION = "What object appeared in the video?"


def make_video(num_frames: int = 16, seed: int = 0) -> Video:
    return load_video(list(random_frames(num_frames, seed=seed)), source_fps=4.0)


def encode(qa, num_frames: int = 16):
    return qa.adapter.encode(qa.adapter.prepare(make_video(num_frames), QUESTION))


def test_keep_everything_equals_no_press(tiny_qa, family):
    qa = tiny_qa[family]
    video = make_video(12)
    plain = qa.ask(video, QUESTION, max_new_tokens=8)
    per_unit = plain.stats.visual_tokens_after // 6  # tokens_per_frame == N: nothing to merge
    answer = qa.ask(video, QUESTION, press=ToMePress(tokens_per_frame=per_unit, clip_frames=2), max_new_tokens=8)
    assert answer.token_ids == plain.token_ids
    assert answer.stats.visual_tokens_after == plain.stats.visual_tokens_after


@pytest.mark.parametrize("frames,per_frame,target", [(4, 6, 2), (3, 16, 4), (1, 9, 1), (2, 7, 3)])
def test_merge_clips_equals_the_functional_core(frames, per_frame, target):
    tokens = torch.randn(frames, per_frame, 8, generator=torch.Generator().manual_seed(frames * per_frame))
    merge = merge_clips(tokens[None], target)
    merged, _, sources = tome_clip_merge(tokens, target, return_sources=True)
    torch.testing.assert_close(merge.merged[0], merged, rtol=1e-6, atol=1e-6)
    assert torch.equal(merge.sources[0], sources)
    representatives = merge.representatives[0]
    assert len(representatives) == frames * target == len(set(representatives.tolist()))
    assert torch.equal(sources[representatives], torch.arange(frames * target))
    flat = tokens.flatten(0, 1)
    torch.testing.assert_close(merge.merged, merge.average(flat[None]), rtol=1e-5, atol=1e-6)
    alone = torch.bincount(sources, minlength=frames * target) == 1
    assert torch.equal(merged[alone], flat[representatives[alone]])


def test_batched_clips_merge_as_each_clip_alone():
    tokens = torch.randn(5, 3, 10, 8, generator=torch.Generator().manual_seed(1))
    batch = merge_clips(tokens, 4)
    for clip in range(5):
        alone = merge_clips(tokens[clip : clip + 1], 4)
        torch.testing.assert_close(batch.merged[clip], alone.merged[0], rtol=1e-6, atol=1e-6)
        assert torch.equal(batch.sources[clip], alone.sources[0])
        assert torch.equal(batch.representatives[clip], alone.representatives[0])


def test_representative_is_the_b_token_of_a_one_round_merge():
    # six tokens, one round (r = 1): the most similar A token merges into its B partner, which keeps its slot
    tokens = torch.eye(6).unsqueeze(0)
    tokens[0, 2] = tokens[0, 5] + 0.01  # A token 2 is nearly B token 5
    merge = merge_clips(tokens[None], 5)
    sources, representatives = merge.sources[0], merge.representatives[0]
    group = (sources == sources[2]).nonzero().squeeze(1).tolist()
    assert group == [2, 5]
    assert int(representatives[sources[2]]) == 5
    assert 2 not in representatives.tolist()


@pytest.mark.parametrize("clips_per_call", [1, 32])
def test_press_counts_values_and_slots(tiny_qa, family, clips_per_call, monkeypatch):
    monkeypatch.setattr("vidpress.presses.tome.CLIPS_PER_CALL", clips_per_call)
    qa = tiny_qa[family]
    encoded = encode(qa, 16)  # 8 temporal units
    original = copy.copy(encoded)
    features, deepstack = encoded.features.clone(), [d.clone() for d in encoded.deepstack]
    press = ToMePress(tokens_per_frame=2, clip_frames=3)
    context = PressContext(adapter=qa.adapter, question=QUESTION, encoded=encoded)
    keep = press.select_tokens(encoded, torch.ones(encoded.features.shape[:2], dtype=torch.bool), context)

    assert torch.equal(original.features, features), "the original feature tensor was modified in place"
    assert encoded.features is not original.features
    per_unit = encoded.tokens_per_unit
    assert int(keep.sum()) == 8 * 2
    assert [int(keep[c : c + 3].sum()) for c in (0, 3, 6)] == [6, 6, 4]
    assert context.stats["tome"]["tokens_per_unit"] == keep.sum(1).tolist()
    for start in (0, 3, 6):
        units = torch.arange(start, min(start + 3, 8))
        merged, _, sources = tome_clip_merge(features[units], 2, return_sources=True)
        slots = (units[:, None] * per_unit + torch.arange(per_unit)).flatten()
        for j in range(len(merged)):
            members = slots[sources == j]
            kept = members[keep.view(-1)[members]]
            assert len(kept) == 1, "each merged token takes exactly one slot of its own group"
            new_value = encoded.features.view(-1, features.shape[-1])[kept[0]]
            torch.testing.assert_close(new_value, merged[j], rtol=1e-5, atol=1e-6)
            for before, after in zip(deepstack, encoded.deepstack):
                expected = before.view(-1, before.shape[-1])[members].mean(0)
                torch.testing.assert_close(after.view(-1, after.shape[-1])[kept[0]], expected, rtol=1e-5, atol=1e-6)
    assert len(encoded.deepstack) == (2 if family == "qwen3_vl" else 0)
    llm = qa.adapter.build_inputs(encoded, keep)
    assert torch.equal(llm.positions[:, 0], encoded.positions[:, llm.source_index])
    assert torch.equal(llm.video_embeds, encoded.features[keep])


def test_ask_with_merged_clips(tiny_qa, family):
    qa = tiny_qa[family]
    video = make_video(16)
    answer = qa.ask(video, QUESTION, press=ToMePress(tokens_per_frame=3, clip_frames=4), max_new_tokens=6)
    assert answer.stats.visual_tokens_after == 8 * 3 < answer.stats.visual_tokens_before
    assert answer.stats.llm_input_length == len(qa.adapter.prepare(video, QUESTION)["input_ids"][0]) - (
        answer.stats.visual_tokens_before - answer.stats.visual_tokens_after
    )
    assert len(answer.token_ids) == 6


def test_after_a_frame_selection_only_kept_units_merge(tiny_qa):
    qa = tiny_qa["qwen2_5_vl"]
    encoded = encode(qa, 16)
    keep = torch.zeros(encoded.features.shape[:2], dtype=torch.bool)
    keep[[1, 2, 5, 7]] = True
    context = PressContext(adapter=qa.adapter, question=QUESTION, encoded=encoded)
    new_keep = ToMePress(tokens_per_frame=1, clip_frames=2).select_tokens(encoded, keep, context)
    assert not new_keep[~keep].any()
    assert int(new_keep[[1, 2]].sum()) == int(new_keep[[5, 7]].sum()) == 2


def test_partial_units_and_bad_parameters_are_errors(tiny_qa):
    qa = tiny_qa["qwen2_vl"]
    encoded = encode(qa, 8)
    keep = torch.ones(encoded.features.shape[:2], dtype=torch.bool)
    keep[0, 0] = False
    context = PressContext(adapter=qa.adapter, question=QUESTION, encoded=encoded)
    with pytest.raises(ValueError, match="whole temporal units"):
        ToMePress(tokens_per_frame=2).select_tokens(encoded, keep, context)
    for kwargs in ({"tokens_per_frame": 0}, {"clip_frames": 0}, {"tokens_per_frame": 2.0}, {"clip_frames": True}):
        with pytest.raises(ValueError):
            ToMePress(**kwargs)
