"""The fixed wording of the suite: question templates, option texts, the answer instruction, the vocabulary corpus."""

from __future__ import annotations

from vidpress.synth.objects import OBJECTS

LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
INSTRUCTION = "Answer with the option's letter from the given choices directly."

NEEDLE_QUESTION = "What object appeared in the video?"
COUNTING_QUESTION = "How many times did the {object} appear?"
ORDERING_QUESTION = "Which object appeared first?"
LOCALISATION_QUESTION = "In which part of the video did the {object} appear?"
MULTIHOP_QUESTION = "What object appeared right after the {object}?"

COUNT_OPTIONS: tuple[str, ...] = ("1", "2", "3", "4")
QUARTER_OPTIONS: tuple[str, ...] = ("beginning", "early middle", "late middle", "end")


def option_line(letter: str, text: str) -> str:
    """One lettered option as shown in a prompt: "A. red circle"."""
    return f"{letter}. {text}"


def format_prompt(question: str, options: tuple[str, ...]) -> str:
    """The question, one lettered option per line, then the instruction (the common VideoMME-style template)."""
    return "\n".join([question, *(option_line(letter, text) for letter, text in zip(LETTERS, options)), INSTRUCTION])


def synth_vocabulary_corpus() -> list[str]:
    """Every sentence the suite can produce (questions, options, lettered option lines, instruction, answers).

    Sorted and without duplicates; meant for training a tokenizer.
    """
    names = [obj.name for obj in OBJECTS]
    object_questions = (COUNTING_QUESTION, LOCALISATION_QUESTION, MULTIHOP_QUESTION)
    questions = [NEEDLE_QUESTION, ORDERING_QUESTION] + [q.format(object=name) for q in object_questions for name in names]
    options = names + list(COUNT_OPTIONS) + list(QUARTER_OPTIONS)
    lines = [option_line(letter, text) for letter in LETTERS for text in options]
    return sorted(set(questions + options + lines + [INSTRUCTION] + list(LETTERS)))
