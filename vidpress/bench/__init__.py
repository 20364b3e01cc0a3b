"""``vidpress bench``: stage timings, memory and work floors of the real architectures on random weights."""

from vidpress.bench.archs import ARCHS, Arch, build_model, get_arch
from vidpress.bench.floors import decode_step_bytes, kv_bytes, prefill_flops, vision_flops
from vidpress.bench.peaks import Peaks, measure_peaks
from vidpress.bench.report import console_table, markdown_row, markdown_section, write_markdown
from vidpress.bench.runner import Result, Row, Settings, run_bench

__all__ = [
    "ARCHS",
    "Arch",
    "Peaks",
    "Result",
    "Row",
    "Settings",
    "build_model",
    "console_table",
    "decode_step_bytes",
    "get_arch",
    "kv_bytes",
    "markdown_row",
    "markdown_section",
    "measure_peaks",
    "prefill_flops",
    "run_bench",
    "vision_flops",
    "write_markdown",
]
