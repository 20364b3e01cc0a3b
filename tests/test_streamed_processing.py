"""Streamed preprocessing: the video processor run chunk by chunk in worker threads gives the whole-video
call's prompt and pixel values, and VideoQA's answers do not change."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np
import pytest
import torch
from transformers import BatchFeature
from transformers.video_utils import VideoMetadata

from vidpress.adapters import streamed_processing
from vidpress.adapters.streamed_processing import PendingPrompt, PixelStream, stream_processor
from vidpress.tiny import FAMILIES, build_processor, build_tokenizer
from vidpress.video import Video

from tests.helpers import random_frames

SIZES = {"qwen2_vl": (56, 112), "qwen2_5_vl": (56, 112), "qwen3_vl": (64, 112)}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _processor_call(processor, frames: np.ndarray, streamed: bool, chunk: int = 4, exact_device=None):
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}],
        add_generation_prompt=True, tokenize=False,
    )
    height, width = frames.shape[1:3]
    metadata = VideoMetadata(
        total_num_frames=len(frames), fps=2.0, duration=len(frames) / 2, frames_indices=list(range(len(frames))),
        width=width, height=height,
    )
    kwargs = dict(video_metadata=[metadata], do_sample_frames=False)
    if streamed:
        return stream_processor(processor, text, frames, chunk, torch.float32, exact_device=exact_device, **kwargs)
    return processor(text=[text], videos=[frames], return_tensors="pt", **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("num_frames", [9, 16, 23])
def test_stream_equals_whole_video_call(tokenizer, family, num_frames, monkeypatch):
    monkeypatch.setattr(streamed_processing, "FIRST_CHUNK_FRAMES", 2)  # a first chunk shorter than the others
    processor = build_processor(family, tokenizer, max_side=max(SIZES[family]))
    frames = random_frames(num_frames, *SIZES[family], seed=num_frames)
    whole = _processor_call(processor, frames, streamed=False)
    real = processor.video_processor
    streamed = _processor_call(processor, frames, streamed=True)
    assert processor.video_processor is real, "the call runs on a copy: the processor itself is never changed"
    assert isinstance(streamed, PendingPrompt) and isinstance(streamed["pixel_values_videos"], PixelStream)
    assert len(streamed["pixel_values_videos"]) == 1 + -(-(num_frames - 2) // 4)
    assert set(streamed) == set(whole)
    for key, value in whole.items():
        if key == "pixel_values_videos":
            assert torch.equal(torch.cat(list(streamed[key])), value)
        elif isinstance(value, torch.Tensor):
            assert torch.equal(streamed[key], value) and streamed[key].dtype == value.dtype, key
        else:
            assert streamed[key] == value, key


def test_no_stream_where_the_size_depends_on_the_frame_count(tokenizer):
    # Qwen3-VL resizes under a pixel budget over the whole video: a 4-frame chunk would keep more pixels
    processor = build_processor("qwen3_vl", tokenizer, max_side=112)
    processor.video_processor.size = {"shortest_edge": 1024, "longest_edge": 16 * 64 * 112}
    frames = random_frames(16, 64, 112)
    assert _processor_call(processor, frames, streamed=True) is None
    assert _processor_call(processor, frames[:4], streamed=True) is None  # one chunk: nothing to stream


@pytest.mark.parametrize("height,resized", [(56, False), (50, True)])
def test_exact_device_only_for_frames_kept_at_their_size(tokenizer, monkeypatch, height, resized):
    processor = build_processor("qwen2_5_vl", tokenizer, max_side=112)
    real_call = type(processor.video_processor).__call__
    devices = []

    def spy(self, videos, **kwargs):
        devices.append(kwargs.get("device"))
        return real_call(self, videos, **kwargs)

    monkeypatch.setattr(type(processor.video_processor), "__call__", spy)
    frames = random_frames(10, height, 112)
    streamed = _processor_call(processor, frames, streamed=True, exact_device=torch.device("cpu"))
    whole = _processor_call(processor, frames, streamed=False)
    assert torch.equal(torch.cat(list(streamed["pixel_values_videos"])), whole["pixel_values_videos"])
    # the first chunk (with the prompt) and the whole-video call as asked, the streamed chunks (read last) on
    # the exact device unless resized
    assert devices == [None, None] + [None if resized else "cpu"] * 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("family", FAMILIES)
def test_exact_device_gives_the_cpu_pixels_on_cuda(tokenizer, family):
    size = (64, 128) if family == "qwen3_vl" else SIZES[family]  # kept at its size: multiples of 32 / 28
    processor = build_processor(family, tokenizer, max_side=max(size))
    frames = random_frames(23, *size, seed=5)
    streamed = _processor_call(processor, frames, streamed=True, exact_device=torch.device("cuda"))
    pixels = list(streamed["pixel_values_videos"])
    assert pixels[0].device.type == "cpu" and pixels[-1].device.type == "cuda"
    whole = _processor_call(processor, frames, streamed=False)
    assert torch.equal(torch.cat([p.cpu() for p in pixels]), whole["pixel_values_videos"])


def test_pending_prompt_waits_only_for_what_is_not_ready():
    grid, ids = torch.tensor([[3, 2, 2]]), torch.tensor([[1, 2, 3]])
    call = Future()
    prompt = PendingPrompt({"video_grid_thw": grid, "pixel_values_videos": "stream"}, call)
    assert prompt["video_grid_thw"] is grid and prompt["pixel_values_videos"] == "stream"  # no wait
    prompt["timestamps"] = torch.zeros(3)
    read = []
    reader = threading.Thread(target=lambda: read.append(prompt["input_ids"]))
    reader.start()
    reader.join(0.2)
    assert reader.is_alive() and not read, "the prompt's tokens wait for the processor's call"
    call.set_result(BatchFeature({"input_ids": ids, "video_grid_thw": grid.clone(), "pixel_values_videos": "first chunk"}))
    reader.join(5)
    assert read == [ids]
    assert list(prompt) == ["input_ids", "video_grid_thw", "pixel_values_videos", "timestamps"]
    assert prompt["video_grid_thw"] is grid and prompt["pixel_values_videos"] == "stream"  # the ready keys stay
    assert torch.equal(dict(prompt.to("cpu"))["input_ids"], ids)

    failed = Future()
    failed.set_exception(ValueError("bad prompt"))
    with pytest.raises(ValueError, match="bad prompt"):
        PendingPrompt({"video_grid_thw": grid}, failed)["input_ids"]


def test_pixel_stream_bounds_work_ahead_and_reports_errors():
    started, consumed = [], []
    gate = threading.Event()

    def process(part):
        started.append(int(part[0]))
        if int(part[0]) == 3:
            gate.wait(5)
        return torch.tensor([float(part[0])])

    stream = PixelStream(torch.zeros(1), [np.array([i]) for i in range(1, 6)], process, torch.float64, workers=2)
    for rows in stream:
        consumed.append(float(rows))
        assert rows.dtype == torch.float64
        assert max(started, default=0) <= len(consumed) + 1  # at most two chunks ahead of the one read
        gate.set()
    assert consumed == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(RuntimeError, match="read once"):
        list(stream)

    def failing(part):
        raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        list(PixelStream(torch.zeros(1), [np.array([1])], failing, torch.float32))


@pytest.mark.parametrize("family", FAMILIES)
def test_videoqa_streamed_answers_equal(tiny_qa, family, monkeypatch):
    qa = tiny_qa[family]
    video = Video.from_array(random_frames(13, *SIZES[family], seed=3), fps=2.0)
    streams = []
    real_iter = PixelStream.__iter__

    def spy(self):
        streams.append(len(self))
        return real_iter(self)

    monkeypatch.setattr(PixelStream, "__iter__", spy)
    answers = {}
    monkeypatch.setattr(qa, "encode_chunk_frames", 4)
    for stream in (False, True):
        monkeypatch.setattr(qa, "stream_preprocess", stream)
        answers[stream] = qa.ask_many(video, ["What happens?", "What is red?"], max_new_tokens=6)
    assert streams == [4]  # only the streamed run read a stream (once), of 13 frames in 4-frame chunks
    assert [a.token_ids for a in answers[True]] == [a.token_ids for a in answers[False]]
    assert qa.adapter.stream_frames is None
