"""Supervised compression tuning (SCT, XComp's "learnable" LP-Comp): fine-tune a VLM with LP-Comp active.

XComp, https://arxiv.org/abs/2604.14149 (ALGORITHMS.md §4): plain next-token cross-entropy on the answer
tokens while the decoder drops video hidden states by the LP-Comp schedule; no extra parameters or loss.
Recipe defaults: 1 epoch, lr 1e-5 cosine, warmup 0.03, weight decay 0, vision tower frozen, bf16 on GPU.

Every sample is its own forward (LP-Comp drops a different span of each sample, so nothing is padded); an
optimizer step accumulates ``batch_size x grad_accum`` samples per process, each contributing the mean
cross-entropy over its answer tokens, averaged over the step's samples. Several GPUs: ``accelerate launch``
(DDP; gradients are synchronised once per optimizer step).

Models: the Qwen-VL families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), whose vision tower with its projector
(``merger``) is ``model.model.visual`` and whose processor gives ``video_grid_thw``.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from vidpress.adapters import adapter_for
from vidpress.presses.lpcomp import LPCompPress
from vidpress.train.checkpoint import checkpoint_folder, latest_checkpoint, load_checkpoint, save_checkpoint
from vidpress.train.data import ConversationDataset, collate
from vidpress.train.loss import answer_loss, compressed

LOG = "log.jsonl"
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class SCTConfig:
    """Supervised compression tuning settings.

    Parameters
    ----------
    model : hub name or folder of the VLM to tune.
    data : JSONL file (formats in :mod:`vidpress.train.records`).
    output : folder for checkpoints, ``log.jsonl`` and the final model (loadable by ``VideoQA.from_pretrained``).
    lora : train LoRA adapters on the LLM's linear layers (needs ``peft``) instead of the full LLM;
        the final model is saved merged.
    lora_rank, lora_alpha, lora_dropout : LoRA settings.
    epochs : passes over the data; ``max_steps`` caps the optimizer steps instead when set.
    lr, warmup_ratio, weight_decay : AdamW with a cosine schedule after a linear warmup.
    max_grad_norm : gradient clipping (0 disables).
    batch_size, grad_accum : samples per process per optimizer step = ``batch_size * grad_accum``.
    frames, max_side : frames sampled uniformly from each video, resized to at most ``max_side`` pixels.
    lpcomp : train with LP-Comp active (SCT); False trains without it (plain fine-tuning, the baseline).
    tokens_per_frame, schedule, keep : the :class:`~vidpress.presses.lpcomp.LPCompPress` used.
    train_projector : also train the vision-language projector (full fine-tuning only; the vision encoder
        itself is always frozen).
    gradient_checkpointing : recompute decoder activations in the backward pass.
    dtype : weights dtype; default bfloat16 for LoRA on GPU, else float32 (on GPU with autocast to bf16, so
        full fine-tuning keeps float32 master weights, as the reference's DeepSpeed bf16 setup does).
    save_every : optimizer steps between checkpoints (one is also written at the end).
    resume : continue from the latest checkpoint in ``output`` (starts afresh when there is none).
    seed : seeds the data order (reshuffled every epoch) and torch.
    num_workers : DataLoader workers decoding videos.
    """

    model: str
    data: str
    output: str
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
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
    lpcomp: bool = True
    tokens_per_frame: int | None = 16
    schedule: tuple[int, ...] | str = "round"
    keep: str = "suffix"
    train_projector: bool = True
    gradient_checkpointing: bool = False
    dtype: str | None = None
    save_every: int = 500
    resume: bool = False
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "frames", "save_every", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.lr <= 0 or not 0 <= self.warmup_ratio < 1 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("need lr > 0, 0 <= warmup_ratio < 1, weight_decay >= 0, max_grad_norm >= 0")
        self.press()  # validates the LP-Comp parameters

    def press(self) -> LPCompPress | None:
        """The LP-Comp press active in the forward passes (None when ``lpcomp`` is off)."""
        if not self.lpcomp:
            return None
        return LPCompPress(tokens_per_frame=self.tokens_per_frame, schedule=self.schedule, keep=self.keep)


def freeze_vision_tower(model, *, train_projector: bool) -> None:
    """No gradient for the vision encoder; its projector (``merger`` modules) trains if ``train_projector``."""
    visual = getattr(model.model, "visual", None)
    if visual is None:
        raise ValueError(f"SCT supports the Qwen-VL families; {type(model).__name__} has no model.visual")
    for name, parameter in visual.named_parameters():
        parameter.requires_grad_(train_projector and "merger" in name)


def enable_gradient_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing of the decoder layers (the API was renamed in transformers 5.23)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _trainable_model(config: SCTConfig, checkpoint: Path | None, *, cuda: bool):
    """(model, processor, adapter): weights from ``checkpoint`` when resuming, vision frozen, LoRA if asked."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dtype = config.dtype or ("bfloat16" if cuda and config.lora else "float32")
    source = checkpoint if checkpoint is not None and not config.lora else config.model
    model = AutoModelForImageTextToText.from_pretrained(str(source), dtype=getattr(torch, dtype), attn_implementation="sdpa")
    processor = AutoProcessor.from_pretrained(config.model)
    adapter = adapter_for(model, processor)
    freeze_vision_tower(model, train_projector=config.train_projector and not config.lora)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if config.lora:
        model = _with_lora(model, config, checkpoint)
    return model, processor, adapter


def _with_lora(model, config: SCTConfig, checkpoint: Path | None):
    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError as error:
        raise ImportError("LoRA training needs peft: pip install peft (or train without --lora)") from error
    if checkpoint is not None:
        return PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True)
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=LORA_TARGETS)
    return get_peft_model(model, lora)


