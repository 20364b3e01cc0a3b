"""The resumable evaluation runner behind ``vidpress eval``.

A run folder holds:

- ``run_config.json``: every setting that moves scores (model, dtype, the processor's video settings, task,
  data, frame sampling, presses, prompt template, tokens generated, vidpress and transformers versions)
  under "settings", and facts that do not (device, torch version, processes, start time) under "info".
  Resuming into a folder whose settings differ is refused with the differences listed.
- ``predictions.jsonl``: one record per sample, appended, flushed and fsynced as it is answered (one shard
  file per process when several run, merged at the end; see vidpress.eval.shards). A rerun skips the ids
  already there and drops a line cut short by a kill, so no sample is lost or done twice. A sample that
  fails (an unreadable video, any exception) is recorded with its error and the run goes on.
- ``summary.json``: the scores (vidpress.eval.metrics) of the selected samples, plus the settings.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from rich.console import Console
from tqdm.auto import tqdm

from vidpress.eval.answers import extract_letter
from vidpress.eval.benchmark import Benchmark
from vidpress.eval.journal import Journal
from vidpress.eval.metrics import SUMMARY, summarize
from vidpress.eval.plots import is_grid, plot_needle_heatmap
from vidpress.eval.records import Sample
from vidpress.eval.report import print_summary
from vidpress.eval.shards import Process, current_process, merge_shards, read_predictions, shard_path
from vidpress.eval.synth import needle_kept
from vidpress.eval.tasks import load_task
from vidpress.pipeline import Answer, VideoQA
from vidpress.presses import PRESSES, Press

CONFIG = "run_config.json"
T = TypeVar("T")


class ConfigMismatchError(RuntimeError):
    """The run folder holds a run made with other settings."""


@dataclass(frozen=True)
class Sampling:
    """Frames: ``num_frames`` uniformly, or ``fps`` capped by ``max_frames``; long side resized to ``max_side``."""

    num_frames: int | None = None
    fps: float | None = None
    max_frames: int | None = None
    max_side: int | None = None

    def __post_init__(self) -> None:
        if self.num_frames is not None and self.fps is not None:
            raise ValueError("give num_frames (uniform) or fps, not both")
        for name, value in dataclasses.asdict(self).items():
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")


@dataclass
class EvalRun:
    """One evaluation: a model with presses on a task, written to ``output``.

    ``max_new_tokens`` defaults to the benchmark's; ``device`` and ``dtype`` to VideoQA.from_pretrained's
    (CUDA and bfloat16 when available). ``limit`` selects the first samples of the task. ``compile_vision``
    runs the vision blocks under ``torch.compile`` (``VideoQA(compile_vision=True)``: pays over many videos).
    """

    model: str
    task: str
    output: Path
    presses: list[Press] = field(default_factory=list)
    sampling: Sampling = Sampling()
    data: Path | None = None
    video_dir: Path | None = None
    limit: int | None = None
    max_new_tokens: int | None = None
    device: str | None = None
    dtype: str | None = None
    compile_vision: bool = False

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


def press_config(presses: list[Press]) -> list[dict[str, Any]]:
    """Each press as {"name": its registry name, "class", "params": its dataclass fields}."""
    names = {cls: name for name, cls in PRESSES.items()}
    return [{"name": names.get(type(p), type(p).__name__), "class": type(p).__name__, "params": dataclasses.asdict(p)} for p in presses]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "__dict__"):
        return {k: _jsonable(v) for k, v in vars(value).items() if v is not None}
    return str(value)


def video_processor_settings(processor: Any) -> dict[str, Any]:
    """The processor's video resizing settings (pixel bounds, patch and merge sizes)."""
    video_processor = getattr(processor, "video_processor", None)
    keys = ("size", "min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size")
    return {key: _jsonable(getattr(video_processor, key)) for key in keys if getattr(video_processor, key, None) is not None}


def run_settings(run: EvalRun, benchmark: Benchmark, qa: VideoQA) -> dict[str, Any]:
    """Every setting of ``run`` that moves its scores, as JSON values (compared when a run is resumed)."""
    import transformers

    import vidpress

    settings = {
        "model": run.model,
        "dtype": str(qa.model.dtype).removeprefix("torch."),
        "video_processor": video_processor_settings(qa.processor),
        "task": run.task,
        "data": None if run.data is None else str(Path(run.data).resolve()),
        "video_dir": None if run.video_dir is None else str(Path(run.video_dir).resolve()),
        "sampling": dataclasses.asdict(run.sampling),
        "presses": press_config(run.presses),
        "prompt_template": {"template": benchmark.template, "option_line": benchmark.option_line},
        "max_new_tokens": run.max_new_tokens or benchmark.max_new_tokens,
        "versions": {"vidpress": vidpress.__version__, "transformers": transformers.__version__},
    }
    return json.loads(json.dumps(settings))  # tuples become lists, as in the saved file


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [f"  {k}: {saved.get(k)!r} in the folder, {current.get(k)!r} now" for k in keys if saved.get(k) != current.get(k)]


