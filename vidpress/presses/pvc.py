"""PVC: progressive visual token compression (Yang et al., CVPR 2025, https://arxiv.org/abs/2412.09613).

Encoder stage: causal temporal attention and AdaLN time modulation in the last L blocks of the vision tower
(``vidpress.pvc.attach``). Token stage: every temporal unit is compressed to ``tokens_per_frame`` tokens
placed in representative slots (the centre token of each pooled cell, ``vidpress.pvc.compressor``).
The add-on needs training (``vidpress.pvc.training``); untrained, it is exactly the stock tower followed by
adaptive average pooling, so an untrained press with ``tokens_per_frame`` >= N changes nothing at all.
Inference with a trained add-on: ``PVCPress(checkpoint="folder/from/save_pvc")``.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import torch
from transformers import PreTrainedModel

from vidpress.presses.base import Press, PressContext
from vidpress.pvc import PVC, attach_pvc, compress_encoded, load_pvc, pooling_grid, pvc_for_model

if TYPE_CHECKING:
    from vidpress.adapters import EncodedVideo


@dataclass
class PVCPress(Press):
    """Compress each temporal unit to ``tokens_per_frame`` tokens, with PVC's temporal modules in the tower.

    Parameters
    ----------
    tokens_per_frame : tokens per temporal unit the LLM sees (64 in the paper; on Qwen-VL a unit is 2 frames).
        Units with fewer tokens keep all of theirs.
    layers : L, the tower blocks that get PVC's modules; None takes the checkpoint's, or 4 (at most the
        tower's depth) for an untrained add-on. A checkpoint with another L is an error.
    checkpoint : folder written by ``save_pvc``; None builds an untrained (identity) add-on.
    window : temporal units each unit's temporal attention sees, itself included (not in the paper: a
        sliding window that bounds the state carried across encoding chunks to ``window - 1`` units on long
        videos). None takes the checkpoint's (full causal attention, as in the paper, unless it was trained
        with a window); a value overrides it (the weights do not depend on it).

    Units left with no token by an earlier press stay dropped; the others are compressed from all N tokens.
    """

    tokens_per_frame: int = 64
    layers: int | None = None
    checkpoint: str | None = None
    window: int | None = None
    stages: ClassVar[tuple[str, ...]] = ("encoder", "token")

    def __post_init__(self) -> None:
        if self.tokens_per_frame < 1:
            raise ValueError(f"tokens_per_frame must be >= 1, got {self.tokens_per_frame}")
        if self.layers is not None and self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        self._addons: weakref.WeakKeyDictionary[PreTrainedModel, PVC] = weakref.WeakKeyDictionary()

    def module(self, model: PreTrainedModel) -> PVC:
        """The add-on for ``model`` (loaded or built on first use, then kept)."""
        if model not in self._addons:
            if self.checkpoint is None:
                pvc = pvc_for_model(model, self.layers, self.window)
            else:
                pvc = load_pvc(self.checkpoint, model)
                if self.layers is not None and pvc.config.layers != self.layers:
                    raise ValueError(f"checkpoint {self.checkpoint} has {pvc.config.layers} layers, not {self.layers}")
                if self.window is not None:
                    pvc.config = replace(pvc.config, window=self.window)
            self._addons[model] = pvc.eval()
        return self._addons[model]

    def encoder_hooks(self, context: PressContext) -> contextlib.AbstractContextManager:
        model = context.adapter.model
        return attach_pvc(model, self.module(model), stream=True)

    def select_tokens(self, encoded: EncodedVideo, keep: torch.Tensor, context: PressContext) -> torch.Tensor:
        pvc = self.module(context.adapter.model)
        slots = compress_encoded(pvc.compressor, encoded, self.tokens_per_frame)
        context.stats["pvc"] = {
            "layers": pvc.config.layers,
            "pooled_grid": list(pooling_grid(*encoded.grid[1:], self.tokens_per_frame)),
            "tokens_per_unit": int(slots[0].sum()),
        }
        return slots & keep.any(1, keepdim=True)
