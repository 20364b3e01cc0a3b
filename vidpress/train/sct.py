"""Supervised compression tuning (SCT, XComp's "learnable" LP-Comp): fine-tune a VLM with LP-Comp active.

XComp, https://arxiv.org/abs/2604.14149 (ALGORITHMS.md §4): plain next-token cross-entropy on the answer
tokens while the decoder drops video hidden states by the LP-Comp schedule; no extra parameters or loss.
Recipe defaults: 1 epoch, lr 1e-5 cosine, warmup 0.03, weight decay 0, vision tower frozen, bf16 on GPU.

The loop is the shared one (:func:`vidpress.train.objective.train`); :class:`SCTObjective` is what it trains
(LP-Comp drops a different span of each sample, so every sample is its own forward).

Models: the Qwen-VL families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), whose vision tower with its projector
(``merger``) is ``model.model.visual`` and whose processor gives ``video_grid_thw``.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn

from vidpress.adapters import VideoAdapter
from vidpress.presses.lpcomp import LPCompPress
from vidpress.train.encode import TrainSample
from vidpress.train.loss import answer_loss, compressed
from vidpress.train.objective import Objective, TrainConfig, enable_gradient_checkpointing, load_vlm, train

LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class SCTConfig(TrainConfig):
    """Supervised compression tuning settings: the shared ones (:class:`~vidpress.train.objective.TrainConfig`;
    ``output`` receives the final model, loadable by ``VideoQA.from_pretrained``) and these.

    Parameters
    ----------
    lora : train LoRA adapters on the LLM's linear layers (needs ``peft``) instead of the full LLM;
        the final model is saved merged.
    lora_rank, lora_alpha, lora_dropout : LoRA settings.
    lpcomp : train with LP-Comp active (SCT); False trains without it (plain fine-tuning, the baseline).
    tokens_per_frame, schedule, keep : the :class:`~vidpress.presses.lpcomp.LPCompPress` used.
    train_projector : also train the vision-language projector (full fine-tuning only; the vision encoder
        itself is always frozen).
    dtype : (shared) default bfloat16 for LoRA on GPU, else float32 (on GPU with autocast to bf16, so full
        fine-tuning keeps float32 master weights, as the reference's DeepSpeed bf16 setup does).
    """

    lora: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lpcomp: bool = True
    tokens_per_frame: int | None = 16
    schedule: tuple[int, ...] | str = "round"
    keep: str = "suffix"
    train_projector: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")
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


class SCTObjective(Objective):
    """SCT for the shared loop: the model (or its LoRA adapters) trains with LP-Comp active in its forward.

    Checkpoints hold the model (only the LoRA adapter with LoRA) and the processor; the final output is the
    whole model (LoRA merged), the processor and ``sct_config.json``.
    """

    name = "sct"

    def __init__(self, config: SCTConfig):
        self.config = config
        self.press = config.press()

    def load(self, checkpoint: Path | None, device: torch.device) -> VideoAdapter:
        config = self.config
        dtype = config.dtype or ("bfloat16" if device.type == "cuda" and config.lora else "float32")
        source = checkpoint if checkpoint is not None and not config.lora else config.model
        model, self.adapter = load_vlm(source, config.model, dtype)
        freeze_vision_tower(model, train_projector=config.train_projector and not config.lora)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model = _with_lora(model, config, checkpoint) if config.lora else model
        return self.adapter

    def module(self) -> nn.Module:
        return self.model

    @contextmanager
    def sample_loss(self, module: nn.Module, sample: TrainSample) -> Iterator[tuple[Tensor, int]]:
        with compressed(self.adapter, sample, self.press) as final_keep:
            yield answer_loss(module, sample, final_keep)

    def save(self, module: nn.Module, folder: Path) -> None:
        module.save_pretrained(folder)
        self.adapter.processor.save_pretrained(folder)

    def save_final(self, module: nn.Module, output: Path) -> None:
        """The tuned model (LoRA merged) and processor, loadable by ``VideoQA.from_pretrained``."""
        self.save(module.merge_and_unload() if self.config.lora else module, output)
        (output / "sct_config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")


def _with_lora(model, config: SCTConfig, checkpoint: Path | None):
    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError as error:
        raise ImportError("LoRA training needs peft: pip install peft (or train without --lora)") from error
    if checkpoint is not None:
        return PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True)
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=LORA_TARGETS)
    return get_peft_model(model, lora)


def train_sct(config: SCTConfig, *, progress: bool = True) -> Path:
    """Run SCT as ``config`` says; returns the output folder holding the final model and processor."""
    return train(SCTObjective(config), progress=progress)
