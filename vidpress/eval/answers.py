"""Deterministic option-letter extraction from a model's free-text answer.

The harnesses differ on failure: Video-MME's script and lmms-eval's videomme return "" (counted wrong),
LongVideoBench's picks a random letter. Here an answer that names no option gives None, counted and
reported as unparseable (and wrong), never a guess. The rules, in order:

1. explicit letters: the answer is one letter ("B", "(B)", "b)", "B."), starts with a letter label
   ("b) cat", "C. dog", "(D) ..."), or says it ("The answer is (B).", "Answer: C", "Best option: (A)");
2. option text: exactly one option's text appears in the answer (longer matches win over their substrings);
3. a lone capital letter: exactly one distinct option letter stands alone in the answer (the article
   "A" before a lowercase word does not count).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from vidpress.eval.records import LETTERS

_PREFIXES = re.compile(
    r"^\s*(?:the\s+)?(?:best|correct|right|final)?\s*(?:answer|option|choice)\s*(?:is|:)?\s*[:\-]?\s*",
    re.IGNORECASE,
)


def _letters(count: int) -> str:
    return LETTERS[:count]


def _explicit(text: str, letters: str) -> str | None:
    """Rule 1: a letter the answer states as its choice."""
    body = _PREFIXES.sub("", text.strip(), count=1).strip()
    label = re.match(rf"^[(\[]?([{letters}])(?:[)\].:]|\s*$)", body, re.IGNORECASE)
    if label:
        return label.group(1).upper()
    said = re.search(rf"\b(?i:answer|option|choice)\s*(?i:is)?\s*[:\-]?\s*[(\[]?([{letters}])\b", text)
    if said:
        return said.group(1)
    bracketed = set(re.findall(rf"\(([{letters}])\)", text))
    return bracketed.pop() if len(bracketed) == 1 else None


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _option_text(text: str, options: Sequence[str]) -> str | None:
    """Rule 2: the one option whose text the answer contains."""
    answer = f" {_normalise(text)} "
    found = {i: _normalise(option) for i, option in enumerate(options) if _normalise(option) and f" {_normalise(option)} " in answer}
    maximal = [i for i, norm in found.items() if not any(norm != other and f" {norm} " in f" {other} " for other in found.values())]
    return LETTERS[maximal[0]] if len(maximal) == 1 else None


def _lone_capital(text: str, letters: str) -> str | None:
    """Rule 3: the one option letter standing alone as a capital (not the article "A" before a word)."""
    found = set()
    for match in re.finditer(rf"\b([{letters}])\b", text):
        if not (match.group(1) == "A" and re.match(r"\s+[a-z]", text[match.end():])):
            found.add(match.group(1))
    return found.pop() if len(found) == 1 else None


def extract_letter(text: str, options: Sequence[str]) -> str | None:
    """The option letter chosen in ``text`` (options lettered A, B, ...), or None when it names none.

    >>> extract_letter("The answer is (B).", ["cat", "dog", "cow"])
    'B'
    >>> extract_letter("I see a dog", ["cat", "dog", "cow"])
    'B'
    >>> extract_letter("no idea", ["cat", "dog", "cow"]) is None
    True
    """
    letters = _letters(len(options))
    return _explicit(text, letters) or _option_text(text, options) or _lone_capital(text, letters)
