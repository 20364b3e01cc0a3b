"""Composite presses (presets flattened into their parts by ``as_press_list``) and LP-Comp after ToMe."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch
from typer.testing import CliRunner

from vidpress import Video, VideoQA, load_video
from vidpress.cli import app
from vidpress.functional.lpcomp import lpcomp_schedule
from vidpress.presses import (
    DPSelectPress, LPCompPress, PivotKVPress, Press, PressContext, QCCompPress, ReTaKePress, ToMePress,
    UniformFramePress, XCompPress, as_press_list,
)
from vidpress.presses.base import CompositePress
from vidpress.tiny import build_processor
from tests.helpers import random_frames

QUESTION = "What object appeared in the video?"


def make_video(num_frames: int = 12, height: int = 112, width: int = 112) -> Video:
    return load_video(list(random_frames(num_frames, height, width)), source_fps=4.0)


def comparable(answer) -> tuple[list[int], dict]:
    """The answer's tokens and statistics, less the timings and memory of the run."""
    stats = answer.stats.to_dict()
    del stats["seconds"], stats["peak_memory_gib"]
    return answer.token_ids, stats


# -- the mechanism -------------------------------------------------------------------------------------------
@dataclass
class Recorder(Press):
    """Records every stage call; prefills the video in chunks of 4 frames."""

    log: list = field(default_factory=list)
    chunk_frames: ClassVar[int] = 4

    def select_frames(self, video):
        self.log.append("select_frames")

    def encoder_hooks(self, context):
        self.log.append("encoder_hooks")
        return contextlib.nullcontext()

    def select_tokens(self, encoded, keep, context):
        self.log.append("select_tokens")
        return keep

    def prefill_hooks(self, context):
        self.log.append("prefill_hooks")
        return contextlib.nullcontext()

    def before_segment(self, segment, context, *, is_video):
        self.log.append("before_video" if is_video else "before_text")

    def after_segment(self, segment, cache, context, *, is_video):
        self.log.append("after_video" if is_video else "after_text")


@dataclass
class RecordingPreset(CompositePress):
    log: list = field(default_factory=list)
    part_types: ClassVar[tuple[type[Press], ...]] = (UniformFramePress, Recorder)

    def parts(self) -> list[Press]:
        return [UniformFramePress(num_frames=12), Recorder(self.log)]


def test_stages_are_the_parts_stages():
    assert XCompPress.stages == ("token", "layer") and ReTaKePress.stages == ("token", "kv")
    assert RecordingPreset.stages == ("frame",)
    for preset in (XCompPress(), ReTaKePress(), RecordingPreset()):
        assert [type(p) for p in preset.parts()] == list(type(preset).part_types)


