"""An append-only JSONL file that survives kills: one record per line, each flushed and fsynced as written.

A process killed while writing leaves at most one partial last line (no newline, or not valid JSON). Readers
skip it; the writer cuts it off before appending, so a record is never glued onto a fragment. A bad line
anywhere else is corruption, not a kill, and raises.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _complete(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of the complete lines and the byte length they span (the partial tail excluded)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    records, end = [], 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):  # lines[-1] has no newline: partial or empty
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number < len(lines) - 1:
                raise ValueError(f"{path}: line {number} is not JSON (the file is corrupt, not just cut short)") from error
            break
        end += len(line) + 1
    return records, end


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The complete records of ``path`` in order (none when it does not exist); a partial last line is skipped."""
    return _complete(Path(path))[0]


def repair(path: str | Path) -> int:
    """Cut ``path`` after its last complete line; return the number of bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    end = _complete(path)[1]
    removed = path.stat().st_size - end
    if removed:
        with path.open("r+b") as file:
            file.truncate(end)
    return removed


class Journal:
    """Appends records to ``path`` (created with its folder), repairing a partial last line first."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair(self.path)
        self._file = self.path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``records`` atomically (write a temporary file, fsync, rename)."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as file:
        file.writelines(json.dumps(record) + "\n" for record in records)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
