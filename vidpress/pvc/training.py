"""Training PVC: which parameters train, the loss with PVC active, one optimisation step, and the objective
that the shared loop trains (``train_pvc``; ``vidpress train pvc`` on the command line).

The paper (https://arxiv.org/abs/2412.09613) fine-tunes the whole VLM; here only the add-on trains
(optionally with a copy of the tower's merger), on a frozen pretrained model, with the plain next-token
cross-entropy on the answer tokens. Samples are the shared trainer's :class:`vidpress.train.encode.TrainSample`.
This module is not a training loop: the loop (data, accelerate, checkpoints, resume) is the shared one,
:func:`vidpress.train.objective.train`.

Usage, one sample (``pvc_training_step`` does exactly this)::

    with attach_pvc(model, pvc, stream=False) as run:
        loss_sum, count = pvc_answer_loss(adapter, run, sample, tokens_per_frame)
        (loss_sum / count).backward()     # inside: checkpointed vision blocks are recomputed with the hooks
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vidpress.adapters import VideoAdapter
from vidpress.attention import use_per_layer_sdpa
from vidpress.pvc.attach import PVCRun, attach_pvc, pvc_for_model, vision_seams
from vidpress.pvc.compressor import compress_encoded
from vidpress.pvc.io import load_pvc, save_pvc
from vidpress.pvc.model import PVC
from vidpress.train.encode import IGNORE, TrainSample
from vidpress.train.objective import Objective, TrainConfig, enable_gradient_checkpointing, load_vlm, train

CONFIG = "pvc_train_config.json"


def trainable_parameters(model: nn.Module, pvc: PVC, train_projector: bool = False) -> list[nn.Parameter]:
    """Freeze ``model`` and return the parameters to train: the add-on's.

    With ``train_projector``, the add-on first adopts a copy of the model's projector (Qwen-VL: the tower's
    merger) in its own dtype (``pvc.merger``, used instead of the model's own while attached and saved with the add-on), so the
    model itself never changes. The add-on may stay float32 on a bf16 model: its hooks cast their outputs.
    """
    model.requires_grad_(False)
    if train_projector and pvc.merger is None:
        pvc.merger = copy.deepcopy(vision_seams(model).projector).to(pvc.compressor.gate.dtype)
    pvc.requires_grad_(True)
    return list(pvc.parameters())


def pvc_answer_loss(adapter: VideoAdapter, run: PVCRun, sample: TrainSample, tokens_per_frame: int = 64) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the sample's answer tokens, and their number.

    ``run`` is what ``attach_pvc(model, pvc, stream=False)`` yields: call this inside that
    context. The tower runs once on the whole video with PVC attached; each unit is compressed to
    ``tokens_per_frame`` tokens placed in its slots, as ``PVCPress`` does at inference, and the positions
    are the model's own positions of the full sequence gathered at the kept tokens.
    """
    if not run.attached or run.stream:
        raise ValueError("call pvc_answer_loss inside attach_pvc(..., stream=False), with the run it yields")
    encoded = adapter.encode(sample.inputs, chunk_frames=adapter.video_units(sample.inputs) * adapter.temporal_patch_size)
    slot_mask = compress_encoded(run.pvc.compressor, encoded, tokens_per_frame)  # one tower call: one video
    llm_inputs = adapter.build_inputs(encoded, slot_mask)
    labels = sample.labels[llm_inputs.source_index]
    targets = torch.cat([labels[1:], labels.new_full((1,), IGNORE)])  # position i predicts token i + 1
    rows = (targets != IGNORE).nonzero().squeeze(1)
    logits = adapter.forward(llm_inputs, adapter.new_cache(), logits_to_keep=rows.to(adapter.device))[0]
    loss = F.cross_entropy(logits.float(), targets[rows].to(logits.device), reduction="sum")
    return loss, len(rows)


def pvc_training_step(
    adapter: VideoAdapter, pvc: PVC, sample: TrainSample, optimizer: torch.optim.Optimizer, tokens_per_frame: int = 64
) -> float:
    """One optimisation step on one sample (mean loss over its answer tokens); returns the loss."""
    with attach_pvc(adapter.model, pvc, stream=False) as run:
        loss_sum, count = pvc_answer_loss(adapter, run, sample, tokens_per_frame)
        loss = loss_sum / max(count, 1)
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


@dataclass
class PVCTrainConfig(TrainConfig):
    """PVC training settings: the shared ones (:class:`~vidpress.train.objective.TrainConfig`; ``output``
    receives the add-on, loadable by ``PVCPress(checkpoint=output)``) and these.

    Parameters
    ----------
    layers : L, the last tower blocks that get PVC's modules (None: 4, at most the tower's depth).
    tokens_per_frame : tokens per temporal unit the LLM sees during training (64 in the paper).
    window : None (the paper's full causal temporal attention), or a sliding temporal window in units (not
        in the paper: a deviation that bounds memory on long videos; see ``PVCConfig``), saved in the add-on.
    train_projector : also train a copy of the tower's merger, saved with the add-on.
    lr : (shared) 1e-4 by default: the add-on starts from zero-initialised branches.
    dtype : (shared) the frozen model's dtype: bfloat16 on GPU, float32 on CPU by default; the add-on
        always trains in float32 (no autocast: its hooks cast their outputs to the tower's dtype).
    """

    lr: float = 1e-4
    layers: int | None = None
    tokens_per_frame: int = 64
    train_projector: bool = False
    window: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layers is not None and self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")
        if self.tokens_per_frame < 1:
            raise ValueError(f"tokens_per_frame must be >= 1, got {self.tokens_per_frame}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")


class PVCTrainable(nn.Module):
    """The add-on as the module the shared loop prepares (wrapped by DDP on several GPUs).

    Its only parameters are the add-on's (the frozen model is not registered). Its forward runs a sample's
    loss computation, so DDP, which synchronises gradients only after a forward through its wrapper, sees
    one; the computation is passed as a closure, which DDP does not move between devices (the sample's
    tensors stay where ``pvc_answer_loss`` expects them).
    """

    def __init__(self, pvc: PVC):
        super().__init__()
        self.pvc = pvc

    def forward(self, loss: Callable[[], tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, int]:
        return loss()


class PVCObjective(Objective):
    """PVC for the shared loop: the add-on (optionally with its merger copy) trains on a frozen model.

    Checkpoints and the final output hold the add-on alone (``save_pvc``: ``pvc.safetensors`` and
    ``pvc_config.json``), never the base model; the output also gets ``pvc_train_config.json``.
    """

    name = "pvc"
    mixed_precision = "no"

    def __init__(self, config: PVCTrainConfig):
        self.config = config

    def load(self, checkpoint: Path | None, device: torch.device) -> VideoAdapter:
        config = self.config
        model, adapter = load_vlm(config.model, config.model, config.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
        use_per_layer_sdpa(model)  # the LLM attention of inference
        model.to(device).train()  # checkpointing acts in training mode only (the Qwen-VL configs have no dropout)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        if checkpoint is None:
            pvc = pvc_for_model(model, config.layers, config.window).float()
        else:
            pvc = load_pvc(checkpoint, model, dtype=torch.float32)
            if config.layers is not None and pvc.config.layers != config.layers:
                raise ValueError(f"{checkpoint} has {pvc.config.layers} PVC layers, not {config.layers}")
            if pvc.config.window != config.window:
                raise ValueError(f"{checkpoint} has a PVC window of {pvc.config.window}, not {config.window}")
        trainable_parameters(model, pvc, config.train_projector)
        self.adapter, self.trainable = adapter, PVCTrainable(pvc)
        return adapter

    def module(self) -> nn.Module:
        return self.trainable

    @contextmanager
    def sample_loss(self, module: nn.Module, sample: TrainSample) -> Iterator[tuple[torch.Tensor, int]]:
        pvc = self.trainable.pvc
        with attach_pvc(self.adapter.model, pvc, stream=False) as run:
            yield module(lambda: pvc_answer_loss(self.adapter, run, sample, self.config.tokens_per_frame))

    def save(self, module: nn.Module, folder: Path) -> None:
        save_pvc(module.pvc, folder)

    def save_final(self, module: nn.Module, output: Path) -> None:
        self.save(module, output)
        (output / CONFIG).write_text(json.dumps(asdict(self.config), indent=2) + "\n")


def train_pvc(config: PVCTrainConfig, *, progress: bool = True) -> Path:
    """Train the PVC add-on as ``config`` says; returns the output folder (``PVCPress(checkpoint=...)`` loads it)."""
    return train(PVCObjective(config), progress=progress)
