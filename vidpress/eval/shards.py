"""Several processes (``accelerate launch -m vidpress eval ...``): one model replica each, one shard file each.

Sample ``i`` of the task belongs to process ``i % num_processes``, so the split never depends on what is
already done or on timing. Each process appends its answers to ``predictions.rank<k>of<n>.jsonl``; the main
process merges every shard into ``predictions.jsonl`` at the end (by sample index, each id once). A run may
be resumed with another number of processes: the ids done in any prediction file are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidpress.eval.journal import read_records, write_records

PREDICTIONS = "predictions.jsonl"
SHARD_GLOB = "predictions.rank*of*.jsonl"


@dataclass(frozen=True)
class Process:
    """This process's place among ``count`` processes; ``wait`` blocks until all reach it."""

    index: int = 0
    count: int = 1
    wait: Callable[[], None] = field(default=lambda: None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"process index {self.index} outside [0, {self.count})")

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def owns(self, sample_index: int) -> bool:
        return sample_index % self.count == self.index


def current_process() -> Process:
    """This process as accelerate's PartialState sees it (one process without accelerate or a launcher)."""
    try:
        from accelerate import PartialState
    except ImportError:
        return Process()
    state = PartialState()
    return Process(state.process_index, state.num_processes, state.wait_for_everyone)


def shard_path(folder: Path, process: Process) -> Path:
    """The prediction file this process appends to: predictions.jsonl alone, a shard file among several."""
    if process.count == 1:
        return folder / PREDICTIONS
    return folder / f"predictions.rank{process.index}of{process.count}.jsonl"


def prediction_files(folder: Path) -> list[Path]:
    """predictions.jsonl (when present) and every shard file of ``folder``."""
    merged = folder / PREDICTIONS
    return ([merged] if merged.exists() else []) + sorted(folder.glob(SHARD_GLOB))


def read_predictions(folder: Path) -> list[dict[str, Any]]:
    """Every record of every prediction file, each sample id once (the first seen), by sample index."""
    by_id: dict[str, dict[str, Any]] = {}
    for path in prediction_files(folder):
        for record in read_records(path):
            by_id.setdefault(record["id"], record)
    return sorted(by_id.values(), key=lambda record: record["index"])


def merge_shards(folder: Path) -> list[dict[str, Any]]:
    """Merge the shard files into predictions.jsonl (atomically), delete them, and return the records."""
    records = read_predictions(folder)
    shards = sorted(folder.glob(SHARD_GLOB))
    if shards:
        write_records(folder / PREDICTIONS, records)
        for path in shards:
            path.unlink()
    return records
