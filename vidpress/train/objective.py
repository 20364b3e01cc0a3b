"""The shared training loop and what it trains: an :class:`Objective` says which parameters train, how one
sample's loss is computed (inside which context), and what a checkpoint saves and resumes.

Users: SCT (:mod:`vidpress.train.sct`, the LLM or LoRA adapters with LP-Comp active) and PVC
(:mod:`vidpress.pvc.training`, the add-on alone on a frozen model). The loop itself (data order, accelerate,
gradient accumulation, logging, checkpoints with resume) knows neither.

Every sample is its own forward (nothing is padded); an optimizer step accumulates ``batch_size x grad_accum``
samples per process, each contributing the mean cross-entropy over its answer tokens, averaged over the
step's samples. Several GPUs: ``accelerate launch`` (DDP over :meth:`Objective.module`; gradients are
synchronised once per optimizer step).
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from vidpress.adapters import VideoAdapter, adapter_for
from vidpress.fast import enable_fast_vision
from vidpress.train.checkpoint import checkpoint_folder, latest_checkpoint, load_checkpoint, save_checkpoint
from vidpress.train.data import ConversationDataset, collate
from vidpress.train.encode import TrainSample

LOG = "log.jsonl"


@dataclass
class TrainConfig:
    """Settings of the shared loop (each objective's config adds its own).

    Parameters
    ----------
    model : hub name or folder of the VLM.
    data : JSONL file (formats in :mod:`vidpress.train.records`).
    output : folder for checkpoints, ``log.jsonl`` and the final result.
    epochs : passes over the data; ``max_steps`` caps the optimizer steps instead when set.
    lr, warmup_ratio, weight_decay : AdamW with a cosine schedule after a linear warmup.
    max_grad_norm : gradient clipping (0 disables).
    batch_size, grad_accum : samples per process per optimizer step = ``batch_size * grad_accum``.
    frames, max_side : frames sampled uniformly from each video, resized to at most ``max_side`` pixels.
    gradient_checkpointing : recompute activations in the backward pass.
    dtype : weights dtype of the model (the default is the objective's).
    save_every : optimizer steps between checkpoints (one is also written at the end).
    resume : continue from the latest checkpoint in ``output`` (starts afresh when there is none).
    seed : seeds the data order (reshuffled every epoch) and torch.
    num_workers : DataLoader workers decoding videos.
    """

    model: str
    data: str
    output: str
    epochs: int = 1
    max_steps: int | None = None
    lr: float = 1e-5
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 1
    grad_accum: int = 1
    frames: int = 64
    max_side: int | None = 448
    gradient_checkpointing: bool = False
    dtype: str | None = None
    save_every: int = 500
    resume: bool = False
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "frames", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.lr <= 0 or not 0 <= self.warmup_ratio < 1 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("need lr > 0, 0 <= warmup_ratio < 1, weight_decay >= 0, max_grad_norm >= 0")


class Objective(ABC):
    """What a run trains; the shared loop (:func:`train`) calls these, in this order.

    ``load`` builds everything (resuming weights from a checkpoint); ``module`` is what accelerate prepares
    (wrapped by DDP on several GPUs) and ``parameters`` its trainable parameters; ``sample_loss`` computes a
    sample's loss through the prepared module; ``save`` writes the weights of a checkpoint (``resume`` reads
    them back through ``load``), ``save_final`` the run's result.
    """

    name: str  # the progress bar's label
    mixed_precision: str = "bf16"  # accelerate's autocast on GPU ("no": none)
    config: TrainConfig

    @abstractmethod
    def load(self, checkpoint: Path | None, device: torch.device) -> VideoAdapter:
        """Build the model (on ``device``) and the trainable parts, from ``checkpoint`` when resuming."""

    @abstractmethod
    def module(self) -> nn.Module:
        """The module holding every trainable parameter, whose forward the loss goes through."""

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.module().parameters() if p.requires_grad]

    @abstractmethod
    def sample_loss(self, module: nn.Module, sample: TrainSample) -> AbstractContextManager[tuple[Tensor, int]]:
        """Context giving the summed answer-token loss of ``sample`` and the token count, computed with the
        prepared ``module``; the backward pass runs inside it."""

    @abstractmethod
    def save(self, module: nn.Module, folder: Path) -> None:
        """Write the trained weights (``module`` unwrapped) into a checkpoint folder, for ``load`` to resume."""

    @abstractmethod
    def save_final(self, module: nn.Module, output: Path) -> None:
        """Write the result of the run (``module`` unwrapped) into the output folder."""


def load_vlm(source: str | Path, processor_source: str | Path, dtype: str) -> tuple[nn.Module, VideoAdapter]:
    """The ``*ForConditionalGeneration`` model from ``source`` with SDPA attention (batched vision attention,
    vidpress.fast, as VideoQA runs it), and its adapter."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(str(source), dtype=getattr(torch, dtype), attn_implementation="sdpa")
    enable_fast_vision(model)
    return model, adapter_for(model, AutoProcessor.from_pretrained(str(processor_source)))


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Non-reentrant activation checkpointing of the decoder layers (the API was renamed in transformers 5.23)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _epoch_indices(size: int, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    """This process's share of epoch ``epoch``'s shuffled order, padded by wrapping so every process gets as many."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    padded = order + order[: (-size) % world]
    return padded[rank::world]


def _steps_per_epoch(size: int, world: int, per_step: int) -> int:
    return math.ceil(math.ceil(size / world) / per_step)


def train(objective: Objective, *, progress: bool = True) -> Path:
    """Run ``objective`` as its config says; returns the output folder."""
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    config = objective.config
    accelerator = Accelerator(mixed_precision=objective.mixed_precision if torch.cuda.is_available() else "no")
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(output) if config.resume else None
    if checkpoint is None and accelerator.is_main_process:
        (output / LOG).unlink(missing_ok=True)
    torch.manual_seed(config.seed)

    adapter = objective.load(checkpoint, accelerator.device)
    dataset = ConversationDataset(config.data, adapter, num_frames=config.frames, max_side=config.max_side)
    per_step = config.batch_size * config.grad_accum
    world, rank = accelerator.num_processes, accelerator.process_index
    total_steps = config.max_steps or config.epochs * _steps_per_epoch(len(dataset), world, per_step)
    parameters = objective.parameters()
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    module, optimizer = accelerator.prepare(objective.module(), optimizer)
    state = {"global_step": 0, "epoch": 0, "samples_in_epoch": 0}
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, optimizer, scheduler, rank=rank)
        accelerator.print(f"resuming from {checkpoint} at step {state['global_step']}")

    bar = tqdm(total=total_steps, initial=state["global_step"], disable=not (progress and accelerator.is_main_process), desc=objective.name)
    epoch = state["epoch"]
    while state["global_step"] < total_steps:
        indices = _epoch_indices(len(dataset), epoch, config.seed, rank, world)[state["samples_in_epoch"]:]
        loader = DataLoader(Subset(dataset, indices), batch_size=per_step, collate_fn=collate, num_workers=config.num_workers)
        for group in loader:
            started = time.perf_counter()
            loss = _optimizer_step(accelerator, objective, module, group, parameters, optimizer, scheduler)
            state = {"global_step": state["global_step"] + 1, "epoch": epoch, "samples_in_epoch": state["samples_in_epoch"] + len(group)}
            record = {"step": state["global_step"], "epoch": epoch, "loss": loss, "lr": scheduler.get_last_lr()[0],
                      "samples": len(group) * world, "seconds": round(time.perf_counter() - started, 3)}
            if accelerator.is_main_process:
                with open(output / LOG, "a") as log:
                    log.write(json.dumps(record) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if state["global_step"] % config.save_every == 0 or state["global_step"] == total_steps:
                _save(accelerator, objective, module, optimizer, scheduler, state | {"config": asdict(config)}, output)
            if state["global_step"] >= total_steps:
                break
        epoch += 1
        state = state | {"epoch": epoch, "samples_in_epoch": 0}
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        objective.save_final(accelerator.unwrap_model(module), output)
    accelerator.wait_for_everyone()
    return output


def _optimizer_step(
    accelerator, objective: Objective, module: nn.Module, group: list[TrainSample], parameters, optimizer, scheduler
) -> float:
    """Forward and backward every sample of ``group``, then one optimizer step; returns the mean loss over processes."""
    module.train()
    total = 0.0
    for index, sample in enumerate(group):
        sync = index == len(group) - 1
        with nullcontext() if sync else accelerator.no_sync(module), objective.sample_loss(module, sample) as (loss_sum, count):
            loss = loss_sum / max(count, 1) / len(group)
            accelerator.backward(loss)
        total += float(loss.detach())
    if objective.config.max_grad_norm:
        accelerator.clip_grad_norm_(parameters, objective.config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(accelerator.reduce(torch.tensor(total, device=accelerator.device), "mean"))


def _save(accelerator, objective: Objective, module: nn.Module, optimizer, scheduler, state: dict, output: Path) -> None:
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(module)
    save_checkpoint(checkpoint_folder(output, state["global_step"]), lambda folder: objective.save(unwrapped, folder),
                    optimizer, scheduler, state, rank=accelerator.process_index, main=accelerator.is_main_process)
    accelerator.wait_for_everyone()
