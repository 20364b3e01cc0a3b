"""``vidpress eval`` and ``vidpress plot``: two plain typer-annotated functions, registered by vidpress.cli.

It imports its shared options from vidpress.cli_options, never vidpress.cli (which imports it to register them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from vidpress.cli_options import PressArgOption, PressOption, build_presses

console = Console()



TASK_HELP = "videomme, mlvu-dev, mlvu-test, lvbench, longvideobench, synth, synth-<task>-<frames>, synth-grid-<frames>."


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text).strip("-")


def default_output(task: str, model: str, presses: list[str], press_args: list[str], frames, fps, max_frames, max_side) -> Path:
    """runs/<task>/<model name>/<presses and their arguments>_<sampling>: the same command resumes the same folder."""
    press = "+".join(presses) + "".join(f"-{a}" for a in press_args) if presses else "none"
    named = (("frames", frames), ("fps", fps), ("max", max_frames), ("side", max_side))
    sampling = "-".join(f"{name}{value}" for name, value in named if value)
    return Path("runs") / _slug(task) / _slug(Path(model).name) / _slug(f"{press}_{sampling or 'default'}")


def eval_command(
    model: Annotated[str, typer.Option(help="Hub model name or local folder.")],
    task: Annotated[str, typer.Option(help=TASK_HELP)],
    press: PressOption = None,
    press_arg: PressArgOption = None,
    data: Annotated[Optional[Path], typer.Option(help="The benchmark's annotation file (MLVU, synth: or its folder).")] = None,
    video_dir: Annotated[Optional[Path], typer.Option(help="Videos folder, searched recursively (default: --data's folder).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate the first N samples only.")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Run folder (default: runs/<task>/<model>/<press>_<sampling>).")] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", help="Sample this many frames uniformly.")] = None,
    fps: Annotated[Optional[float], typer.Option(help="Sample at this rate (default 2 fps).")] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="Cap on frames sampled at --fps (default 256).")] = None,
    max_side: Annotated[Optional[int], typer.Option(help="Resize frames so the long side is at most this.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(help="Tokens generated per answer (default: the benchmark's).")] = None,
    device: Annotated[Optional[str], typer.Option(help="cuda, cpu, cuda:1 ... (default: this process's GPU if any).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="bfloat16, float16, float32 (default: bf16 on GPU).")] = None,
    compile_vision: Annotated[bool, typer.Option(help="torch.compile the vision blocks (pays over many videos).")] = False,
) -> None:
    """Evaluate MODEL with presses on a benchmark; resumable, one process per GPU under `accelerate launch`."""
    from vidpress.eval.runner import ConfigMismatchError, EvalRun, Sampling, evaluate

    presses = build_presses(press, press_arg)
    output = output or default_output(task, model, press or [], press_arg or [], frames, fps, max_frames, max_side)
    run = EvalRun(
        model=model, task=task, output=output, presses=presses, data=data, video_dir=video_dir, limit=limit,
        sampling=Sampling(num_frames=frames, fps=fps, max_frames=max_frames, max_side=max_side),
        max_new_tokens=max_new_tokens, device=device, dtype=dtype, compile_vision=compile_vision,
    )
    try:
        summary = evaluate(run, console=console)
    except (ConfigMismatchError, ValueError, FileNotFoundError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    if summary is not None:
        console.print(f"run folder: {output}")


def plot_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders of `vidpress eval` (with a summary.json).")],
    output: Annotated[Path, typer.Option(help="Folder for the PNG files.")] = Path("plots"),
) -> None:
    """Accuracy vs frames and vs visual tokens per press, and the needle heatmap of synth grid runs, as PNG files."""
    from vidpress.eval.plots import plot_runs

    try:
        paths = plot_runs(run_dirs, output)
    except (ImportError, FileNotFoundError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    for path in paths:
        console.print(str(path))
