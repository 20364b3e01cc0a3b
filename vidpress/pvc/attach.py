"""Attach PVC to a VLM's vision tower with hooks, carrying the temporal state across chunked calls.

The tower's blocks see a video as consecutive temporal units, each unit's patch tokens in the same order, so
token j of every unit is the same spatial position. A unit is PVC's "frame": on Qwen-VL a temporal patch of
2 frames (its blocks hold a call's tokens flat, [S, C], units one after the other, permuted into attention
windows identically in every unit); on InternVL one frame (InternViT's blocks hold [T, n, C], a frame per
batch row, its class token first). Hooks installed on the instance only (the modeling code is untouched):

- a pre-hook on the tower reads the call's units (``grid_thw`` on Qwen-VL, the frames of ``pixel_values``
  on InternVL) and embeds each unit's relative time (its index from the start of the video: 0, 1, 2, ...);
- in each of the last L blocks, forward hooks on its two normalisations apply the AdaLN modulation, and a
  forward hook on the block adds the causal temporal attention branch to its output;
- a trained projector held by the add-on (``PVC.merger``) replaces the model's own while attached (Qwen-VL:
  the tower's merger; InternVL: the multi-modal projector after the pixel shuffle).

With ``stream=True`` (the pipeline's chunked encoding), each call of the tower continues the same video: the
earlier units' temporal keys/values are kept, so chunked encoding equals one-shot encoding (with a temporal
window w, ``PVCConfig.window``, only those of the last w - 1 units: all the attention needs). The state starts
empty when the context is entered: enter it once per video. With ``stream=False`` (training), every call
and every entry of ``grid_thw`` is a separate video (InternVL: every call, its frames one video). When training with gradient checkpointing in the
tower, run the backward pass inside the context: the recomputed blocks need the hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from vidpress.pvc.model import PVC, PVCConfig
from vidpress.pvc.modules import TemporalKV, modulate

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl")
DEFAULT_LAYERS = 4
Units = list[tuple[int, int | None]]  # per video of a tower call: (units, tokens per unit; None: the blocks' row length)


@dataclass(frozen=True)
class VisionSeams:
    """Where PVC attaches in a VLM.

    tower : the vision tower, called once per chunk of frames.
    blocks : its transformer blocks; ``norms`` names each block's pre-attention and pre-MLP normalisations.
    projector_owner, projector_name : the module attribute holding the projector PVC's ``merger`` replaces.
    call_units : (args, kwargs) of a tower call → the units of each video in it.
    """

    tower: nn.Module
    blocks: nn.ModuleList
    norms: tuple[str, str]
    projector_owner: nn.Module
    projector_name: str
    call_units: Callable[[tuple, dict], Units]

    @property
    def projector(self) -> nn.Module:
        return getattr(self.projector_owner, self.projector_name)

    @property
    def placement(self) -> dict:
        """The tower's device and dtype (where the add-on goes)."""
        weight = next(self.blocks[0].parameters())
        return {"device": weight.device, "dtype": weight.dtype}


def _qwen_units(args: tuple, kwargs: dict) -> Units:
    grid = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
    return [(t, h * w) for t, h, w in grid.tolist()]


def _internvl_units(args: tuple, kwargs: dict) -> Units:
    pixels = kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]
    return [(pixels.shape[0], None)]


def vision_seams(model: PreTrainedModel) -> VisionSeams:
    """The seams of a supported VLM (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, InternVL)."""
    model_type = model.config.model_type
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"PVC supports {', '.join(SUPPORTED_MODEL_TYPES)}, not {model_type!r}")
    if model_type == "internvl":
        tower = model.model.vision_tower
        return VisionSeams(tower, tower.encoder.layer, ("layernorm_before", "layernorm_after"), model.model, "multi_modal_projector", _internvl_units)
    tower = model.model.visual
    return VisionSeams(tower, tower.blocks, ("norm1", "norm2"), tower, "merger", _qwen_units)


def vision_tower(model: PreTrainedModel) -> nn.Module:
    """The vision tower of a supported VLM."""
    return vision_seams(model).tower


def pvc_for_model(model: PreTrainedModel, layers: int | None = None, window: int | None = None) -> PVC:
    """An untrained PVC add-on sized for ``model`` (on its tower's device and dtype).

    ``layers`` defaults to 4, or the tower's depth when it has fewer blocks; ``window`` is the temporal
    attention's window in units (None: full causal, as in the paper; see ``PVCConfig``).
    """
    seams = vision_seams(model)
    block = seams.blocks[0]
    norm = getattr(block, seams.norms[0])
    text = model.config.get_text_config()
    config = PVCConfig(
        vision_width=norm.weight.shape[0],
        vision_heads=(block.attn if hasattr(block, "attn") else block.attention).num_heads,
        llm_width=text.hidden_size,
        llm_heads=text.num_attention_heads,
        layers=layers or min(DEFAULT_LAYERS, len(seams.blocks)),
        window=window,
    )
    return PVC(config).to(**seams.placement)


