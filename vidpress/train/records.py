"""Training records: JSONL lines normalised to a video and a conversation of user / assistant turns.

Accepted line formats (``video`` is a path relative to the JSONL file's folder, or absolute):

- ``{"video", "question", "answer"}``: one question and its answer;
- ``{"video", "question", "options", "answer"}``: the synthetic suite's annotations (``vidpress.synth``): the
  prompt is the question with lettered options and the answer instruction, the answer is the letter;
- ``{"video", "conversations": [{"role": "user" | "assistant", "content": str}, ...]}``: several turns, the
  video belongs to the first user turn. LLaVA-style turns ``{"from": "human" | "gpt", "value": str}`` are
  read too, without their ``<image>`` / ``<video>`` placeholder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vidpress.synth.templates import format_prompt

ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
PLACEHOLDER = re.compile(r"^\s*<(image|video)>\s*")


@dataclass(frozen=True)
class Conversation:
    """A video and alternating turns, starting with the user; every assistant turn is trained on."""

    video: Path
    turns: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        roles = [role for role, _ in self.turns]
        if not roles or roles[0] != "user" or "assistant" not in roles:
            raise ValueError(f"a conversation starts with a user turn and has an answer, got roles {roles}")
        if any(a == b for a, b in zip(roles, roles[1:])):
            raise ValueError(f"user and assistant turns must alternate, got roles {roles}")


def conversation_from_record(record: dict, root: Path) -> Conversation:
    """The conversation of one JSONL record (see the module docstring), its video resolved against ``root``."""
    if "video" not in record:
        raise ValueError(f"record has no 'video' field: {sorted(record)}")
    video = root / record["video"]
    if "conversations" in record:
        turns = tuple(_turn(turn) for turn in record["conversations"])
    elif "question" in record and "answer" in record:
        question = record["question"]
        if record.get("options"):
            question = format_prompt(question, tuple(record["options"]))
        turns = (("user", question), ("assistant", str(record["answer"])))
    else:
        raise ValueError(f"record needs 'conversations' or 'question' and 'answer', got {sorted(record)}")
    return Conversation(video=video, turns=turns)


def _turn(turn: dict) -> tuple[str, str]:
    role = turn.get("role", turn.get("from"))
    if role not in ROLES:
        raise ValueError(f"unknown turn role {role!r}; expected one of {sorted(ROLES)}")
    content = turn.get("content", turn.get("value"))
    if not isinstance(content, str):
        raise ValueError(f"turn content must be a string, got {content!r}")
    return ROLES[role], PLACEHOLDER.sub("", content)


def read_conversations(path: str | Path) -> list[Conversation]:
    """Every record of a JSONL file as a :class:`Conversation`; errors name the line."""
    path = Path(path)
    conversations = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            conversations.append(conversation_from_record(json.loads(line), path.parent))
        except (ValueError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}:{number}: {error}") from error
    if not conversations:
        raise ValueError(f"{path} holds no records")
    return conversations
