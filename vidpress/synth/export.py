"""Write samples to disk as real mp4 files plus JSON annotations, and read the annotations back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidpress.synth.sample import SynthSample
from vidpress.video.write import write_video

ANNOTATIONS = "annotations.jsonl"


def write_sample(sample: SynthSample, folder: str | Path) -> Path:
    """Write ``folder/<name>.mp4`` and its record ``folder/<name>.json``; return the mp4 path.

    The whole video is rendered into memory first (T x H x W x 3 bytes), as write_video takes an array.
    """
    folder = Path(folder)
    path = write_video(folder / f"{sample.name}.mp4", sample.array(), fps=sample.fps)
    (folder / f"{sample.name}.json").write_text(json.dumps(sample.record(path.name)) + "\n")
    return path


def write_suite(samples: Sequence[SynthSample], folder: str | Path) -> Path:
    """Write every video to ``folder/videos/`` and one record per line to ``folder/annotations.jsonl``; return that file.

    Record fields: video (path relative to ``folder``), question, options, answer, task, needle_frames, needles,
    depth, num_frames, fps, height, width, seed.
    """
    folder = Path(folder)
    names = [sample.name for sample in samples]
    if len(set(names)) != len(names):
        raise ValueError("samples must have distinct names (task, length, depth, seed)")
    lines = []
    for sample in samples:
        relative = f"videos/{sample.name}.mp4"
        write_video(folder / relative, sample.array(), fps=sample.fps)
        lines.append(json.dumps(sample.record(relative)))
    path = folder / ANNOTATIONS
    path.write_text("".join(line + "\n" for line in lines))
    return path


def read_annotations(path: str | Path) -> list[dict[str, Any]]:
    """The records of an annotations.jsonl file, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
