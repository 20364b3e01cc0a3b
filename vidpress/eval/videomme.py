"""Video-MME (https://arxiv.org/abs/2405.21075): 900 videos, 2,700 four-option questions, short / medium / long.

Two annotation formats are read:

- the flat table of the Hugging Face release (``videomme/test-00000-of-00001.parquet``, or the same rows as
  JSON): ``video_id, duration, domain, sub_category, url, videoID, question_id, task_type, question,
  options ["A. ...", ...], answer "C"``; the video file is ``<videoID>.mp4``;
- the nested JSON of the official repository (BradyFU/Video-MME): per video ``video_id,
  duration_category (or duration), video_category, video_subcategory, url, questions [{question_id,
  task_type, question, choices ["A. ...", ...], answer}]``; the file is named by the YouTube id of ``url``.

Categories are the 12 task types; duration groups are short, medium and long.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vidpress.eval.benchmark import Benchmark
from vidpress.eval.files import VideoFinder, read_annotation_file
from vidpress.eval.records import Sample, answer_letter, option_letter, strip_option_letter

# The official frames-only prompt, from the "Evaluation Pipeline" section of the Video-MME README
# (github.com/BradyFU/Video-MME). lmms-eval's videomme task uses the same words with "and the subtitles".
TEMPLATE = (
    "Select the best answer to the following multiple-choice question based on the video. "
    "Respond with only the letter (A, B, C, or D) of the correct option.\n"
    "{question}\n{options}\nThe best answer is:"
)
OPTION_LINE = "{letter}. {text}"


def _youtube_id(url: str | None) -> str | None:
    match = re.search(r"(?:v=|youtu\.be/)([\w-]{11})", url or "")
    return match.group(1) if match else None


def _sample(row: dict[str, Any], video: dict[str, Any], finder: VideoFinder) -> Sample:
    raw = row.get("options") or row.get("choices")
    options = tuple(strip_option_letter(text, option_letter(i)) for i, text in enumerate(raw))
    stem = video.get("videoID") or _youtube_id(video.get("url")) or str(video["video_id"])
    return Sample(
        id=str(row["question_id"]),
        video=finder.find(stem),
        question=row["question"],
        options=options,
        answer=answer_letter(row.get("answer"), options),
        benchmark="videomme",
        categories=(row["task_type"],),
        duration_group=video.get("duration") or video.get("duration_category"),
        extra={
            "video_id": str(video.get("video_id")),
            "domain": video.get("domain") or video.get("video_category"),
            "sub_category": video.get("sub_category") or video.get("video_subcategory"),
            "url": video.get("url"),
        },
    )


def load(data: Path, video_dir: Path) -> list[Sample]:
    """Samples of a Video-MME annotation file (flat parquet/JSON rows or the official nested JSON)."""
    finder = VideoFinder(video_dir)
    samples = []
    for row in read_annotation_file(data):
        questions = row["questions"] if "questions" in row else [row]
        samples.extend(_sample(question, row, finder) for question in questions)
    return samples


VIDEOMME = Benchmark("videomme", TEMPLATE, OPTION_LINE, load)
