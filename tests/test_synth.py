"""Tests for vidpress.synth: the synthetic long-video suite."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from vidpress.synth import (
    TASKS,
    make_sample,
    make_suite,
    needle_grid,
    needle_kept,
    needle_tokens_kept,
    prompt,
    read_annotations,
    synth_vocabulary_corpus,
    write_sample,
    write_suite,
)
from vidpress.synth.objects import NEEDLE_BACKGROUND
from vidpress.synth.templates import LETTERS, QUARTER_OPTIONS

SMALL = dict(height=56, width=56)


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _true_options(sample) -> list[str]:
    """Options that are correct according to the needle events alone (an independent oracle)."""
    events = sorted(sample.video.needles, key=lambda e: e.start)
    names = [e.object.name for e in events]
    if sample.task == "needle":
        return [o for o in sample.options if o in names]
    if sample.task == "counting":
        target = sample.question.removeprefix("How many times did the ").removesuffix(" appear?")
        return [o for o in sample.options if int(o) == names.count(target)]
    if sample.task == "ordering":
        return [o for o in sample.options if o == names[0]]
    if sample.task == "localisation":
        (event,) = events
        middle = event.start + event.length / 2
        return [o for o in sample.options if QUARTER_OPTIONS.index(o) == min(3, int(4 * middle / sample.num_frames))]
    anchor = sample.question.removeprefix("What object appeared right after the ").removesuffix("?")
    return [o for o in sample.options if o == names[names.index(anchor) + 1]]


def test_same_seed_same_sample_different_seed_differs():
    a, b = make_sample("needle", 96, seed=5, **SMALL), make_sample("needle", 96, seed=5, **SMALL)
    assert (a.question, a.options, a.answer, a.needle_frames) == (b.question, b.options, b.answer, b.needle_frames)
    np.testing.assert_array_equal(a.array(), b.array())
    c = make_sample("needle", 96, seed=6, **SMALL)
    assert c.options != a.options or c.needle_frames != a.needle_frames
    assert not np.array_equal(c.array(), a.array())


def test_streaming_equals_array_and_random_access():
    sample = make_sample("multihop", 160, seed=2, **SMALL)
    frames = sample.array()
    assert frames.shape == (160, 56, 56, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(np.stack(list(sample.frames())), frames)
    for t in (0, 37, sample.needle_frames[0], 159):
        np.testing.assert_array_equal(sample.video.frame(t), frames[t])


def test_needle_frames_stand_out_and_show_the_object():
    sample = make_sample("counting", 200, seed=11, **SMALL)
    frames = sample.array()
    needle_set = set(sample.needle_frames)
    for event in sample.video.needles:
        for t in event.frames:
            frame = frames[t]
            assert tuple(frame[28, 28]) == event.object.rgb  # centred
            assert tuple(frame[0, 0]) == NEEDLE_BACKGROUND
            assert 0.15 < (frame != NEEDLE_BACKGROUND).any(-1).mean() < 0.6  # a big shape, not the whole frame
        for neighbour in (event.start - 1, event.start + event.length):
            if 0 <= neighbour < sample.num_frames and neighbour not in needle_set:
                assert _diff(frames[event.start], frames[neighbour]) > 20


def test_cuts_are_large_and_still_scenes_do_not_change():
    sample = make_sample("needle", 400, seed=3, **SMALL)
    frames, video = sample.array(), sample.video
    needles = set(sample.needle_frames)
    assert len(video.cuts) >= 400 // 40
    for t in video.cuts:
        if t not in needles and t - 1 not in needles:
            assert _diff(frames[t], frames[t - 1]) > 15
    still = [s for s in video.scenes if s.still]
    moving = [s for s in video.scenes if not s.still and s.length > 1]
    assert still and moving
    for scene in still:
        for t in range(scene.start + 1, scene.end):
            if t not in needles and t - 1 not in needles:
                assert _diff(frames[t], frames[t - 1]) == 0
    for scene in moving:
        diffs = [_diff(frames[t], frames[t - 1]) for t in range(scene.start + 1, scene.end) if {t, t - 1}.isdisjoint(needles)]
        assert max(diffs) < 6  # consecutive frames stay similar
        assert _diff(frames[scene.start], frames[scene.end - 1]) > 0  # but something moves


@pytest.mark.parametrize("task", TASKS)
def test_exactly_one_correct_option(task):
    for seed in range(30):
        sample = make_sample(task, 128, seed=seed)
        assert len(sample.options) == 4 and len(set(sample.options)) == 4
        assert sample.answer in LETTERS
        assert _true_options(sample) == [sample.answer_text]


def test_counting_ordering_localisation_ground_truth():
    for seed in range(20):
        counting = make_sample("counting", 128, seed=seed)
        assert int(counting.answer_text) == len(counting.video.needles)
        assert len({e.object for e in counting.video.needles}) == 1

        ordering = make_sample("ordering", 128, seed=seed)
        first, second = ordering.video.needles
        assert first.start + first.length < second.start
        assert ordering.answer_text == first.object.name and second.object.name in ordering.options

        localisation = make_sample("localisation", 128, seed=seed)
        (event,) = localisation.video.needles
        quarter = QUARTER_OPTIONS.index(localisation.answer_text)
        assert quarter * 32 <= event.start and event.start + event.length <= (quarter + 1) * 32
    assert make_sample("localisation", 256, depth=0.0, seed=0).answer_text == "beginning"
    assert make_sample("localisation", 256, depth=1.0, seed=0).answer_text == "end"


def test_depth_places_the_first_needle():
    for depth in (0.0, 0.3, 0.75, 1.0):
        sample = make_sample("needle", 1000, depth=depth, seed=1)
        event = sample.video.needles[0]
        assert sample.depth == pytest.approx(depth, abs=1e-2)
        assert event.start == round(depth * (1000 - event.length))
    assert make_sample("ordering", 1000, depth=0.2, seed=1).video.needles[0].start == pytest.approx(200, abs=2)
    with pytest.raises(ValueError):
        make_sample("multihop", 64, depth=0.95, seed=0)


def test_answer_letters_roughly_uniform():
    for task in TASKS:
        answers = [make_sample(task, 128, seed=seed).answer for seed in range(200)]
        assert all(answers.count(letter) > 30 for letter in LETTERS), task


def test_vocabulary_covers_every_prompt_line():
    corpus = set(synth_vocabulary_corpus())
    for sample in make_suite(TASKS, [64, 256], 10, seed=0):
        lines = prompt(sample).splitlines()
        assert lines[0] == sample.question and lines[-1] == "Answer with the option's letter from the given choices directly."
        assert lines[1] == f"A. {sample.options[0]}"
        assert set(lines) <= corpus and sample.answer in corpus


def test_write_sample_decodes_to_every_frame(tmp_path):
    sample = make_sample("needle", 64, seed=4, **SMALL)
    path = write_sample(sample, tmp_path)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 64 and decoded[0].shape == (56, 56, 3)
    t = sample.needle_frames[0]
    assert _diff(decoded[t], sample.video.frame(t)) < 8  # lossy but faithful
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["video"] == path.name and record["answer"] == sample.answer


def test_write_suite_annotations_round_trip(tmp_path):
    samples = make_suite(["needle", "counting"], [64], 1, seed=9, **SMALL)
    path = write_suite(samples, tmp_path)
    records = read_annotations(path)
    assert records == [s.record(f"videos/{s.name}.mp4") for s in samples]
    for record, sample in zip(records, samples):
        assert (tmp_path / record["video"]).is_file()
        assert record["needle_frames"] == sample.needle_frames and record["num_frames"] == 64 and record["fps"] == 2.0
        assert {"video", "question", "options", "answer", "task", "needle_frames", "depth", "num_frames", "fps", "seed"} <= record.keys()


def test_make_suite_and_grid_shapes():
    suite = make_suite(["needle", "ordering"], [64, 128], 3, seed=1)
    assert len(suite) == 12 and [s.task for s in suite[:6]] == ["needle"] * 6
    assert [s.num_frames for s in suite[:6]] == [64, 64, 64, 128, 128, 128]
    assert [s.question for s in suite] == [s.question for s in make_suite(["needle", "ordering"], [64, 128], 3, seed=1)]
    grid = needle_grid([64, 256], [0.0, 0.5, 1.0], seed=0)
    assert [(s.num_frames, round(s.depth, 1)) for s in grid] == [(n, d) for n in (64, 256) for d in (0.0, 0.5, 1.0)]
    assert len({s.name for s in grid}) == 6 and {s.answer_text for s in grid} == {grid[0].answer_text}


def test_needle_kept_on_hand_made_keep_lists():
    sample = make_sample("counting", 256, seed=0)
    while len(sample.video.needles) < 3:  # find a sample with several events
        sample = make_sample("counting", 256, seed=sample.seed + 1)
    events = sample.video.needles
    assert needle_kept(sample, []) == 0.0
    assert needle_kept(sample, sample.needle_frames) == 1.0
    assert needle_kept(sample, [events[0].start]) == pytest.approx(1 / len(events))
    assert needle_kept(sample, [events[0].start, events[-1].start + events[-1].length - 1]) == pytest.approx(2 / len(events))
    assert needle_kept(sample, [t for t in range(256) if t not in set(sample.needle_frames)]) == 0.0


def test_needle_tokens_kept_on_hand_made_masks():
    needle_frames = [10, 11, 12, 13]
    frame_indices = [0, 10, 12, 20]  # the frames fed to the model
    mask = np.zeros((4, 8), dtype=bool)
    assert needle_tokens_kept(needle_frames, mask, frame_indices) == 0.0
    mask[1, :4] = True  # half the tokens of frame 10, none of frame 12
    mask[0] = mask[3] = True  # other frames do not count
    assert needle_tokens_kept(needle_frames, mask, frame_indices) == pytest.approx(4 / 16)
    mask[2] = True
    assert needle_tokens_kept(needle_frames, mask, frame_indices) == pytest.approx(12 / 16)
    assert needle_tokens_kept(needle_frames, np.ones((2, 8), bool), [0, 20]) == 0.0  # no needle frame sampled
    torch = pytest.importorskip("torch")
    assert needle_tokens_kept(needle_frames, torch.from_numpy(mask), frame_indices) == pytest.approx(12 / 16)
