"""Pictures of run summaries: accuracy against frames and against visual tokens per press, the needle heatmap.

Needs matplotlib (``pip install 'vidpress[plot]'``), imported only when a picture is drawn.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from vidpress.eval.metrics import SUMMARY

Summary = dict[str, Any]
BUDGET_AXES = (
    ("frames_kept", "frames given to the model per question (mean)", "accuracy_vs_frames.png"),
    ("visual_tokens_after", "visual tokens per question after the presses (mean)", "accuracy_vs_visual_tokens.png"),
)


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("pictures need matplotlib: pip install 'vidpress[plot]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_summary(run_dir: str | Path) -> Summary:
    """The summary.json of a run folder."""
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {SUMMARY}: is it a finished `vidpress eval` run folder?")
    return json.loads(path.read_text())


def press_names(summary: Summary) -> str:
    """The run's presses by name ("uniform", "dpselect+pivotkv"), "none" without presses."""
    return "+".join(p["name"] for p in summary["settings"]["presses"]) or "none"


def is_grid(summary: Summary) -> bool:
    """Whether the run answered needle questions over at least two lengths and two depths."""
    cells = summary.get("needle_grid") or []
    return len({c["num_frames"] for c in cells}) >= 2 and len({c["depth"] for c in cells}) >= 2


def plot_budget_curves(summaries: list[Summary], output: Path) -> list[Path]:
    """accuracy_vs_frames.png and accuracy_vs_visual_tokens.png: one line per (task, presses), one point per run."""
    plt = _pyplot()
    curves: dict[str, list[Summary]] = defaultdict(list)
    for summary in summaries:
        if summary["efficiency"]:
            curves[f"{summary['task']}: {press_names(summary)}"].append(summary)
    paths = []
    for key, label, filename in BUDGET_AXES:
        figure, axes = plt.subplots(figsize=(6, 4))
        for name, runs in sorted(curves.items()):
            points = sorted((run["efficiency"][key], 100 * (run[run["headline"]] or 0.0)) for run in runs)
            axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name)
        axes.set(xlabel=label, ylabel="accuracy (%)", title=f"accuracy vs {label.split(' per ')[0]}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        paths.append(_save(figure, output / filename, plt))
    return paths


def plot_needle_heatmap(summary: Summary, path: Path) -> Path:
    """The needle accuracy (%) of a synthetic grid run: needle depth (rows) x video length in frames (columns)."""
    plt = _pyplot()
    cells = summary["needle_grid"]
    lengths = sorted({c["num_frames"] for c in cells})
    depths = sorted({c["depth"] for c in cells})
    grid = [[float("nan")] * len(lengths) for _ in depths]
    for cell in cells:
        grid[depths.index(cell["depth"])][lengths.index(cell["num_frames"])] = 100 * cell["accuracy"]
    figure, axes = plt.subplots(figsize=(1.2 * len(lengths) + 2, 0.6 * len(depths) + 1.5))
    image = axes.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
    for row, values in enumerate(grid):
        for column, value in enumerate(values):
            axes.text(column, row, f"{value:.0f}", ha="center", va="center", fontsize="small")
    axes.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    axes.set_yticks(range(len(depths)), [f"{d:.2f}" for d in depths])
    axes.set(xlabel="video length (frames)", ylabel="needle depth", title=f"needle accuracy: {press_names(summary)}")
    figure.colorbar(image, ax=axes, label="accuracy (%)")
    return _save(figure, path, plt)


def _save(figure, path: Path, plt) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_runs(run_dirs: list[Path], output: Path) -> list[Path]:
    """Every picture of the runs in ``run_dirs``: the two budget curves, and a heatmap per grid run."""
    summaries = [load_summary(run_dir) for run_dir in run_dirs]
    paths = plot_budget_curves(summaries, output)
    for run_dir, summary in zip(run_dirs, summaries):
        if is_grid(summary):
            paths.append(plot_needle_heatmap(summary, output / f"needle_heatmap_{Path(run_dir).resolve().name}.png"))
    return paths
