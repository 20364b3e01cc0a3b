"""Attach PVC to a Qwen-VL vision tower with hooks, carrying the temporal state across chunked calls.

The tower's blocks see a video as consecutive temporal units (on Qwen-VL a unit is a temporal patch of 2
frames: PVC's "frame" is a unit here), each unit's patch tokens in the same order (Qwen2.5-VL permutes them
into attention windows, identically in every unit), so token j of every unit is the same spatial position.
Hooks installed on the instance only (the modeling code is untouched):

- a pre-hook on the tower reads ``grid_thw`` and embeds each unit's relative time (its index from the start
  of the video: 0, 1, 2, ...; the 4 repeats of an image are units 0 and 1 on Qwen-VL);
- in each of the last L blocks, forward hooks on ``norm1``/``norm2`` apply the AdaLN modulation, and a
  forward hook on the block adds the causal temporal attention branch to its output;
- a trained merger held by the add-on (``PVC.merger``) replaces the tower's merger while attached.

With ``stream=True`` (the pipeline's chunked encoding), each call of the tower continues the same video: the
earlier units' temporal keys/values are kept, so chunked encoding equals one-shot encoding (with a temporal
window w, ``PVCConfig.window``, only those of the last w - 1 units: all the attention needs). The state starts
empty when the context is entered: enter it once per video. With ``stream=False`` (training), every call
and every entry of ``grid_thw`` is a separate video. When training with gradient checkpointing in the
tower, run the backward pass inside the context: the recomputed blocks need the hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PreTrainedModel

from vidpress.pvc.model import PVC, PVCConfig
from vidpress.pvc.modules import TemporalKV, modulate

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
DEFAULT_LAYERS = 4


def vision_tower(model: PreTrainedModel) -> nn.Module:
    """The vision tower (``patch_embed → blocks → merger``) of a supported VLM."""
    model_type = model.config.model_type
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"PVC supports {', '.join(SUPPORTED_MODEL_TYPES)}, not {model_type!r}")
    return model.model.visual


def pvc_for_model(model: PreTrainedModel, layers: int | None = None, window: int | None = None) -> PVC:
    """An untrained PVC add-on sized for ``model`` (on its tower's device and dtype).

    ``layers`` defaults to 4, or the tower's depth when it has fewer blocks; ``window`` is the temporal
    attention's window in units (None: full causal, as in the paper; see ``PVCConfig``).
    """
    visual = vision_tower(model)
    block = visual.blocks[0]
    text = model.config.get_text_config()
    config = PVCConfig(
        vision_width=block.norm1.weight.shape[0],
        vision_heads=block.attn.num_heads,
        llm_width=text.hidden_size,
        llm_heads=text.num_attention_heads,
        layers=layers or min(DEFAULT_LAYERS, len(visual.blocks)),
        window=window,
    )
    return PVC(config).to(device=visual.device, dtype=visual.dtype)


class PVCRun:
    """The state of PVC while attached: the current call's units and, when streaming, the carried keys/values."""

    def __init__(self, pvc: PVC, stream: bool):
        self.pvc = pvc
        self.stream = stream
        self.attached = False
        self.units_seen = 0
        self.past: list[TemporalKV | None] = [None] * pvc.config.layers
        self.entries: list[tuple[int, int, int, int]] = []  # (first token, first unit, units, tokens per unit)
        self.modulation: list[torch.Tensor] = []  # per layer, AdaLN (shift, scale) per unit [U, 2, 2, C]

    def start_call(self, tower: nn.Module, args: tuple, kwargs: dict) -> None:
        """Tower pre-hook: the units of this call and each layer's AdaLN modulation from their relative time."""
        grid = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
        grid = grid.tolist()
        if self.stream and len(grid) != 1:
            raise ValueError(f"streaming PVC encodes one video per call, got grid_thw with {len(grid)} entries")
        self.entries, times, token, unit = [], [], 0, 0
        for t, h, w in grid:
            self.entries.append((token, unit, t, h * w))
            start = self.units_seen if self.stream else 0
            times.append(torch.arange(start, start + t))
            token, unit = token + t * h * w, unit + t
        if self.stream:
            self.units_seen += grid[0][0]
        time_embedding = self.pvc.time_embedding(torch.cat(times).to(tower.device))
        self.modulation = [modulation(time_embedding) for modulation in self.pvc.modulation]

    def modulate_norm(self, layer: int, index: int, out: torch.Tensor) -> torch.Tensor:
        """Norm forward hook: modulate normalisation ``index`` (0: before attention, 1: before the MLP)."""
        shift, scale = self.modulation[layer][:, index].to(out.dtype).unbind(1)
        parts = [
            modulate(x, shift[unit : unit + t, None], scale[unit : unit + t, None]).flatten(0, 1)
            for x, unit, t in self._units(out)
        ]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def add_temporal(self, layer: int, out: torch.Tensor) -> torch.Tensor:
        """Block forward hook: add the causal temporal attention branch of this layer."""
        attention = self.pvc.temporal[layer]
        parts = []
        for x, _, _ in self._units(out):
            past = self.past[layer] if self.stream else None
            if past is not None and past[0].shape[0] != x.shape[1]:
                raise ValueError(f"frame size changed within a video: {past[0].shape[0]} then {x.shape[1]} tokens")
            update, kv = attention(x, past, self.pvc.config.window)
            if self.stream:
                self.past[layer] = kv
            parts.append((x + update).flatten(0, 1))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _units(self, hidden: torch.Tensor) -> Iterator[tuple[torch.Tensor, int, int]]:
        """Each entry of the call as ([t, n, C] view of ``hidden`` [S, C], its first unit, t)."""
        for token, unit, t, n in self.entries:
            yield hidden[token : token + t * n].view(t, n, -1), unit, t


@contextmanager
def attach_pvc(visual: nn.Module, pvc: PVC, *, stream: bool = True) -> Iterator[PVCRun]:
    """Attach ``pvc`` to the last ``pvc.config.layers`` blocks of the tower ``visual`` while in the context."""
    blocks = visual.blocks
    layers = pvc.config.layers
    if layers > len(blocks):
        raise ValueError(f"PVC has {layers} layers but the vision tower has only {len(blocks)} blocks")
    hooked = blocks[len(blocks) - layers :]
    run = PVCRun(pvc, stream)
    handles = [visual.register_forward_pre_hook(run.start_call, with_kwargs=True)]
    for layer, block in enumerate(hooked):
        handles += [
            block.norm1.register_forward_hook(lambda _m, _a, out, layer=layer: run.modulate_norm(layer, 0, out)),
            block.norm2.register_forward_hook(lambda _m, _a, out, layer=layer: run.modulate_norm(layer, 1, out)),
            block.register_forward_hook(lambda _m, _a, out, layer=layer: run.add_temporal(layer, out)),
        ]
    merger = visual.merger
    if pvc.merger is not None:
        visual.merger = pvc.merger
    run.attached = True
    try:
        yield run
    finally:
        run.attached = False
        visual.merger = merger
        for handle in handles:
            handle.remove()
