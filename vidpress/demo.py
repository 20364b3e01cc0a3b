"""The offline demo: a generated long video with a needle, a question about it, and the embedded default model."""

from __future__ import annotations

import tempfile
from pathlib import Path

from vidpress.pipeline import VideoQA
from vidpress.presses import ReTaKePress
from vidpress.presses.base import Press
from vidpress.report import write_report
from vidpress.synth import make_sample, needle_kept, prompt
from vidpress.tiny import build_tiny
from vidpress.video import load_video
from vidpress.video.write import write_video

TRAINED_MODEL = Path(__file__).parent / "assets" / "vidpress-tiny"
RANDOM_NOTE = "Model: a tiny Qwen-VL built from a config with random weights (untrained): its answers are noise; the stages and statistics are real."
TRAINED_NOTE = "Model: vidpress-tiny, a small Qwen2.5-VL trained from scratch on vidpress's synthetic suite (docs/tiny_model.md)."
DEFAULT_FRAMES = 256


def default_presses() -> list[Press]:
    """The demo's press when none is asked for: ReTaKe keeping 1/8 of the video's KV entries."""
    return [ReTaKePress(ratio=0.125)]


def default_qa(family: str = "qwen2_5_vl", seed: int = 0) -> tuple[VideoQA, str]:
    """The embedded default: vidpress-tiny when it ships in the package (Qwen2.5-VL), else a random tiny model."""
    if family == "qwen2_5_vl" and (TRAINED_MODEL / "model.safetensors").exists():
        return VideoQA.from_pretrained(TRAINED_MODEL, device="cpu", dtype="float32"), TRAINED_NOTE
    return VideoQA(*build_tiny(family, seed=seed)), RANDOM_NOTE


def run_demo(
    presses: list[Press] | None = None,
    *,
    num_frames: int = DEFAULT_FRAMES,
    family: str = "qwen2_5_vl",
    seed: int = 0,
    output: Path | None = None,
    report: Path | None = None,
) -> dict:
    """Write a needle video as mp4, ask about it through the whole pipeline, and report what was kept.

    ``presses`` None: :func:`default_presses`; ``[]`` asks without compression.
    """
    presses = default_presses() if presses is None else presses
    sample = make_sample("needle", num_frames, seed=seed, height=112, width=112)
    qa, note = default_qa(family, seed)
    with tempfile.TemporaryDirectory() as folder:
        path = write_video(output or Path(folder) / "needle.mp4", sample.array(), fps=sample.fps)
        video = load_video(path, num_frames=num_frames)
    answer = qa.ask(video, prompt(sample), press=presses, max_new_tokens=8)
    kept = answer.stats.kept_frames
    result = {
        "model_note": note,
        "question": prompt(sample),
        "answer": answer,
        "ground_truth": f"{sample.answer}. {sample.answer_text} (needle frames {sample.needle_frames})",
        "kept": f"{len(kept)} of {sample.num_frames} frames; needle kept: {needle_kept(sample, kept):.0%}",
    }
    if report is not None:
        rows = {"question": sample.question, "answer": answer.text, "ground truth": result["ground_truth"],
                "presses": ", ".join(type(p).__name__ for p in presses) or "none", "kept": result["kept"]}
        write_report(report, video.frames, list(video.frame_indices), kept, rows, highlight=sample.needle_frames)
    return result