def check_config(folder: Path, settings: dict[str, Any], info: dict[str, Any]) -> None:
    """Write ``folder/run_config.json``, or check that the one there has the same settings."""
    path = folder / CONFIG
    if path.exists():
        differences = _differences(json.loads(path.read_text())["settings"], settings)
        if differences:
            raise ConfigMismatchError(
                f"{folder} holds a run with other settings; use another --output or the same settings:\n" + "\n".join(differences)
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": settings, "info": info}, indent=2) + "\n")


def _answer_stats(answer: Answer) -> dict[str, Any]:
    stats = answer.stats
    kv = stats.kv_length_per_layer
    return {
        "frames_sampled": stats.frames_sampled,
        "frames_kept": stats.frames_kept,
        "visual_tokens_before": stats.visual_tokens_before,
        "visual_tokens_after": stats.visual_tokens_after,
        "llm_input_length": stats.llm_input_length,
        "kv_length_mean": sum(kv) / len(kv) if kv else None,
        "seconds": sum(stats.seconds.values()),
        "peak_memory_gib": stats.peak_memory_gib,
    }


def answer_record(qa: VideoQA, benchmark: Benchmark, sample: Sample, index: int, run: EvalRun) -> dict[str, Any]:
    """Ask ``sample``'s question and return its prediction record; any exception becomes a failure record."""
    record: dict[str, Any] = {
        "id": sample.id,
        "index": index,
        "video": sample.video,
        "categories": list(sample.categories),
        "duration_group": sample.duration_group,
        "answer": sample.answer,
        "extra": sample.extra,
    }
    try:
        answer = qa.ask(
            sample.video, benchmark.prompt(sample), press=run.presses, max_new_tokens=run.max_new_tokens or benchmark.max_new_tokens,
            **dataclasses.asdict(run.sampling),
        )
    except Exception as error:  # one bad sample never ends the run
        return record | {"error": f"{type(error).__name__}: {error}"}
    letter = extract_letter(answer.text, sample.options)
    needles = sample.extra.get("needles")
    return record | {
        "error": None,
        "response": answer.text,
        "letter": letter,
        "correct": None if sample.answer is None else letter == sample.answer,
        "stats": _answer_stats(answer),
        "needle_kept": needle_kept(needles, answer.stats.kept_frames) if needles else None,
    }


def run_shard(
    qa: VideoQA, benchmark: Benchmark, samples: list[Sample], run: EvalRun, process: Process, *, progress: bool = True
) -> int:
    """Answer this process's samples not yet in any prediction file of ``run.output``; return how many."""
    done = {record["id"] for record in read_predictions(run.output)}
    todo = [(i, s) for i, s in enumerate(samples) if process.owns(i) and s.id not in done]
    bar = tqdm(total=len(todo), desc=f"{run.task} [{process.index + 1}/{process.count}]", unit="question", disable=not progress)
    with Journal(shard_path(run.output, process)) as journal, bar:
        for index, sample in todo:
            journal.append(answer_record(qa, benchmark, sample, index, run))
            bar.update()
    return len(todo)


def _main_first(process: Process, step: Callable[[], T]) -> T:
    """Run ``step`` on the main process, then (once it is done) on the others."""
    result = step() if process.is_main else None
    process.wait()
    return result if process.is_main else step()


def finish(run: EvalRun, benchmark: Benchmark, samples: list[Sample], settings: dict[str, Any]) -> dict[str, Any]:
    """Merge the shards, score the selected samples and write summary.json; return the summary."""
    selected = {sample.id for sample in samples}
    records = [r for r in merge_shards(run.output) if r["id"] in selected]
    summary = {"task": run.task, "headline": benchmark.headline, "expected": len(samples), **summarize(records), "settings": settings}
    (run.output / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def evaluate(
    run: EvalRun, *, qa: VideoQA | None = None, process: Process | None = None, console: Console | None = None
) -> dict[str, Any] | None:
    """Run (or resume) ``run`` on this process; the main process returns the summary, the others None.

    ``qa`` defaults to VideoQA.from_pretrained(run.model) on this process's device (``cuda:<local rank>``
    under accelerate), ``process`` to accelerate's view of this process.
    """
    process = process or current_process()
    run.output.mkdir(parents=True, exist_ok=True)
    benchmark, samples = _main_first(process, lambda: load_task(run.task, run.data, run.video_dir, run.output))
    samples = samples[: run.limit]
    qa = qa or VideoQA.from_pretrained(
        run.model, device=run.device or _default_device(), dtype=run.dtype, compile_vision=run.compile_vision
    )
    settings = run_settings(run, benchmark, qa)
    info = {
        "device": str(qa.adapter.device),
        "torch": torch.__version__,
        "processes": process.count,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    _main_first(process, lambda: check_config(run.output, settings, info))
    run_shard(qa, benchmark, samples, run, process, progress=process.is_main)
    process.wait()
    if not process.is_main:
        return None
    summary = finish(run, benchmark, samples, settings)
    console = console or Console()
    print_summary(summary, console)
    if is_grid(summary):
        _plot_heatmap(summary, run.output, console)
    return summary


def _plot_heatmap(summary: dict[str, Any], folder: Path, console: Console) -> None:
    try:
        path = plot_needle_heatmap(summary, folder / "needle_heatmap.png")
    except ImportError as error:
        console.print(f"[yellow]no heatmap: {error}[/yellow]")
        return
    console.print(f"needle heatmap: {path}")


def _default_device() -> str | None:
    """This process's device under accelerate (``cuda:<local rank>`` when launched on several GPUs)."""
    try:
        from accelerate import PartialState
    except ImportError:
        return None
    return str(PartialState().device)
