"""The printed report of a run: headline scores, then accuracy per category and per duration group (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _press_label(summary: dict[str, Any]) -> str:
    presses = summary["settings"]["presses"]
    return " + ".join(f"{p['name']}({', '.join(f'{k}={v}' for k, v in p['params'].items())})" for p in presses) or "none"


def headline_table(summary: dict[str, Any]) -> Table:
    """One row per fact: task, press, samples, failures, unparseable answers, accuracies, mean cost."""
    table = Table(title=f"{summary['task']}: {summary['settings']['model']}", show_header=False)
    efficiency = summary["efficiency"]
    rows = [
        ("press", _press_label(summary)),
        ("samples (done / selected)", f"{summary['samples']} / {summary['expected']}"),
        ("failed", str(summary["failed"])),
        ("unparseable answers", str(summary["unparseable"])),
    ]
    scores = {
        "accuracy": "accuracy",
        "accuracy_parsed": "accuracy over parsed answers",
        "macro_accuracy": "macro accuracy over categories",
    }
    headline = summary["headline"]
    rows.append((f"[bold]{scores[headline]} (%)[/bold]", f"[bold]{_percent(summary[headline])}[/bold]"))
    rows += [(f"{label} (%)", _percent(summary[key])) for key, label in scores.items() if key != headline]
    if summary.get("needle_kept") is not None:
        rows.append(("needle events kept (%)", _percent(summary["needle_kept"])))
    if efficiency:
        rows += [
            ("frames sampled -> kept (mean)", f"{efficiency['frames_sampled']:.1f} -> {efficiency['frames_kept']:.1f}"),
            ("visual tokens before -> after (mean)", f"{efficiency['visual_tokens_before']:.0f} -> "
             f"{efficiency['visual_tokens_after']:.0f}"),
            ("seconds per question (mean)", f"{efficiency['seconds']:.2f}"),
            ("peak memory (GiB)", f"{efficiency['peak_memory_gib']:.2f}"),
        ]
    for row in rows:
        table.add_row(*row)
    return table


def group_table(title: str, groups: dict[str, dict[str, Any]]) -> Table:
    """Accuracy of each group (category or duration) with its question count."""
    table = Table("group", "questions", "accuracy (%)", title=title)
    for name, score in groups.items():
        table.add_row(name, str(score["n"]), _percent(score["accuracy"]))
    return table


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """Print the headline table, then the per-category and per-duration tables when there are groups."""
    console.print(headline_table(summary))
    for title, key in (("per category", "per_category"), ("per duration group", "per_duration")):
        if summary[key]:
            console.print(group_table(title, summary[key]))
    if summary["failures"]:
        console.print(f"[yellow]{summary['failed']} samples failed; their errors are in summary.json and predictions.jsonl[/yellow]")
