"""The shipped vidpress-tiny checkpoint: small, loads offline, and answers generated needle questions."""

from __future__ import annotations

import pytest

from vidpress import Video, VideoQA
from vidpress.demo import TRAINED_MODEL
from vidpress.eval.answers import extract_letter
from vidpress.presses import PivotKVPress
from vidpress.synth import make_sample, prompt

pytestmark = pytest.mark.skipif(not (TRAINED_MODEL / "model.safetensors").exists(), reason="vidpress-tiny not shipped")


@pytest.fixture(scope="module")
def qa() -> VideoQA:
    return VideoQA.from_pretrained(TRAINED_MODEL, device="cpu", dtype="float32")


def test_checkpoint_fits_the_package_budget():
    assert sum(f.stat().st_size for f in TRAINED_MODEL.iterdir()) < 20 * 2**20


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_answers_a_generated_needle_question(qa, seed):
    sample = make_sample("needle", 64, seed=2**31 + 7 + seed, height=112, width=112)
    answer = qa.ask(Video.from_array(sample.array(), sample.fps), prompt(sample), max_new_tokens=8)
    assert extract_letter(answer.text, sample.options) == sample.answer, (answer.text, sample.answer_text)


def test_answers_through_a_compressing_press(qa):
    sample = make_sample("needle", 128, seed=2**31 + 11, height=112, width=112)
    answer = qa.ask(Video.from_array(sample.array(), sample.fps), prompt(sample), press=PivotKVPress(ratio=0.25), max_new_tokens=8)
    assert max(answer.stats.kv_length_per_layer) < answer.stats.llm_input_length
    assert extract_letter(answer.text, sample.options) == sample.answer


def test_demo_answers_its_needle_question_with_the_default_press():
    from vidpress.demo import run_demo

    result = run_demo(num_frames=128, seed=3)
    assert result["answer"].text == result["ground_truth"].split(". ", 1)[1].split(" (")[0]
    assert max(result["answer"].stats.kv_length_per_layer) < result["answer"].stats.llm_input_length / 4
