"""Reading a benchmark's annotation files and finding its videos in a local folder (nothing is downloaded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VIDEO_EXTENSIONS = (".mp4", ".MP4", ".mkv", ".webm", ".avi", ".mov")


def read_annotation_file(path: str | Path) -> list[dict[str, Any]]:
    """The records of a .json (a list, or one object), .jsonl or .parquet annotation file, in order.

    Parquet needs pyarrow (``pip install pyarrow``); the official files of the four benchmarks come in
    these three formats.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, list) else [data]
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as error:
            raise ImportError(f"reading {path.name} needs pyarrow: pip install pyarrow") from error
        return pq.read_table(path).to_pylist()
    raise ValueError(f"unsupported annotation file {path.name}: expected .json, .jsonl or .parquet")


class VideoFinder:
    """Locate video files under ``root`` by relative path or name, with or without an extension.

    ``find`` tries each candidate as a path under ``root`` (with each of VIDEO_EXTENSIONS when it has
    none), then looks the file name or stem up in an index of every video below ``root`` (built once),
    so the benchmarks' various folder layouts all work. A video that is nowhere gives ``root / first
    candidate``: the runner then records that sample as a failure instead of stopping.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._index: dict[str, Path] | None = None

    def find(self, *candidates: str) -> str:
        for name in candidates:
            for path in self._direct(name):
                if path.is_file():
                    return str(path)
        index = self._build_index()
        for name in candidates:
            for key in (Path(name).name, Path(name).stem):
                if key in index:
                    return str(index[key])
        return str(self.root / candidates[0])

    def _direct(self, name: str) -> list[Path]:
        path = self.root / name
        return [path] if path.suffix in VIDEO_EXTENSIONS else [path.with_name(path.name + ext) for ext in VIDEO_EXTENSIONS]

    def _build_index(self) -> dict[str, Path]:
        if self._index is None:
            self._index = {}
            if self.root.is_dir():
                for path in sorted(self.root.rglob("*")):
                    if path.suffix in VIDEO_EXTENSIONS and path.is_file():
                        self._index.setdefault(path.name, path)
                        self._index.setdefault(path.stem, path)
        return self._index
