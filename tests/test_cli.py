"""The command line: ask on a saved checkpoint, the offline demo, the press list, and argument errors."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from vidpress.cli import app, build_presses
from vidpress.presses import UniformFramePress, press_from_name

runner = CliRunner()


def test_ask_json_with_press(tiny_checkpoints, small_video_path):
    result = runner.invoke(app, [
        "ask", str(small_video_path), "What happened?", "--model", str(tiny_checkpoints["qwen2_vl"]),
        "--frames", "8", "--press", "uniform", "--press-arg", "num_frames=4", "--device", "cpu", "--json",
        "--max-new-tokens", "3",
    ])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["stats"]["frames_sampled"] == 8 and out["stats"]["frames_kept"] == 4
    assert out["stats"]["press"]["UniformFramePress"] == {"num_frames": 4}


@pytest.mark.parametrize("flags,expected", [
    ([], {"stream_preprocess": True, "fast_preprocess": None}),
    (["--no-stream-preprocess", "--no-fast-preprocess"], {"stream_preprocess": False, "fast_preprocess": False}),
    (["--fast-preprocess"], {"stream_preprocess": True, "fast_preprocess": True}),
])
def test_ask_preprocessing_switches_reach_the_model(tiny_checkpoints, small_video_path, monkeypatch, flags, expected):
    from vidpress.pipeline import VideoQA

    seen = {}
    real = VideoQA.from_pretrained

    def from_pretrained(name, **kwargs):
        seen.update(kwargs)
        return real(name, **kwargs)

    monkeypatch.setattr(VideoQA, "from_pretrained", from_pretrained)
    result = runner.invoke(app, [
        "ask", str(small_video_path), "What happened?", "--model", str(tiny_checkpoints["qwen2_5_vl"]),
        "--frames", "8", "--device", "cpu", "--json", "--max-new-tokens", "2", *flags,
    ])
    assert result.exit_code == 0, result.output
    assert {key: seen[key] for key in expected} == expected


def test_ask_reports_a_bad_video(tiny_checkpoints, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    result = runner.invoke(app, ["ask", str(bad), "q", "--model", str(tiny_checkpoints["qwen2_vl"]), "--device", "cpu"])
    assert result.exit_code == 2
    assert "bad.mp4" in result.output


def test_demo_runs_offline_and_writes_a_report(tmp_path):
    page = tmp_path / "run.html"
    result = runner.invoke(app, ["demo", "--frames", "16", "--press", "uniform", "--press-arg", "num_frames=8",
                                 "--report", str(page)])
    assert result.exit_code == 0, result.output
    assert "Model:" in result.output and "Answer:" in result.output and "ground_truth" in result.output
    assert "8 of 16 frames" in result.output
    text = page.read_text()
    assert text.count("<img") == 16 and text.count("#2a2") == 8


def test_presses_lists_uniform():
    result = runner.invoke(app, ["presses"])
    assert result.exit_code == 0 and "UniformFramePress" in result.output


def test_press_arguments_are_parsed_and_checked():
    assert press_from_name("uniform", {"num_frames": "5"}) == UniformFramePress(num_frames=5)
    with pytest.raises(ValueError, match="unknown press"):
        press_from_name("nope")
    with pytest.raises(ValueError, match="no parameter"):
        press_from_name("uniform", {"frames": "5"})
    with pytest.raises(ValueError, match="must be >= 1"):
        press_from_name("uniform", {"num_frames": "0"})
    with pytest.raises(typer.BadParameter, match="say which press"):
        build_presses(["uniform", "uniform"], ["num_frames=3"])
    assert build_presses(["uniform"], ["uniform.num_frames=3"]) == [UniformFramePress(3)]
