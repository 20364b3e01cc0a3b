"""The five question types: which needles go where, what is asked, and the four shuffled options.

- needle: one object; "What object appeared in the video?"; the other options are objects absent from the video.
- counting: one object shown k times (k in 1..4); options are the numbers 1-4.
- ordering: two objects A then B; "Which object appeared first?"; options A, B and two absent objects.
- localisation: one object; which quarter of the video holds the middle of its event.
- multihop: three objects A, B, C in that order; "What object appeared right after the B?"; the answer is C,
  the options hold C, A (present but before B) and two absent objects, so both finding B and reading the order count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidpress.synth.objects import OBJECTS, NeedleObject
from vidpress.synth.placement import depth_to_start, place_events, quarter_of, start_in_quarter
from vidpress.synth.templates import (
    COUNT_OPTIONS,
    COUNTING_QUESTION,
    LETTERS,
    LOCALISATION_QUESTION,
    MULTIHOP_QUESTION,
    NEEDLE_QUESTION,
    ORDERING_QUESTION,
    QUARTER_OPTIONS,
)
from vidpress.synth.video import NeedleEvent

NEEDLE_LENGTH = (4, 8)  # frames per needle event, inclusive


@dataclass(frozen=True)
class Question:
    """A multiple-choice question and the needle events that make its answer true."""

    question: str
    options: tuple[str, ...]
    answer: str
    needles: tuple[NeedleEvent, ...]


def _objects(rng: np.random.Generator, k: int) -> list[NeedleObject]:
    return [OBJECTS[i] for i in rng.choice(len(OBJECTS), size=k, replace=False)]


def _absent_names(rng: np.random.Generator, present: list[NeedleObject], k: int) -> list[str]:
    """Names of ``k`` objects of the closed set that are not in the video."""
    candidates = [obj for obj in OBJECTS if obj not in present]
    return [candidates[i].name for i in rng.choice(len(candidates), size=k, replace=False)]


def _events(
    objects: list[NeedleObject], num_frames: int, depth: float | None, rng: np.random.Generator, needle_length: tuple[int, int]
) -> tuple[NeedleEvent, ...]:
    """One event per object, in order; the first starts at ``depth`` (random when None)."""
    lengths = [int(n) for n in rng.integers(needle_length[0], needle_length[1] + 1, size=len(objects))]
    first = None if depth is None else depth_to_start(depth, lengths[0], num_frames)
    starts = place_events(lengths, num_frames, rng, first)
    return tuple(NeedleEvent(obj, start, length) for obj, start, length in zip(objects, starts, lengths))


def _multiple_choice(
    question: str, correct: str, wrong: list[str], needles: tuple[NeedleEvent, ...], rng: np.random.Generator
) -> Question:
    """Shuffle ``correct`` among the three ``wrong`` options."""
    order = rng.permutation(len(LETTERS))
    options = [correct, *wrong]
    return Question(question, tuple(options[i] for i in order), LETTERS[int(np.argmax(order == 0))], needles)


def _needle(num_frames: int, depth: float | None, rng: np.random.Generator, needle_length: tuple[int, int]) -> Question:
    target = _objects(rng, 1)
    needles = _events(target, num_frames, depth, rng, needle_length)
    return _multiple_choice(NEEDLE_QUESTION, target[0].name, _absent_names(rng, target, 3), needles, rng)


def _counting(num_frames: int, depth: float | None, rng: np.random.Generator, needle_length: tuple[int, int]) -> Question:
    target = _objects(rng, 1)
    count = int(rng.integers(1, len(COUNT_OPTIONS) + 1))
    needles = _events(target * count, num_frames, depth, rng, needle_length)
    wrong = [n for n in COUNT_OPTIONS if n != str(count)]
    return _multiple_choice(COUNTING_QUESTION.format(object=target[0].name), str(count), wrong, needles, rng)


def _ordering(num_frames: int, depth: float | None, rng: np.random.Generator, needle_length: tuple[int, int]) -> Question:
    first, second = pair = _objects(rng, 2)
    needles = _events(pair, num_frames, depth, rng, needle_length)
    wrong = [second.name, *_absent_names(rng, pair, 2)]
    return _multiple_choice(ORDERING_QUESTION, first.name, wrong, needles, rng)


def _localisation(num_frames: int, depth: float | None, rng: np.random.Generator, needle_length: tuple[int, int]) -> Question:
    target = _objects(rng, 1)[0]
    length = int(rng.integers(needle_length[0], needle_length[1] + 1))
    if depth is None:
        start = start_in_quarter(int(rng.integers(4)), length, num_frames, rng)
    else:
        start = depth_to_start(depth, length, num_frames)
    correct = QUARTER_OPTIONS[quarter_of(start, length, num_frames)]
    wrong = [q for q in QUARTER_OPTIONS if q != correct]
    needles = (NeedleEvent(target, start, length),)
    return _multiple_choice(LOCALISATION_QUESTION.format(object=target.name), correct, wrong, needles, rng)


def _multihop(num_frames: int, depth: float | None, rng: np.random.Generator, needle_length: tuple[int, int]) -> Question:
    before, anchor, after = triple = _objects(rng, 3)
    needles = _events(triple, num_frames, depth, rng, needle_length)
    wrong = [before.name, *_absent_names(rng, triple, 2)]
    return _multiple_choice(MULTIHOP_QUESTION.format(object=anchor.name), after.name, wrong, needles, rng)


_BUILDERS = {"needle": _needle, "counting": _counting, "ordering": _ordering, "localisation": _localisation, "multihop": _multihop}
TASKS: tuple[str, ...] = tuple(_BUILDERS)


def build_task(
    task: str,
    num_frames: int,
    rng: np.random.Generator,
    depth: float | None = None,
    needle_length: tuple[int, int] = NEEDLE_LENGTH,
) -> Question:
    """Draw a ``task`` question for a ``num_frames`` video.

    ``depth`` (0..1) is where the first needle event starts; later events of multi-needle tasks are placed
    at random after it (ValueError when there is no room). None: random.
    """
    if task not in _BUILDERS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    return _BUILDERS[task](num_frames, depth, rng, needle_length)
