"""``vidpress train``: supervised compression tuning from the command line (``train_app``, wired into vidpress.cli)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

train_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fine-tune a VLM for compressed video tokens.")


@train_app.callback()
def train() -> None:
    """Fine-tune a VLM for compressed video tokens."""


@train_app.command()
def sct(
    model: Annotated[str, typer.Option(help="Hub model name or local folder of the VLM to tune.")],
    data: Annotated[str, typer.Option(help="JSONL of {video, question, answer}, {video, question, options, answer} or {video, conversations}.")],
    output: Annotated[str, typer.Option(help="Folder for checkpoints, log.jsonl and the final model.")],
    lora: Annotated[bool, typer.Option("--lora", help="Train LoRA adapters (needs peft); the final model is merged.")] = False,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 1,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps instead.")] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine schedule).")] = 1e-5,
    warmup_ratio: Annotated[float, typer.Option(help="Fraction of the steps for the linear warmup.")] = 0.03,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Samples per process per accumulation round.")] = 1,
    grad_accum: Annotated[int, typer.Option(help="Accumulation rounds per optimizer step.")] = 1,
    frames: Annotated[int, typer.Option(help="Frames sampled uniformly from each video.")] = 64,
    max_side: Annotated[Optional[int], typer.Option(help="Resize frames so the long side is at most this.")] = 448,
    tokens_per_frame: Annotated[Optional[int], typer.Option(help="LP-Comp tokens per frame (0: one frame per temporal unit).")] = 16,
    schedule: Annotated[str, typer.Option(help="LP-Comp schedule: round (released code), ceil (paper) or one value per layer (16,16,15,...).")] = "round",
    keep: Annotated[str, typer.Option(help="LP-Comp keep mode: suffix or uniform.")] = "suffix",
    no_lpcomp: Annotated[bool, typer.Option("--no-lpcomp", help="Train without LP-Comp (plain fine-tuning baseline).")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations in backward.")] = False,
    dtype: Annotated[Optional[str], typer.Option(help="Weights dtype (default: bf16 for LoRA on GPU, else float32).")] = None,
    save_every: Annotated[int, typer.Option(help="Optimizer steps between checkpoints.")] = 500,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --output.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the data order.")] = 0,
    num_workers: Annotated[int, typer.Option(help="DataLoader workers decoding videos.")] = 0,
) -> None:
    """Supervised compression tuning (XComp): next-token loss on the answers with LP-Comp active."""
    from vidpress.train.sct import SCTConfig, train_sct

    try:
        config = SCTConfig(
            model=model, data=data, output=output, lora=lora, lora_rank=lora_rank, epochs=epochs, max_steps=max_steps,
            lr=lr, warmup_ratio=warmup_ratio, weight_decay=weight_decay, batch_size=batch_size, grad_accum=grad_accum,
            frames=frames, max_side=max_side, tokens_per_frame=tokens_per_frame or None, schedule=_schedule(schedule), keep=keep,
            lpcomp=not no_lpcomp, gradient_checkpointing=gradient_checkpointing, dtype=dtype, save_every=save_every,
            resume=resume, seed=seed, num_workers=num_workers,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    folder = train_sct(config)
    typer.echo(f"saved the tuned model to {folder}")


def _schedule(text: str) -> tuple[int, ...] | str:
    """The --schedule value: "round", "ceil", or comma-separated tokens per frame for every decoder layer."""
    if "," not in text:
        return text
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as error:
        raise typer.BadParameter(f"--schedule must be round, ceil or integers separated by commas, got {text!r}") from error
