"""Task names -> benchmark and samples: the four long-video benchmarks from local files, and the synthetic suite."""

from __future__ import annotations

from pathlib import Path

from vidpress.eval import synth
from vidpress.eval.benchmark import Benchmark
from vidpress.eval.longvideobench import LONGVIDEOBENCH
from vidpress.eval.lvbench import LVBENCH
from vidpress.eval.mlvu import MLVU_DEV, MLVU_TEST
from vidpress.eval.records import Sample
from vidpress.eval.videomme import VIDEOMME

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (VIDEOMME, MLVU_DEV, MLVU_TEST, LVBENCH, LONGVIDEOBENCH, synth.SYNTH)}


def benchmark_of(task: str) -> Benchmark:
    """The benchmark a task name evaluates (``synth-...`` names are the synthetic suite)."""
    if synth.is_generated(task):
        return synth.SYNTH
    if task not in BENCHMARKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(BENCHMARKS)}, synth-<task>-<frames>, synth-grid-<frames>")
    return BENCHMARKS[task]


def load_task(task: str, data: Path | None, video_dir: Path | None, workdir: Path) -> tuple[Benchmark, list[Sample]]:
    """The benchmark and samples of ``task``.

    Parameters
    ----------
    task : a name of BENCHMARKS, or a generated synthetic suite (see vidpress.eval.synth).
    data : the official annotation file (or folder, for MLVU and synth); unused by generated suites.
    video_dir : where the videos are (searched recursively); default: the folder of ``data``.
    workdir : the run's folder; generated suites are written to ``workdir / "data"``.
    """
    benchmark = benchmark_of(task)
    if synth.is_generated(task):
        data = synth.generate(task, workdir / "data")
    elif data is None:
        raise ValueError(f"task {task!r} needs --data: the benchmark's annotation file (see docs/evaluation.md)")
    data = Path(data)
    if video_dir is None:
        video_dir = data if data.is_dir() else data.parent
    samples = benchmark.load(data, Path(video_dir))
    ids = [sample.id for sample in samples]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{task}: the annotations give {len(ids) - len(set(ids))} duplicate sample ids")
    return benchmark, samples
