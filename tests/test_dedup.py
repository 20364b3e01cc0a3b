"""The near-duplicate frame filter: its functional core on built frame arrays and its press through VideoQA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidpress import load_video
from vidpress.functional import near_duplicate_keep
from vidpress.presses import DedupFramePress, PivotKVPress, press_from_name
from tests.helpers import random_frames

QUESTION = "What object appeared in the video?"


def stretches(lengths: list[int], seed: int = 0) -> np.ndarray:
    """uint8 [sum(lengths), 56, 84, 3]: one random image per stretch, repeated (a static shot between cuts)."""
    shots = random_frames(len(lengths), seed=seed)
    return np.repeat(shots, lengths, axis=0)


def starts(lengths: list[int]) -> list[int]:
    """Index of the first frame of each stretch."""
    return np.cumsum([0, *lengths[:-1]]).tolist()


def flat(levels: list[int], side: int = 16) -> np.ndarray:
    """uint8 [len(levels), side, side, 3] frames of one grey level each."""
    return np.broadcast_to(np.array(levels, dtype=np.uint8)[:, None, None, None], (len(levels), side, side, 3)).copy()


def test_static_stretches_keep_the_first_frame_of_each():
    lengths = [5, 1, 7, 3, 9]
    assert near_duplicate_keep(stretches(lengths), threshold=0.02).tolist() == starts(lengths)


def test_threshold_zero_keeps_every_change_and_drops_exact_duplicates():
    frames = flat([100, 100, 101, 101, 101, 100, 100])
    frames[3, 5, 7, 1] = 102  # one channel of one pixel: a change of its own
    assert near_duplicate_keep(frames, threshold=0.0, size=16).tolist() == [0, 2, 3, 4, 5]
    assert near_duplicate_keep(flat([7] * 5), threshold=0.0).tolist() == [0]


def test_max_gap_forces_a_keep_after_that_many_dropped_frames():
    assert near_duplicate_keep(flat([50] * 10), threshold=0.02, max_gap=3).tolist() == [0, 4, 8]
    lengths = [6, 8]  # the cut at 6 resets the gap
    assert near_duplicate_keep(stretches(lengths), threshold=0.02, max_gap=4).tolist() == [0, 5, 6, 11]


def test_slow_drift_accumulates_against_the_last_kept_frame():
    frames = flat(list(range(100, 120)))  # one grey level (1/255 = 0.0039) per frame
    assert near_duplicate_keep(frames, threshold=0.01).tolist() == list(range(0, 20, 3))


@pytest.mark.parametrize("max_gap", [None, 2, 5])
def test_chunked_processing_equals_one_shot(max_gap):
    rng = np.random.default_rng(0)
    frames = stretches([4, 1, 6, 2, 9, 3], seed=1).astype(np.int16)
    frames += rng.integers(-6, 7, frames.shape[0])[:, None, None, None]  # per-frame brightness jitter
    frames = frames.clip(0, 255).astype(np.uint8)
    one_shot = near_duplicate_keep(frames, threshold=0.015, max_gap=max_gap, chunk_frames=len(frames))
    assert 6 <= len(one_shot) < len(frames), "degenerate test: keeps only cuts or everything"
    for chunk_frames in (1, 2, 3, 7):
        chunked = near_duplicate_keep(frames, threshold=0.015, max_gap=max_gap, chunk_frames=chunk_frames)
        assert chunked.tolist() == one_shot.tolist()
    assert torch.equal(near_duplicate_keep(torch.from_numpy(frames), threshold=0.015, max_gap=max_gap), one_shot)


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": -0.1}, "threshold must be >= 0"),
    ({"threshold": float("nan")}, "threshold must be a finite number"),
    ({"threshold": 0.02, "size": 0}, "size must be >= 1"),
    ({"threshold": 0.02, "max_gap": 0}, "max_gap must be >= 1"),
    ({"threshold": 0.02, "chunk_frames": 0}, "chunk_frames must be >= 1"),
])
def test_functional_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        near_duplicate_keep(flat([1, 2]), **kwargs)
    with pytest.raises(ValueError, match="uint8"):
        near_duplicate_keep(flat([1, 2]).astype(np.float32), threshold=0.02)


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": -1.0}, "threshold must be >= 0"),
    ({"threshold": True}, "threshold must be a finite number"),
    ({"size": 0}, "size must be >= 1"),
    ({"size": 2.5}, "size must be an int"),
    ({"max_gap": 0}, "max_gap must be >= 1"),
    ({"max_frames": 0}, "max_frames must be >= 1"),
])
def test_press_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DedupFramePress(**kwargs)


def test_press_from_name():
    assert press_from_name("dedup", {"threshold": "0.05", "max_gap": "30"}) == DedupFramePress(threshold=0.05, max_gap=30)


def test_max_frames_keeps_that_many_evenly_among_the_survivors():
    lengths = [3, 2, 4, 1, 5, 2]
    video = load_video(list(stretches(lengths)), source_fps=4.0)
    survivors = starts(lengths)
    assert DedupFramePress(max_frames=3).select_frames(video).tolist() == [survivors[i] for i in (1, 3, 5)]
    assert DedupFramePress(max_frames=10).select_frames(video).tolist() == survivors


def test_press_through_videoqa_keeps_the_first_frame_of_each_stretch(tiny_qa, family):
    qa = tiny_qa[family]
    video = load_video(list(stretches([5, 3, 8])), source_fps=4.0)
    answer = qa.ask(video, QUESTION, press=DedupFramePress(), max_new_tokens=4)
    full = qa.ask(video, QUESTION, max_new_tokens=4)
    stats = answer.stats
    assert stats.frames_sampled == 16 and stats.frames_kept == 3
    assert stats.kept_frames == [int(video.frame_indices[i]) for i in (0, 5, 8)]
    assert stats.visual_tokens_after < full.stats.visual_tokens_after
    assert stats.press["DedupFramePress"] == {"threshold": 0.02, "size": 32, "max_gap": None, "max_frames": None}
    assert answer.token_ids == qa.ask(video.select([0, 5, 8]), QUESTION, max_new_tokens=4).token_ids


def test_composes_with_pivotkv(tiny_qa, family):
    qa = tiny_qa[family]
    video = load_video(list(stretches([2, 3, 1, 4, 2, 3, 1])), source_fps=4.0)
    kept = [0, 2, 5, 6, 10, 12, 15]
    pivotkv = PivotKVPress(ratio=0.5, chunk_frames=4)
    answer = qa.ask(video, QUESTION, press=[DedupFramePress(), pivotkv], max_new_tokens=4)
    alone = qa.ask(video.select(kept), QUESTION, press=pivotkv, max_new_tokens=4)
    assert answer.stats.kept_frames == [int(video.frame_indices[i]) for i in kept]
    assert answer.token_ids == alone.token_ids
    assert answer.stats.kv_length_per_layer == alone.stats.kv_length_per_layer
    assert max(answer.stats.kv_length_per_layer) < answer.stats.llm_input_length
