"""``vidpress bench``: time every stage of the real architectures (random weights) against plain transformers.

``bench_command`` is a plain function with typer-annotated parameters, registered on the CLI app as
``app.command("bench")(bench_command)``.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from vidpress.cli_options import PressArgOption, build_presses

DEFAULT_ARCHS = "qwen2_5_vl_7b,qwen3_vl_8b"
DEFAULT_FRAMES = "256,1024,2048,4096,7200"


def _split(text: str, item=str) -> list:
    try:
        return [item(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise typer.BadParameter(f"cannot read {text!r} as a comma-separated list: {error}") from error


def press_label(name: str, press) -> str:
    """``name(k=v, ...)`` with the press's fields that differ from their defaults."""
    changed = [
        f"{f.name}={getattr(press, f.name)!r}"
        for f in dataclasses.fields(press)
        if f.default is dataclasses.MISSING or getattr(press, f.name) != f.default
    ]
    return f"{name}({', '.join(changed)})"


def press_rows(entries: list[str], press_args: list[str] | None) -> list[tuple[str, list]]:
    """(label, presses) of each ``--press`` entry, ``"a+b"`` giving presses a then b in one row; the ``--press-arg``
    values reach every press of their name."""
    rows = [entry.split("+") for entry in entries]
    built = iter(build_presses([name for row in rows for name in row], press_args))
    labelled = [[(name, next(built)) for name in row] for row in rows]
    return [("+".join(press_label(name, p) for name, p in row), [p for _, p in row]) for row in labelled]


def bench_command(
    arch: Annotated[str, typer.Option(help="Comma-separated architectures: qwen2_5_vl_7b, qwen3_vl_8b, tiny, tiny_qwen3_vl.")] = DEFAULT_ARCHS,
    frames: Annotated[str, typer.Option(help="Comma-separated frame counts (2 fps, 448 px long side).")] = DEFAULT_FRAMES,
    press: Annotated[
        Optional[list[str]],
        typer.Option("--press", help="A press to time as its own row (repeatable); presses joined by + make one row, applied in order."),
    ] = None,
    press_arg: PressArgOption = None,
    fast_vision: Annotated[
        bool, typer.Option("--fast-vision/--no-fast-vision", help="Batched vision attention and aligned MLPs in the vidpress rows.")
    ] = True,
    compile_vision: Annotated[
        bool, typer.Option("--compile-vision/--no-compile-vision", help="torch.compile the vision blocks of the vidpress rows.")
    ] = False,
    fast_decode: Annotated[bool, typer.Option("--fast-decode/--no-fast-decode", help="Reserved KV buffers for decoding in the vidpress rows.")] = True,
    fast_prefill: Annotated[
        bool, typer.Option("--fast-prefill/--no-fast-prefill", help="Prefill chunks through causal_lower_right in the vidpress rows.")
    ] = True,
    fast_preprocess: Annotated[
        Optional[bool],
        typer.Option(
            "--fast-preprocess/--no-fast-preprocess",
            help="The processor on the GPU in the vidpress rows (default: streamed chunks that are not resized only).",
        ),
    ] = None,
    stream_preprocess: Annotated[
        bool, typer.Option("--stream-preprocess/--no-stream-preprocess", help="The processor streamed under the encoder in the vidpress rows.")
    ] = True,
    max_new_tokens: Annotated[int, typer.Option(help="Greedy tokens per answer (decode ms/token averages over them).")] = 32,
    stock_max_frames: Annotated[
        Optional[int], typer.Option(help="Skip the plain transformers rows above this many frames (they take minutes).")
    ] = None,
    plain_max_frames: Annotated[
        Optional[int], typer.Option(help="Skip the press-free vidpress rows above this many frames (hour-long videos: time the presses only).")
    ] = None,
    output: Annotated[Path, typer.Option(help="Markdown file to write (this run replaces its own section).")] = Path("docs/benchmarks.md"),
    device: Annotated[Optional[str], typer.Option(help="cuda, cuda:1, cpu (default: cuda if available).")] = None,
    video_dir: Annotated[Optional[Path], typer.Option(help="Keep the synthetic mp4 files here (default: a temporary folder).")] = None,
) -> None:
    """Time decode, vision, prefill, first token and decoding of plain transformers and of vidpress presses."""
    from vidpress.bench import Settings, console_table, markdown_row, run_bench, write_markdown

    names = press or []
    presses = press_rows(names, press_arg)
    fast = {"vision": fast_vision, "decode": fast_decode, "prefill": fast_prefill, "preprocess": fast_preprocess}
    switches = {f"--fast-{name}": on for name, on in fast.items()} | {"--compile-vision": compile_vision, "--stream-preprocess": stream_preprocess}
    try:
        settings = Settings(
            archs=_split(arch), frames=_split(frames, int), presses=presses, max_new_tokens=max_new_tokens,
            stock_max_frames=stock_max_frames, plain_max_frames=plain_max_frames, device=device, video_dir=video_dir,
            compile_vision=compile_vision, stream_preprocess=stream_preprocess, **{f"fast_{k}": v for k, v in fast.items()},
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    console = Console()
    result = run_bench(settings, progress=lambda row: print(markdown_row(row), flush=True))  # rows survive a killed run
    console.print(console_table(result))
    limits = {"stock": stock_max_frames, "plain": plain_max_frames}
    path = write_markdown(result, output, _command(arch, frames, names, press_arg, switches, max_new_tokens, limits, output))
    console.print(f"wrote {path}")


def _command(arch, frames, names, press_args, switches: dict[str, bool | None], max_new_tokens, max_frames: dict[str, int | None], output) -> str:
    """The exact command line of this run, for the report (``switches``: each on/off flag by its ``--name``, None when left to its default;
    ``max_frames``: the row limits given)."""
    words = ["vidpress", "bench", "--arch", arch, "--frames", frames]
    for name in names:
        words += ["--press", name]
    for item in press_args or []:
        words += ["--press-arg", item]
    words += [flag if on else flag.replace("--", "--no-", 1) for flag, on in switches.items() if on is not None]
    words += ["--max-new-tokens", str(max_new_tokens)]
    for rows, limit in max_frames.items():
        if limit is not None:
            words += [f"--{rows}-max-frames", str(limit)]
    return shlex.join([*words, "--output", str(output)])