def test_cli_lists_the_stages_of_presets():
    result = CliRunner().invoke(app, ["presses"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 2}
    assert "token,layer" in rows["xcomp"] and "token,kv" in rows["retake"]


def test_as_press_list_flattens_presets():
    uniform = UniformFramePress(num_frames=4)
    assert as_press_list(XCompPress(n_select=8, schedule="ceil")) == [QCCompPress(n_select=8), LPCompPress(schedule="ceil")]
    flat = as_press_list([uniform, ReTaKePress(ratio=0.5, chunk_frames=8)])
    assert flat == [uniform, DPSelectPress(), PivotKVPress(ratio=0.5, chunk_frames=8)]
    preset = ReTaKePress()
    preset.ratio = 0.25
    assert as_press_list(preset)[1].ratio == 0.25, "the parts follow the preset's current fields"
    assert as_press_list(None) == [] and as_press_list(uniform) == [uniform]
    with pytest.raises(TypeError):
        as_press_list([XCompPress(), "uniform"])


def test_nested_presets_are_flattened():
    @dataclass
    class Outer(CompositePress):
        part_types: ClassVar[tuple[type[Press], ...]] = (UniformFramePress, XCompPress)

        def parts(self) -> list[Press]:
            return [UniformFramePress(num_frames=16), XCompPress(n_select=4)]

    assert Outer.stages == ("frame", "token", "layer")
    assert [type(p) for p in as_press_list([Outer()])] == [UniformFramePress, QCCompPress, LPCompPress]


@pytest.mark.parametrize("build", [
    lambda: XCompPress(n_select=0),
    lambda: XCompPress(schedule="cosine"),
    lambda: XCompPress(keep="prefix"),
    lambda: ReTaKePress(ratio=2.0),
    lambda: ReTaKePress(keep_ratio=0.0),
    lambda: ReTaKePress(chunk_frames=0),
])
def test_invalid_preset_parameters(build):
    with pytest.raises(ValueError):
        build()


def test_every_stage_of_the_parts_runs_without_forwarding(tiny_qa):
    qa = tiny_qa["qwen2_vl"]
    video = make_video()
    preset = RecordingPreset()
    answer = qa.ask(video, QUESTION, press=preset, max_new_tokens=4)
    assert answer.token_ids == qa.ask(video, QUESTION, max_new_tokens=4).token_ids
    assert preset.log[:4] == ["select_frames", "encoder_hooks", "select_tokens", "prefill_hooks"]
    # text before the video, 3 chunks of 4 frames (the part's chunk_frames), then the question
    segments = ["text"] + ["video"] * 3 + ["text"]
    assert preset.log[4:] == [f"{when}_{kind}" for kind in segments for when in ("before", "after")]
    assert answer.stats.press["UniformFramePress"] == {"num_frames": 12}


# -- the presets equal their lists ---------------------------------------------------------------------------
def test_xcomp_preset_equals_the_explicit_list(tiny_qa, family):
    qa = tiny_qa[family]
    video = make_video()
    preset = qa.ask(video, QUESTION, press=XCompPress(n_select=4, schedule="ceil"), max_new_tokens=6)
    listed = qa.ask(video, QUESTION, press=[QCCompPress(n_select=4), LPCompPress(schedule="ceil")], max_new_tokens=6)
    assert comparable(preset) == comparable(listed)
    assert preset.stats.frames_kept == 4 * qa.adapter.temporal_patch_size // 2
    assert preset.stats.kv_length_per_layer[-1] < preset.stats.kv_length_per_layer[0]
    assert preset.stats.press["QCCompPress"]["n_select"] == 4 and preset.stats.press["LPCompPress"]["schedule"] == "ceil"


def test_retake_preset_equals_the_explicit_list(tiny_qa, family):
    qa = tiny_qa[family]
    video = make_video()
    preset = qa.ask(video, QUESTION, press=ReTaKePress(ratio=0.4, chunk_frames=4), max_new_tokens=6)
    listed = qa.ask(video, QUESTION, press=[DPSelectPress(), PivotKVPress(ratio=0.4, chunk_frames=4)], max_new_tokens=6)
    plain = qa.ask(video, QUESTION, max_new_tokens=6)
    assert comparable(preset) == comparable(listed)
    assert all(k < p for k, p in zip(preset.stats.kv_length_per_layer, plain.stats.kv_length_per_layer))
    assert preset.stats.press["PivotKVPress"]["chunk_frames"] == 4


# -- LP-Comp after ToMe --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def large_qa(tiny_qa) -> dict[str, VideoQA]:
    """The tiny models with processors for 224-pixel frames (48 or 35 visual tokens per temporal unit)."""
    return {
        family: VideoQA(qa.model, build_processor(family, qa.processor.tokenizer, max_side=224))
        for family, qa in tiny_qa.items()
    }


def large_video() -> Video:
    """12 frames of 168 x 224: 6 temporal units, ToMe clips of 4 + 2 units."""
    return make_video(12, 168, 224)


def test_lpcomp_after_tome_cuts_each_clip_by_count(large_qa, family):
    qa = large_qa[family]
    adapter = qa.adapter
    presses = [ToMePress(16, clip_frames=4), LPCompPress(16)]
    encoded = adapter.encode(adapter.prepare(large_video(), QUESTION))
    context = PressContext(adapter=adapter, question=QUESTION, encoded=encoded)
    keep = presses[0].select_tokens(encoded, torch.ones(encoded.features.shape[:2], dtype=torch.bool), context)
    counts = keep.sum(1)
    assert int(counts.sum()) == 6 * 16 and int(counts[:4].sum()) == 4 * 16
    assert bool((counts % 16 != 0).any()), "ToMe left whole frames in every unit: the test proves nothing"
    context.inputs = inputs = adapter.build_inputs(encoded, keep)
    plan = presses[1].plan(context)
    video_rows = inputs.is_video.nonzero().squeeze(1)
    assert (plan[-1, video_rows].nonzero().squeeze(1)).tolist() == list(range(15, 96, 16)), "one token per 16, the last"

    answer = qa.ask(large_video(), QUESTION, press=presses, max_new_tokens=6)
    text = answer.stats.llm_input_length - answer.stats.visual_tokens_after
    schedule = lpcomp_schedule(16, len(adapter.decoder_layers))
    assert answer.stats.visual_tokens_after == 96 and len(answer.token_ids) == 6
    assert answer.stats.kv_length_per_layer == [text + 6 * s for s in schedule]


def test_lpcomp_keeping_everything_after_tome_equals_tome_alone(large_qa, family):
    qa = large_qa[family]
    layers = len(qa.adapter.decoder_layers)
    tome = qa.ask(large_video(), QUESTION, press=ToMePress(16, clip_frames=4), max_new_tokens=8)
    both = qa.ask(large_video(), QUESTION, press=[ToMePress(16, clip_frames=4), LPCompPress(16, schedule=(16,) * layers)],
                  max_new_tokens=8)
    assert both.token_ids == tome.token_ids
    assert both.stats.kv_length_per_layer == tome.stats.kv_length_per_layer
    assert tome.stats.visual_tokens_after == 96 < tome.stats.visual_tokens_before
