"""MLVU (https://arxiv.org/abs/2406.04264): multi-task long-video understanding, dev and test splits.

Annotation format (github.com/JUNJIE99/MLVU; Hugging Face MLVU/MVLU and MLVU/MLVU_Test): JSON lists of
``{video, duration, question, candidates [texts], answer (the text of the correct candidate),
question_type}``, one file per task in ``json/`` for dev (``1_plotQA.json`` ... ``7_topic_reasoning.json``;
the generation tasks ``8_sub_scene`` and ``9_summary`` have no candidates and are skipped), one file with a
``question_id`` per question for test (six candidates; where the answers are withheld, ``answer`` is None).
Videos sit in ``video/<task folder>/`` (dev) or ``video/`` (test). Pass the MLVU folder (or its ``json``
folder, or one file) as ``data``.

MLVU reports M-Avg, the mean of the per-task accuracies: the headline here is the macro accuracy.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from vidpress.eval.benchmark import Benchmark
from vidpress.eval.files import VideoFinder, read_annotation_file
from vidpress.eval.records import Sample, answer_letter

# The official multiple-choice prompt of MLVU's evaluation code (github.com/JUNJIE99/MLVU, videochat2/
# choice_bench.py and Evaluation_Test/test_bench.py): the "Carefully watch..." system message, then
# "Question: ... Options: (A) ...", "Only give the best option.", and the answer opened with "Best option: (".
# VideoQA has one user turn, so the system message leads it and the answer opening ends it, as in
# lmms-eval's mlvu_dev task.
TEMPLATE = (
    "Carefully watch this video and pay attention to every detail. Based on your observations, "
    "select the best option that accurately addresses the question.\n"
    "Question: {question}\nOptions:\n{options}\nOnly give the best option.\nBest option: ("
)
OPTION_LINE = "({letter}) {text}"


def _annotation_files(data: Path) -> list[Path]:
    if data.is_file():
        return [data]
    folder = data / "json" if (data / "json").is_dir() else data
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no MLVU .json annotation files in {folder}")
    return files


def load(data: Path, video_dir: Path, *, benchmark: str) -> list[Sample]:
    """Samples of the MLVU multiple-choice tasks in ``data`` (a file, the ``json`` folder or the MLVU root)."""
    finder = VideoFinder(video_dir)
    samples = []
    for path in _annotation_files(data):
        for index, row in enumerate(read_annotation_file(path)):
            if not row.get("candidates"):
                continue
            options = tuple(str(text) for text in row["candidates"])
            task = row["question_type"]
            samples.append(
                Sample(
                    id=str(row.get("question_id") or f"{path.stem}/{index}"),
                    video=finder.find(f"{path.stem}/{row['video']}", f"{task}/{row['video']}", row["video"]),
                    question=row["question"],
                    options=options,
                    answer=answer_letter(row.get("answer"), options),
                    benchmark=benchmark,
                    categories=(task,),
                    extra={"duration": row.get("duration"), "source_file": path.name},
                )
            )
    return samples


MLVU_DEV = Benchmark("mlvu-dev", TEMPLATE, OPTION_LINE, partial(load, benchmark="mlvu-dev"), headline="macro_accuracy")
MLVU_TEST = Benchmark("mlvu-test", TEMPLATE, OPTION_LINE, partial(load, benchmark="mlvu-test"), headline="macro_accuracy")
