"""Tables of a benchmark run: printed with rich, and written as a section of docs/benchmarks.md.

The markdown file keeps one section per set of architectures, between ``<!-- bench:NAME -->`` markers: a new
run replaces its own section and leaves the others, so architectures can be measured in separate runs.
"""

from __future__ import annotations

import re
from pathlib import Path

from rich.table import Table

from vidpress.bench.runner import Result, Row

HEADER = """# Benchmarks

Measured by `vidpress bench`: random-weight models of the real architectures (configs in
`vidpress/bench/configs/`), a synthetic 2 fps mp4 decoded through `vidpress.video.load_video`, greedy
decoding. `transformers` rows are plain `model.generate` (stock SDPA); `vidpress` rows are `VideoQA.ask`.
Stage columns: file decode, preprocess (the HF processor and the prompt, vidpress's positions; in the
vidpress rows streamed under the vision encoder by default, so the time not hidden), vision encoder, select (the
token-stage presses: QC-Comp's scoring passes, DPSelect, ToMe), LLM prefill (with its FLOPs in TFLOP: each
decoder layer's own tokens and the query-key pairs its attention scored, as the prefill ran them), first
token (preprocess + vision + select + prefill), decode ms/token over the answer's "new tokens" (one-off
costs after the first token, such as reserving KV room, weigh more when there are few). "% peak" is the stage's
floor (FLOPs for vision and prefill, bytes read for a decode step; see `vidpress/bench/floors.py`) over its
measured time, against the peaks measured at the start of the run. "= stock": the vidpress answer's tokens
equal `model.generate`'s (bf16 on GPU may flip a near-tie; the CPU tests check exactness in float32).
"""

COLUMNS = [
    "arch", "frames", "method", "LLM tokens", "KV GiB", "decode s", "preprocess s", "vision s", "vision % peak",
    "select s", "prefill TFLOP", "prefill s", "prefill % peak", "first token s", "ms/token", "new tokens", "decode % peak", "peak GiB", "= stock",
    "note",
]


def _number(value: float | None, digits: int = 2) -> str:
    """Fixed decimals, or two significant digits for small values (a toy run's milliseconds)."""
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if abs(value) >= 10**-digits * 10 or value == 0 else f"{value:.2g}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def row_cells(row: Row) -> list[str]:
    """The table cells of one row, in :data:`COLUMNS` order."""
    if not row.ok:
        return [row.arch, str(row.frames), row.method, *["—"] * (len(COLUMNS) - 4), row.note]
    same = {None: "—", True: "yes", False: "no"}[row.same_tokens_as_stock]
    return [
        row.arch, str(row.frames), row.method, f"{row.llm_tokens:,}", _number(row.kv_gib),
        _number(row.decode_s), _number(row.preprocess_s), _number(row.vision_s), _percent(row.vision_fraction),
        _number(row.select_s), _number(row.prefill_tflop, 1), _number(row.prefill_s), _percent(row.prefill_fraction), _number(row.first_token_s),
        _number(row.ms_per_token, 1), str(row.new_tokens), _percent(row.decode_fraction), _number(row.peak_gib), same,
        row.note,
    ]


def markdown_row(row: Row) -> str:
    """The row as one line of the markdown table."""
    return "| " + " | ".join(cell.replace("|", "/") for cell in row_cells(row)) + " |"


def console_table(result: Result) -> Table:
    """A rich table of the run, titled with the device and its measured peaks."""
    table = Table(*COLUMNS, title=_peaks_line(result))
    for row in result.rows:
        table.add_row(*row_cells(row))
    return table


def _peaks_line(result: Result) -> str:
    peaks = result.peaks
    return (
        f"{peaks.device}: {peaks.flops / 1e12:.3g} TFLOP/s ({result.dtype} matmul), "
        f"{peaks.bandwidth / 1e9:.3g} GB/s (copy), measured at the start of the run"
    )


def markdown_section(result: Result, command: str) -> str:
    """The run as a markdown section: device, command, peaks and the table."""
    key = ",".join(result.settings.archs)
    lines = [
        f"<!-- bench:{key} -->",
        f"## {', '.join(result.settings.archs)} on {result.peaks.device}",
        "",
        f"Command: `{command}`",
        "",
        f"Peaks: {_peaks_line(result)}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *(markdown_row(row) for row in result.rows),
        f"<!-- /bench:{key} -->",
    ]
    return "\n".join(lines) + "\n"


def write_markdown(result: Result, path: Path, command: str) -> Path:
    """Write (or replace) this run's section of the markdown file at ``path``."""
    section = markdown_section(result, command)
    key = re.escape(",".join(result.settings.archs))
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{key} -->.*?<!-- /bench:{key} -->\n", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
