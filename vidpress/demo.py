"""The offline demo: a generated long video with a needle, a question about it, and the embedded default model."""

from __future__ import annotations

import tempfile
from pathlib import Path

from vidpress.pipeline import VideoQA
from vidpress.presses.base import Press
from vidpress.synth import make_sample, needle_kept, prompt
from vidpress.tiny import build_tiny
from vidpress.video.write import write_video

MODEL_NOTE = "Model: a tiny Qwen-VL built from a config with random weights (untrained): its answers are noise; the stages and statistics are real."


def run_demo(
    presses: list[Press],
    *,
    num_frames: int = 64,
    family: str = "qwen2_5_vl",
    seed: int = 0,
    output: Path | None = None,
) -> dict:
    """Write a needle video as mp4, ask about it through the whole pipeline, and report what was kept."""
    sample = make_sample("needle", num_frames, seed=seed, height=112, width=112)
    with tempfile.TemporaryDirectory() as folder:
        path = write_video(output or Path(folder) / "needle.mp4", sample.array(), fps=sample.fps)
        model, processor = build_tiny(family, seed=seed)
        answer = VideoQA(model, processor).ask(path, prompt(sample), press=presses, num_frames=num_frames, max_new_tokens=8)
    kept = answer.stats.kept_frames
    return {
        "model_note": MODEL_NOTE,
        "question": prompt(sample),
        "answer": answer,
        "ground_truth": f"{sample.answer}. {sample.answer_text} (needle frames {sample.needle_frames})",
        "kept": f"{len(kept)} of {sample.num_frames} frames; needle kept: {needle_kept(sample, kept):.0%}",
    }