class PVCRun:
    """The state of PVC while attached: the current call's units and, when streaming, the carried keys/values."""

    def __init__(self, pvc: PVC, seams: VisionSeams, stream: bool):
        self.pvc = pvc
        self.seams = seams
        self.stream = stream
        self.attached = False
        self.units_seen = 0
        self.past: list[TemporalKV | None] = [None] * pvc.config.layers
        self.entries: list[tuple[int, int, int, int | None]] = []  # (first token, first unit, units, tokens per unit)
        self.modulation: list[torch.Tensor] = []  # per layer, AdaLN (shift, scale) per unit [U, 2, 2, C]

    def start_call(self, tower: nn.Module, args: tuple, kwargs: dict) -> None:
        """Tower pre-hook: the units of this call and each layer's AdaLN modulation from their relative time."""
        videos = self.seams.call_units(args, kwargs)
        if self.stream and len(videos) != 1:
            raise ValueError(f"streaming PVC encodes one video per call, got {len(videos)} in one tower call")
        self.entries, times, token, unit = [], [], 0, 0
        for t, n in videos:
            self.entries.append((token, unit, t, n))
            start = self.units_seen if self.stream else 0
            times.append(torch.arange(start, start + t))
            token, unit = token + t * (n or 0), unit + t
        if self.stream:
            self.units_seen += videos[0][0]
        time_embedding = self.pvc.time_embedding(torch.cat(times).to(self.pvc.compressor.gate.device))
        self.modulation = [modulation(time_embedding) for modulation in self.pvc.modulation]

    def modulate_norm(self, layer: int, index: int, out: torch.Tensor) -> torch.Tensor:
        """Norm forward hook: modulate normalisation ``index`` (0: before attention, 1: before the MLP)."""
        shift, scale = self.modulation[layer][:, index].to(out.dtype).unbind(1)
        return self._join(out, [modulate(x, shift[unit : unit + t, None], scale[unit : unit + t, None]) for x, unit, t in self._units(out)])

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
            parts.append(x + update)
        return self._join(out, parts)

    def _units(self, hidden: torch.Tensor) -> Iterator[tuple[torch.Tensor, int, int]]:
        """Each video of the call as ([t, n, C] view of ``hidden``, its first unit, t).

        ``hidden`` is [S, C] (Qwen-VL: units one after the other) or [T, n, C] (InternVL: a unit per row).
        """
        if hidden.dim() == 3:
            (_, unit, t, _), = self.entries
            yield hidden, unit, t
            return
        for token, unit, t, n in self.entries:
            yield hidden[token : token + t * n].view(t, n, -1), unit, t

    @staticmethod
    def _join(hidden: torch.Tensor, parts: list[torch.Tensor]) -> torch.Tensor:
        """The [t, n, C] ``parts`` in the layout of ``hidden``."""
        if hidden.dim() == 3:
            return parts[0]
        return torch.cat([part.flatten(0, 1) for part in parts])


@contextmanager
def attach_pvc(model: PreTrainedModel, pvc: PVC, *, stream: bool = True) -> Iterator[PVCRun]:
    """Attach ``pvc`` to the last ``pvc.config.layers`` blocks of ``model``'s vision tower while in the context."""
    seams = vision_seams(model)
    blocks = seams.blocks
    layers = pvc.config.layers
    if layers > len(blocks):
        raise ValueError(f"PVC has {layers} layers but the vision tower has only {len(blocks)} blocks")
    run = PVCRun(pvc, seams, stream)
    handles = [seams.tower.register_forward_pre_hook(run.start_call, with_kwargs=True)]
    for layer, block in enumerate(blocks[len(blocks) - layers :]):
        for index, name in enumerate(seams.norms):
            norm = getattr(block, name)
            handles.append(norm.register_forward_hook(lambda _m, _a, out, layer=layer, index=index: run.modulate_norm(layer, index, out)))
        handles.append(block.register_forward_hook(lambda _m, _a, out, layer=layer: run.add_temporal(layer, out)))
    projector = seams.projector
    if pvc.merger is not None:
        setattr(seams.projector_owner, seams.projector_name, pvc.merger)
    run.attached = True
    try:
        yield run
    finally:
        run.attached = False
        setattr(seams.projector_owner, seams.projector_name, projector)
        for handle in handles:
            handle.remove()
