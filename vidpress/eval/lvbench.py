"""LVBench (https://arxiv.org/abs/2406.08035): extreme long videos (about an hour and more), six capabilities.

Annotation format (github.com/THUDM/LVBench, ``video_info.meta.jsonl``): one line per video ``{key (the
YouTube id, the file is <key>.mp4), type, video_info, qa [{uid, question, answer "B", question_type
[labels], time_reference}]}``. The options are inside ``question`` as lines "(A) ...". A question may
carry several of the six category labels (key information retrieval, event understanding,
summarization, entity recognition, reasoning, temporal grounding); per-category accuracy counts it in
each, as the official ``compute_accuracy`` does. LVBench has no duration groups.
"""

from __future__ import annotations

import re
from pathlib import Path

from vidpress.eval.benchmark import Benchmark
from vidpress.eval.files import VideoFinder, read_annotation_file
from vidpress.eval.records import Sample, answer_letter

# lmms-eval's lvbench task (lmms_eval/tasks/lvbench): the question, the "(A) ..." option lines, and
# its post_prompt "\nAnswer the question with the option letter".
TEMPLATE = "{question}\n{options}\nAnswer the question with the option letter"
OPTION_LINE = "({letter}) {text}"

_OPTION = re.compile(r"^\(([A-Z])\)\s*(.*)$")


def split_options(text: str) -> tuple[str, tuple[str, ...]]:
    """The question stem and the option texts of an LVBench question with "(A) ..." lines."""
    lines = text.strip().splitlines()
    matches = [_OPTION.match(line.strip()) for line in lines]
    first = next((i for i, match in enumerate(matches) if match), len(lines))
    options = tuple(match.group(2).strip() for match in matches[first:] if match)
    return "\n".join(lines[:first]).strip(), options


def load(data: Path, video_dir: Path) -> list[Sample]:
    """Samples of LVBench's ``video_info.meta.jsonl``."""
    finder = VideoFinder(video_dir)
    samples = []
    for video in read_annotation_file(data):
        path = finder.find(video["key"])
        for qa in video["qa"]:
            question, options = split_options(qa["question"])
            samples.append(
                Sample(
                    id=str(qa["uid"]),
                    video=path,
                    question=question,
                    options=options,
                    answer=answer_letter(qa.get("answer"), options),
                    benchmark="lvbench",
                    categories=tuple(qa.get("question_type") or ()),
                    extra={"key": video["key"], "video_type": video.get("type"), "time_reference": qa.get("time_reference")},
                )
            )
    return samples


LVBENCH = Benchmark("lvbench", TEMPLATE, OPTION_LINE, load)
