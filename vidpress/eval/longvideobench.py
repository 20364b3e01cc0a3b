"""LongVideoBench (https://arxiv.org/abs/2407.15754): referring reasoning over videos of up to an hour.

Annotation format (``lvb_val.json`` / ``lvb_test_wo_gt.json`` of longvideobench/LongVideoBench): a JSON
list of ``{video_id, question, question_wo_referring_query, candidates [texts], correct_choice (0-based
index; absent in the test file), position, topic_category, question_category, level, id, video_path,
subtitle_path, duration_group (15, 60, 600 or 3600 seconds), starting_timestamp_for_subtitles, duration}``.
The Hugging Face parquet has ``option0`` ... ``option4`` ("N/A" when unused) instead of ``candidates``; both
are read. Videos are ``videos/<video_path>``. Categories are the 17 question categories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidpress.eval.benchmark import Benchmark
from vidpress.eval.files import VideoFinder, read_annotation_file
from vidpress.eval.records import Sample, answer_letter

# lmms-eval's longvideobench_val_v task (the benchmark authors' prompt): the question, "A. ..." option lines,
# then the post_prompt "Answer with the option's letter from the given choices directly.\n".
TEMPLATE = "{question}\n{options}\nAnswer with the option's letter from the given choices directly.\n"
OPTION_LINE = "{letter}. {text}"


def _candidates(row: dict[str, Any]) -> tuple[str, ...]:
    if "candidates" in row:
        return tuple(str(text) for text in row["candidates"])
    return tuple(str(row[f"option{i}"]) for i in range(5) if row.get(f"option{i}") not in (None, "N/A"))


def load(data: Path, video_dir: Path) -> list[Sample]:
    """Samples of a LongVideoBench annotation file (JSON with candidates, or parquet with option0-4)."""
    finder = VideoFinder(video_dir)
    samples = []
    for row in read_annotation_file(data):
        options = _candidates(row)
        samples.append(
            Sample(
                id=str(row["id"]),
                video=finder.find(row["video_path"], f"videos/{row['video_path']}"),
                question=row["question"],
                options=options,
                answer=answer_letter(row.get("correct_choice"), options),
                benchmark="longvideobench",
                categories=(row["question_category"],),
                duration_group=str(row["duration_group"]),
                extra={key: row.get(key) for key in ("video_id", "topic_category", "level", "duration", "position")},
            )
        )
    return samples


LONGVIDEOBENCH = Benchmark("longvideobench", TEMPLATE, OPTION_LINE, load, max_new_tokens=32)
