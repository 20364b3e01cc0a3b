"""Scores of a run's prediction records: overall, per category, per duration group, macro mean, needle grid.

A record is scored when its sample has a ground truth. Failures (the video could not be read, any error)
and unparseable answers count as wrong in ``accuracy``; ``accuracy_parsed`` divides by the answers that
named an option instead (the official Video-MME script's denominator). ``macro_accuracy`` is the mean of
the per-category accuracies (MLVU's M-Avg); a multi-label question counts in each of its categories.
Accuracies are fractions in [0, 1]. For the synthetic suite, ``needle_kept`` is the mean fraction of needle
events that kept at least one frame after the presses (model-free), overall and per grid cell.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from statistics import fmean
from typing import Any

Record = dict[str, Any]
SUMMARY = "summary.json"  # the file of a run folder that holds its summary
EFFICIENCY_KEYS = ("frames_sampled", "frames_kept", "visual_tokens_before", "visual_tokens_after", "llm_input_length", "seconds")


def _score(records: list[Record]) -> dict[str, Any]:
    correct = sum(bool(r.get("correct")) for r in records)
    return {"n": len(records), "correct": correct, "accuracy": correct / len(records) if records else None}


def _grouped(records: list[Record], keys: Callable[[Record], Iterable[str]]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        for key in keys(record):
            groups[key].append(record)
    return {key: _score(groups[key]) for key in sorted(groups, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))}


def _efficiency(records: list[Record]) -> dict[str, float]:
    stats = [r["stats"] for r in records if r.get("stats")]
    if not stats:
        return {}
    means = {key: fmean(s[key] for s in stats) for key in EFFICIENCY_KEYS}
    return means | {"peak_memory_gib": max(s["peak_memory_gib"] for s in stats)}


def _needle_kept(records: list[Record]) -> float | None:
    kept = [r["needle_kept"] for r in records if r.get("needle_kept") is not None]
    return fmean(kept) if kept else None


def needle_grid(records: list[Record]) -> list[dict[str, Any]]:
    """Accuracy and needle-kept fraction per (num_frames, depth) cell of needle questions (synthetic suite)."""
    cells: dict[tuple[int, float], list[Record]] = defaultdict(list)
    for record in records:
        extra = record.get("extra", {})
        if extra.get("task") == "needle" and record.get("answer") is not None:
            cells[extra["num_frames"], round(extra["depth"], 3)].append(record)
    return [
        {"num_frames": num_frames, "depth": depth, **_score(members), "needle_kept": _needle_kept(members)}
        for (num_frames, depth), members in sorted(cells.items())
    ]


def summarize(records: list[Record]) -> dict[str, Any]:
    """The scores of ``records`` (see the module docstring for each field)."""
    failed = [r for r in records if r.get("error")]
    answered = [r for r in records if not r.get("error")]
    scored = [r for r in records if r.get("answer") is not None]
    parsed = [r for r in scored if r.get("letter")]
    per_category = _grouped(scored, lambda r: r.get("categories") or ["(none)"])
    return {
        "samples": len(records),
        "answered": len(answered),
        "failed": len(failed),
        "failures": {r["id"]: r["error"] for r in failed},
        "unparseable": sum(r.get("letter") is None for r in answered),
        "scored": len(scored),
        "accuracy": _score(scored)["accuracy"],
        "accuracy_parsed": _score(parsed)["accuracy"],
        "macro_accuracy": fmean(c["accuracy"] for c in per_category.values()) if per_category else None,
        "per_category": per_category,
        "per_duration": _grouped(scored, lambda r: [r["duration_group"]] if r.get("duration_group") else []),
        "efficiency": _efficiency(answered),
        "needle_kept": _needle_kept(answered),
        "needle_grid": needle_grid(records),
    }
