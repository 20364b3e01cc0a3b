"""The ``vidpress`` command line: ask a question about a video, run the offline demo, list the presses."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from vidpress.cli_options import PressArgOption, PressOption, build_presses

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Long-video question answering with compressed video tokens.")
console = Console()


def print_answer(answer, *, as_json: bool, extra: dict | None = None) -> None:
    """The answer and a compact stats table, or one JSON object."""
    stats = answer.stats.to_dict()
    if as_json:
        print(json.dumps({"answer": answer.text, "token_ids": answer.token_ids, "stats": stats} | (extra or {}), indent=2))
        return
    console.print(f"[bold]Answer:[/bold] {answer.text}")
    for key, value in (extra or {}).items():
        console.print(f"[bold]{key}:[/bold] {value}")
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row("frames sampled → kept", f"{stats['frames_sampled']} → {stats['frames_kept']}")
    table.add_row("visual tokens before → after", f"{stats['visual_tokens_before']} → {stats['visual_tokens_after']}")
    table.add_row("LLM input length", str(stats["llm_input_length"]))
    kv = stats["kv_length_per_layer"]
    if kv:
        table.add_row("KV entries per layer", f"min {min(kv)}, max {max(kv)} over {len(kv)} layers")
    table.add_row("seconds", ", ".join(f"{k} {v:.2f}" for k, v in stats["seconds"].items()))
    table.add_row("peak memory", f"{stats['peak_memory_gib']:.2f} GiB")
    console.print(table)


@app.command()
def ask(
    video: Annotated[str, typer.Argument(help="Video file, folder of frames.")],
    question: Annotated[str, typer.Argument(help="The question.")],
    model: Annotated[str, typer.Option(help="Hub model name or local folder.")],
    press: PressOption = None,
    press_arg: PressArgOption = None,
    frames: Annotated[Optional[int], typer.Option("--frames", help="Sample this many frames uniformly.")] = None,
    fps: Annotated[Optional[float], typer.Option(help="Sample at this rate (default 2 fps).")] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="Cap on frames sampled at --fps (default 256).")] = None,
    max_side: Annotated[Optional[int], typer.Option(help="Resize frames so the long side is at most this.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate at most.")] = 64,
    device: Annotated[Optional[str], typer.Option(help="cuda, cpu, cuda:1 ... (default: cuda if available).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="bfloat16, float16, float32 (default: bf16 on GPU).")] = None,
    fast_vision: Annotated[bool, typer.Option(help="Batched vision attention, aligned MLPs (stock outputs up to rounding).")] = True,
    compile_vision: Annotated[bool, typer.Option(help="torch.compile the vision blocks (pays on long videos).")] = False,
    stream_preprocess: Annotated[
        bool, typer.Option(help="Run the video processor chunk by chunk under the vision encoder (same pixels).")
    ] = True,
    fast_preprocess: Annotated[
        Optional[bool],
        typer.Option(
            "--fast-preprocess/--no-fast-preprocess",
            help="The video processor on the GPU (default: only streamed chunks it does not resize, the CPU's values).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Ask QUESTION about VIDEO with MODEL, optionally compressing with presses."""
    from vidpress.pipeline import VideoQA
    from vidpress.video import VideoError

    presses = build_presses(press, press_arg)
    qa = VideoQA.from_pretrained(
        model, device=device, dtype=dtype, fast_vision=fast_vision, compile_vision=compile_vision,
        stream_preprocess=stream_preprocess, fast_preprocess=fast_preprocess,
    )
    try:
        answer = qa.ask(
            video, question, press=presses, num_frames=frames, fps=fps, max_frames=max_frames,
            max_side=max_side, max_new_tokens=max_new_tokens, progress=not as_json,
        )
    except VideoError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    print_answer(answer, as_json=as_json)


@app.command()
def demo(
    press: PressOption = None,
    press_arg: PressArgOption = None,
    frames: Annotated[int, typer.Option("--frames", help="Frames in the generated video.")] = 256,
    family: Annotated[str, typer.Option(help="Tiny model family: qwen2_vl, qwen2_5_vl, qwen3_vl.")] = "qwen2_5_vl",
    seed: Annotated[int, typer.Option(help="Seed of the generated video and question.")] = 0,
    output: Annotated[Optional[Path], typer.Option(help="Also write the generated video here (mp4).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write an HTML page of the sampled and kept frames.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Offline demo: a generated needle video, a question, and the embedded default model (with ReTaKe keeping
    1/8 of the KV cache unless --press says otherwise)."""
    from vidpress.demo import run_demo

    presses = build_presses(press, press_arg) if press else None
    result = run_demo(presses, num_frames=frames, family=family, seed=seed, output=output, report=report)
    if not as_json:
        console.print(f"[yellow]{result['model_note']}[/yellow]")
        console.print(f"[bold]Question:[/bold] {result['question']}")
    print_answer(result["answer"], as_json=as_json, extra={k: result[k] for k in ("ground_truth", "kept")})


@app.command()
def presses() -> None:
    """List the presses and their parameters."""
    from vidpress.presses import PRESSES

    table = Table("name", "class", "stages", "parameters")
    for name, cls in sorted(PRESSES.items()):
        params = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls))
        stages = cls.stages
        table.add_row(name, cls.__name__, ",".join(stages), params)
    console.print(table)


def _register_commands() -> None:
    """Commands whose code lives in their own modules (imported lazily when they run)."""
    from vidpress.bench_cli import bench_command
    from vidpress.eval_cli import eval_command, plot_command
    from vidpress.train_cli import train_app

    app.command("bench")(bench_command)
    app.command("eval")(eval_command)
    app.command("plot")(plot_command)
    app.add_typer(train_app, name="train")


_register_commands()


def main() -> None:
    app(prog_name="vidpress")


if __name__ == "__main__":
    sys.exit(main())
