"""``vidpress train``: SCT and PVC training from the command line (``train_app``, wired into vidpress.cli).

Both commands run the shared loop (:func:`vidpress.train.objective.train`); its options are declared once here.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Model = Annotated[str, typer.Option(help="Hub model name or local folder of the VLM.")]
Data = Annotated[str, typer.Option(help="JSONL of {video, question, answer}, {video, question, options, answer} or {video, conversations}.")]
Epochs = Annotated[int, typer.Option(help="Passes over the data.")]
MaxSteps = Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps instead.")]
Lr = Annotated[float, typer.Option(help="Peak learning rate (cosine schedule).")]
WarmupRatio = Annotated[float, typer.Option(help="Fraction of the steps for the linear warmup.")]
WeightDecay = Annotated[float, typer.Option(help="AdamW weight decay.")]
BatchSize = Annotated[int, typer.Option(help="Samples per process per accumulation round.")]
GradAccum = Annotated[int, typer.Option(help="Accumulation rounds per optimizer step.")]
Frames = Annotated[int, typer.Option(help="Frames sampled uniformly from each video.")]
MaxSide = Annotated[Optional[int], typer.Option(help="Resize frames so the long side is at most this.")]
GradientCheckpointing = Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations in backward.")]
SaveEvery = Annotated[int, typer.Option(help="Optimizer steps between checkpoints.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --output.")]
Seed = Annotated[int, typer.Option(help="Seed of the data order.")]
NumWorkers = Annotated[int, typer.Option(help="DataLoader workers decoding videos.")]

train_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fine-tune a VLM for compressed video tokens.")


@train_app.callback()
def train() -> None:
    """Fine-tune a VLM for compressed video tokens."""


@train_app.command()
def sct(
    model: Model,
    data: Data,
    output: Annotated[str, typer.Option(help="Folder for checkpoints, log.jsonl and the final model.")],
    lora: Annotated[bool, typer.Option("--lora", help="Train LoRA adapters (needs peft); the final model is merged.")] = False,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    epochs: Epochs = 1,
    max_steps: MaxSteps = None,
    lr: Lr = 1e-5,
    warmup_ratio: WarmupRatio = 0.03,
    weight_decay: WeightDecay = 0.0,
    batch_size: BatchSize = 1,
    grad_accum: GradAccum = 1,
    frames: Frames = 64,
    max_side: MaxSide = 448,
    tokens_per_frame: Annotated[Optional[int], typer.Option(help="LP-Comp tokens per frame (0: one frame per temporal unit).")] = 16,
    schedule: Annotated[str, typer.Option(help="LP-Comp schedule: round (released code), ceil (paper) or one value per layer (16,16,15,...).")] = "round",
    keep: Annotated[str, typer.Option(help="LP-Comp keep mode: suffix or uniform.")] = "suffix",
    no_lpcomp: Annotated[bool, typer.Option("--no-lpcomp", help="Train without LP-Comp (plain fine-tuning baseline).")] = False,
    gradient_checkpointing: GradientCheckpointing = False,
    dtype: Annotated[Optional[str], typer.Option(help="Weights dtype (default: bf16 for LoRA on GPU, else float32).")] = None,
    save_every: SaveEvery = 500,
    resume: Resume = False,
    seed: Seed = 0,
    num_workers: NumWorkers = 0,
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


@train_app.command()
def pvc(
    model: Model,
    data: Data,
    output: Annotated[str, typer.Option(help="Folder for checkpoints, log.jsonl and the trained add-on (PVCPress(checkpoint=...)).")],
    layers: Annotated[Optional[int], typer.Option(help="Last tower blocks with PVC's modules (default: 4, at most the depth).")] = None,
    tokens_per_frame: Annotated[int, typer.Option(help="Tokens per temporal unit the LLM sees.")] = 64,
    train_projector: Annotated[bool, typer.Option("--train-projector", help="Also train a copy of the projector (Qwen-VL: the merger; InternVL: the multi-modal projector).")] = False,
    window: Annotated[Optional[int], typer.Option(help="Sliding temporal window in units (not in the paper; default: all).")] = None,
    epochs: Epochs = 1,
    max_steps: MaxSteps = None,
    lr: Lr = 1e-4,
    warmup_ratio: WarmupRatio = 0.03,
    weight_decay: WeightDecay = 0.0,
    batch_size: BatchSize = 1,
    grad_accum: GradAccum = 1,
    frames: Frames = 64,
    max_side: MaxSide = 448,
    gradient_checkpointing: GradientCheckpointing = False,
    dtype: Annotated[Optional[str], typer.Option(help="Frozen model's dtype (default: bf16 on GPU, else float32).")] = None,
    save_every: SaveEvery = 500,
    resume: Resume = False,
    seed: Seed = 0,
    num_workers: NumWorkers = 0,
) -> None:
    """PVC: train the temporal add-on (and optionally the merger) on a frozen VLM, with the token compression active."""
    from vidpress.pvc.training import PVCTrainConfig, train_pvc

    try:
        config = PVCTrainConfig(
            model=model, data=data, output=output, layers=layers, tokens_per_frame=tokens_per_frame, train_projector=train_projector,
            window=window, epochs=epochs, max_steps=max_steps, lr=lr, warmup_ratio=warmup_ratio, weight_decay=weight_decay,
            batch_size=batch_size, grad_accum=grad_accum, frames=frames, max_side=max_side,
            gradient_checkpointing=gradient_checkpointing, dtype=dtype, save_every=save_every, resume=resume, seed=seed,
            num_workers=num_workers,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    folder = train_pvc(config)
    typer.echo(f"saved the PVC add-on to {folder}")


def _schedule(text: str) -> tuple[int, ...] | str:
    """The --schedule value: "round", "ceil", or comma-separated tokens per frame for every decoder layer."""
    if "," not in text:
        return text
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as error:
        raise typer.BadParameter(f"--schedule must be round, ceil or integers separated by commas, got {text!r}") from error
