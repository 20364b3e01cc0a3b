"""Sample: one multiple-choice question about one video, in the same form for every benchmark."""

from __future__ import annotations

import re
import string
from dataclasses import asdict, dataclass, field
from typing import Any

LETTERS = string.ascii_uppercase


def option_letter(index: int) -> str:
    """The letter of option ``index`` (0 -> "A")."""
    return LETTERS[index]


@dataclass(frozen=True)
class Sample:
    """A question about a local video file, with lettered options and the ground-truth letter.

    Attributes
    ----------
    id : unique within its benchmark (the official question id where there is one).
    video : path of the video file (it may not exist: the runner then records a failure).
    question : the question text, without the options.
    options : the option texts, without their letters ("Black.", not "A. Black.").
    answer : the correct letter, or None where the ground truth is withheld (MLVU test).
    benchmark : the benchmark's name (``vidpress.eval.benchmarks.BENCHMARKS``).
    categories : the question's category / task type; several for multi-label benchmarks (LVBench).
    duration_group : the benchmark's own duration bucket ("short", "600", ...), or None where it has none.
    extra : the other annotation fields worth keeping (JSON-serialisable).
    """

    id: str
    video: str
    question: str
    options: tuple[str, ...]
    answer: str | None
    benchmark: str
    categories: tuple[str, ...] = ()
    duration_group: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.options:
            raise ValueError(f"sample {self.id!r} has no options")
        if self.answer is not None and self.answer not in self.letters:
            raise ValueError(f"sample {self.id!r}: answer {self.answer!r} is not one of {self.letters}")

    @property
    def letters(self) -> str:
        """The option letters of this sample ("ABCD" for four options)."""
        return LETTERS[: len(self.options)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def strip_option_letter(text: str, letter: str) -> str:
    """``text`` without a leading ``letter`` label: "A. Black." / "(A) Black" / "A) Black" -> "Black."."""
    match = re.match(rf"^\s*(?:\({letter}\)|{letter}[.):])\s*", text)
    return text[match.end():] if match else text.strip()


def answer_letter(answer: Any, options: tuple[str, ...]) -> str | None:
    """The letter of ``answer`` given as a letter, a 0-based index or the text of one of ``options``.

    None when ``answer`` is None or empty (ground truth withheld); ValueError when it names no option.
    """
    if answer is None or answer == "":
        return None
    if isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(options):
            raise ValueError(f"answer index {answer} outside the {len(options)} options")
        return option_letter(answer)
    text = str(answer).strip()
    if len(text) == 1 and text.upper() in LETTERS[: len(options)]:
        return text.upper()
    matches = [i for i, option in enumerate(options) if option.strip() == text]
    if len(matches) != 1:
        raise ValueError(f"answer {text!r} matches {len(matches)} of the options {options}")
    return option_letter(matches[0])