def _epoch_indices(size: int, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    """This process's share of epoch ``epoch``'s shuffled order, padded by wrapping so every process gets as many."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    padded = order + order[: (-size) % world]
    return padded[rank::world]


def _steps_per_epoch(size: int, world: int, per_step: int) -> int:
    return math.ceil(math.ceil(size / world) / per_step)


def train_sct(config: SCTConfig, *, progress: bool = True) -> Path:
    """Run SCT as ``config`` says; returns the output folder holding the final model and processor."""
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(output) if config.resume else None
    if checkpoint is None and accelerator.is_main_process:
        (output / LOG).unlink(missing_ok=True)
    torch.manual_seed(config.seed)

    model, processor, adapter = _trainable_model(config, checkpoint, cuda=accelerator.device.type == "cuda")
    dataset = ConversationDataset(config.data, adapter, num_frames=config.frames, max_side=config.max_side)
    per_step = config.batch_size * config.grad_accum
    world, rank = accelerator.num_processes, accelerator.process_index
    steps_per_epoch = _steps_per_epoch(len(dataset), world, per_step)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    state = {"global_step": 0, "epoch": 0, "samples_in_epoch": 0}
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, optimizer, scheduler, rank=rank)
        accelerator.print(f"resuming from {checkpoint} at step {state['global_step']}")

    press = config.press()
    bar = tqdm(total=total_steps, initial=state["global_step"], disable=not (progress and accelerator.is_main_process), desc="sct")
    epoch = state["epoch"]
    while state["global_step"] < total_steps:
        indices = _epoch_indices(len(dataset), epoch, config.seed, rank, world)[state["samples_in_epoch"]:]
        loader = DataLoader(Subset(dataset, indices), batch_size=per_step, collate_fn=collate, num_workers=config.num_workers)
        for group in loader:
            started = time.perf_counter()
            loss = _optimizer_step(accelerator, model, adapter, press, group, parameters, optimizer, scheduler, config)
            state = {"global_step": state["global_step"] + 1, "epoch": epoch, "samples_in_epoch": state["samples_in_epoch"] + len(group)}
            record = {"step": state["global_step"], "epoch": epoch, "loss": loss, "lr": scheduler.get_last_lr()[0],
                      "samples": len(group) * world, "seconds": round(time.perf_counter() - started, 3)}
            if accelerator.is_main_process:
                with open(output / LOG, "a") as log:
                    log.write(json.dumps(record) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if state["global_step"] % config.save_every == 0 or state["global_step"] == total_steps:
                _save(accelerator, model, processor, optimizer, scheduler, state | {"config": asdict(config)}, output)
            if state["global_step"] >= total_steps:
                break
        epoch += 1
        state = state | {"epoch": epoch, "samples_in_epoch": 0}
    bar.close()
    _save_final(accelerator, model, processor, config, output)
    return output


def _optimizer_step(accelerator, model, adapter, press, group, parameters, optimizer, scheduler, config: SCTConfig) -> float:
    """Forward and backward every sample of ``group``, then one optimizer step; returns the mean loss over processes."""
    model.train()
    total = 0.0
    for index, sample in enumerate(group):
        sync = index == len(group) - 1
        with nullcontext() if sync else accelerator.no_sync(model), compressed(adapter, sample, press) as final_keep:
            loss_sum, count = answer_loss(model, sample, final_keep)
            loss = loss_sum / max(count, 1) / len(group)
            accelerator.backward(loss)
        total += float(loss.detach())
    if config.max_grad_norm:
        accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(accelerator.reduce(torch.tensor(total, device=accelerator.device), "mean"))


def _save(accelerator, model, processor, optimizer, scheduler, state: dict, output: Path) -> None:
    accelerator.wait_for_everyone()
    folder = checkpoint_folder(output, state["global_step"])
    save_checkpoint(folder, accelerator.unwrap_model(model), processor, optimizer, scheduler, state,
                    rank=accelerator.process_index, main=accelerator.is_main_process)
    accelerator.wait_for_everyone()


def _save_final(accelerator, model, processor, config: SCTConfig, output: Path) -> None:
    """The tuned model (LoRA merged) and processor in ``output``, loadable by ``VideoQA.from_pretrained``."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model)
        if config.lora:
            model = model.merge_and_unload()
        model.save_pretrained(output)
        processor.save_pretrained(output)
        (output / "sct_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    accelerator.wait_for_everyone()
