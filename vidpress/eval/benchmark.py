"""Benchmark: how one benchmark's annotation files become Samples and how each Sample becomes a prompt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vidpress.eval.records import Sample

Loader = Callable[[Path, Path], list[Sample]]


@dataclass(frozen=True)
class Benchmark:
    """A multiple-choice video benchmark read from local files.

    Attributes
    ----------
    name : the task name on the command line.
    template : the prompt, with ``{question}`` and ``{options}`` fields (the benchmark's own wording;
        each benchmark module cites where its template comes from).
    option_line : one option as shown in the prompt, with ``{letter}`` and ``{text}`` fields.
    load : ``load(data, video_dir)`` reads the official annotation file (or folder) ``data`` and finds
        each video under ``video_dir``.
    headline : the summary metric the benchmark reports: "accuracy" (over questions) or
        "macro_accuracy" (mean over categories, MLVU's M-Avg).
    max_new_tokens : tokens generated per answer (lmms-eval's setting for the benchmark).
    """

    name: str
    template: str
    option_line: str
    load: Loader
    headline: str = "accuracy"
    max_new_tokens: int = 16

    def prompt(self, sample: Sample) -> str:
        """The text given to the model with the video: the template filled with the question and options."""
        options = "\n".join(self.option_line.format(letter=letter, text=text) for letter, text in zip(sample.letters, sample.options))
        return self.template.format(question=sample.question, options=options)
