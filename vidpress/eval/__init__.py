"""Evaluation: long-video benchmarks from their official local files, a resumable multi-process runner, plots.

    from vidpress.eval import EvalRun, Sampling, evaluate
    from vidpress.presses import UniformFramePress
    summary = evaluate(EvalRun("Qwen/Qwen2.5-VL-7B-Instruct", "videomme", Path("runs/vmme-uniform16"),
                               presses=[UniformFramePress(16)], sampling=Sampling(num_frames=64),
                               data=Path("Video-MME/videomme/test-00000-of-00001.parquet"),
                               video_dir=Path("Video-MME/data")))

Benchmarks: videomme, mlvu-dev, mlvu-test, lvbench, longvideobench, and the synthetic suite (synth,
synth-<task>-<frames>, synth-grid-<frames>). See docs/evaluation.md.
"""

from vidpress.eval.answers import extract_letter
from vidpress.eval.benchmark import Benchmark
from vidpress.eval.metrics import summarize
from vidpress.eval.plots import plot_budget_curves, plot_needle_heatmap, plot_runs
from vidpress.eval.records import Sample
from vidpress.eval.runner import ConfigMismatchError, EvalRun, Sampling, evaluate, run_shard
from vidpress.eval.shards import Process, merge_shards
from vidpress.eval.tasks import BENCHMARKS, benchmark_of, load_task

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "ConfigMismatchError",
    "EvalRun",
    "Process",
    "Sample",
    "Sampling",
    "benchmark_of",
    "evaluate",
    "extract_letter",
    "load_task",
    "merge_shards",
    "plot_budget_curves",
    "plot_needle_heatmap",
    "plot_runs",
    "run_shard",
    "summarize",
]
