"""The SCT objective: next-token cross-entropy on the answer tokens, with LP-Comp active in the forward."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidpress.adapters import VideoAdapter, model_inputs
from vidpress.presses.lpcomp import LPCompPress, drop_hidden_states
from vidpress.train.encode import IGNORE, TrainSample


@contextmanager
def compressed(adapter: VideoAdapter, sample: TrainSample, press: LPCompPress | None) -> Iterator[Tensor | None]:
    """While active, the model's forwards on ``sample`` drop hidden states as ``press`` does at inference.

    Yields the [L] bool mask of the tokens whose hidden states reach the LM head (None without a press).
    Run the backward pass inside too: with gradient checkpointing, transformers 5.17 recomputes the
    decoder layers, hooks included, during the backward pass.
    """
    if press is None:
        yield None
        return
    frame_tokens = sample.is_video.nonzero().squeeze(1)
    keep = press.layer_keep(len(sample.labels), frame_tokens, sample.unit_counts, len(adapter.decoder_layers))
    with drop_hidden_states(adapter, keep):
        yield keep[-1]


def answer_loss(model: nn.Module, sample: TrainSample, final_keep: Tensor | None) -> tuple[Tensor, int]:
    """Summed cross-entropy over the answer tokens of ``sample`` and their number.

    ``model`` is the ``*ForConditionalGeneration`` model (possibly wrapped by PEFT or DDP); ``final_keep``
    [L] marks the tokens left after the last decoder layer. Logits are computed only at the kept positions
    that predict an answer token (never a visual one: answers are text, which LP-Comp never drops).
    """
    device = next(model.parameters()).device
    targets = torch.cat([sample.labels[1:], sample.labels.new_full((1,), IGNORE)])
    if final_keep is not None:
        targets = targets[final_keep]
    rows = (targets != IGNORE).nonzero().squeeze(1)
    inputs = {key: value.to(device) for key, value in model_inputs(sample.inputs).items()}
    logits = model(**inputs, use_cache=False, logits_to_keep=rows.to(device)).logits[0]
    loss = F.cross_entropy(logits.float(), targets[rows].to(device), reduction="sum")
    return loss, len(rows)
