"""XComp LP-Comp: progressive dropping of video hidden states inside the LLM decoder (layer stage).

XComp, "One Token per Highly Selective Frame", https://arxiv.org/abs/2604.14149 (ALGORITHMS.md §4).

The video span of the LLM input is viewed as frames of ``N1`` consecutive visual tokens. Right before
decoder layer ``j`` every frame keeps ``schedule[j]`` of its tokens (its LAST ones by default), down to one
token per frame at the last layers; text tokens are never dropped. The stock decoder runs unchanged: a
forward pre-hook on each decoder layer gathers the kept rows of ``hidden_states`` and slices the layer's
``position_embeddings`` (cos, sin), ``position_ids`` and attention mask to them, so each layer's KV cache
holds only the tokens that layer saw (``vidpress_sdpa`` gives every layer a causal mask of its own length).

Positions (M-RoPE): every kept token keeps its own 3-D position from the model's ``get_rope_index``; the
caches get shorter but no position is renumbered, and decoded tokens continue after the prompt's last
position as without the press. Cached greedy decoding therefore equals recomputing the whole sequence with
the press active and no cache. (The reference renumbers positions contiguously after each drop; that form
belongs to 1-D RoPE models such as VideoChat-Flash and is not offered for the M-RoPE families supported.)

Qwen3-VL deepstack features are added to the visual rows after the first decoder layers by the text
model's ``_deepstack_process``; while the press is active that method is wrapped on the instance so that
only the rows still present (and their features) are used. This is the same on transformers 5.17 and 5.23.

Each forward call finds where it starts in the sequence from layer 0's KV length (layer 0 never drops), so
the press works with chunked prefill and several prefill segments, but not beside a kv-stage press that
evicts layer 0's entries. Training forwards (no cache) start at 0: see :mod:`vidpress.train`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Iterator

import torch
from torch import Tensor

from vidpress.functional.lpcomp import lpcomp_drop_layers, lpcomp_keep_indices, lpcomp_schedule
from vidpress.presses.base import Press, PressContext

if TYPE_CHECKING:
    from vidpress.adapters import VideoAdapter

ROUNDINGS = ("round", "ceil")
KEEP_MODES = ("suffix", "uniform")


@dataclass
class LPCompPress(Press):
    """XComp LP-Comp: before decoder layer ``j`` each frame of the video keeps ``schedule[j]`` tokens.

    Parameters
    ----------
    tokens_per_frame : ``N1``, visual tokens per LP-Comp frame: the video's (token-stage kept) visual tokens,
        in sequence order, are cut by count into frames of that many, so the video must keep a multiple of it
        (XComp: 16). A temporal unit keeping a multiple of ``N1`` holds whole frames (on Qwen-VL a unit of
        ``H' x W'`` tokens with ``H' * W'`` a multiple of 16 is split into groups of 16); a clip of ``F`` units
        merged by :class:`~vidpress.presses.tome.ToMePress` keeps ``N1 * F`` tokens, unevenly over its units,
        and holds ``F`` frames cut by count over the clip, as VideoChat-Flash reshapes a merged clip. Units
        that all keep the same number of tokens must each keep a multiple of ``N1`` (no frame spans them). None:
        one frame per temporal unit, ``N1`` = the tokens each unit keeps (all units must keep the same number).
    schedule : ``"round"`` (released code, default), ``"ceil"`` (the paper's formula), see
        :func:`vidpress.functional.lpcomp.lpcomp_schedule`; or an explicit non-increasing tuple with one
        tokens-per-frame value per decoder layer, starting at ``N1``.
    keep : ``"suffix"`` keeps the last tokens of each frame (default); ``"uniform"`` evenly spaced ones
        (the paper's ablation), see :func:`vidpress.functional.lpcomp.lpcomp_keep_indices`.
    """

    tokens_per_frame: int | None = 16
    schedule: tuple[int, ...] | str = "round"
    keep: str = "suffix"
    stages: ClassVar[tuple[str, ...]] = ("layer",)

    def __post_init__(self) -> None:
        if self.tokens_per_frame is not None and (isinstance(self.tokens_per_frame, bool) or self.tokens_per_frame < 1):
            raise ValueError(f"tokens_per_frame must be >= 1 or None, got {self.tokens_per_frame!r}")
        if isinstance(self.schedule, str):
            if self.schedule not in ROUNDINGS:
                raise ValueError(f"schedule must be one of {ROUNDINGS} or a tuple of ints, got {self.schedule!r}")
        else:
            self.schedule = tuple(int(v) for v in self.schedule)
            lpcomp_drop_layers(self.schedule)  # raises on an empty, non-positive or increasing schedule
        if self.keep not in KEEP_MODES:
            raise ValueError(f"keep must be one of {KEEP_MODES}, got {self.keep!r}")

    # -- the plan ----------------------------------------------------------------------------------------
    def frame_size(self, unit_counts: Tensor) -> int:
        """``N1`` for temporal units keeping ``unit_counts`` [T'] visual tokens each (units keeping none are ignored)."""
        counts = sorted({int(c) for c in unit_counts.tolist() if c > 0})
        if self.tokens_per_frame is None:
            if len(counts) > 1:
                raise ValueError(f"tokens_per_frame=None needs every temporal unit to keep as many tokens, got {counts}")
            return counts[0] if counts else 1
        total = int(unit_counts.sum())
        if total % self.tokens_per_frame or (len(counts) == 1 and counts[0] % self.tokens_per_frame):
            raise ValueError(
                f"temporal units keep {counts} visual tokens, {total} in all: not a multiple of "
                f"tokens_per_frame={self.tokens_per_frame} (each unit when kept evenly, all of them when merged "
                "unevenly): merge them first (ToMe press) or use tokens_per_frame=None (one frame per temporal unit)"
            )
        return self.tokens_per_frame

    def layer_schedule(self, frame_size: int, num_layers: int) -> list[int]:
        """[num_layers] tokens per frame seen by each decoder layer."""
        if isinstance(self.schedule, str):
            return lpcomp_schedule(frame_size, num_layers, rounding=self.schedule)
        if len(self.schedule) != num_layers or self.schedule[0] != frame_size:
            raise ValueError(
                f"an explicit schedule needs {num_layers} entries starting at the frame size {frame_size}, got {self.schedule}"
            )
        return list(self.schedule)

    def layer_keep(self, length: int, frame_tokens: Tensor, unit_counts: Tensor, num_layers: int) -> Tensor:
        """Which tokens of a sequence each decoder layer sees.

        Parameters
        ----------
        length : ``L``, tokens in the sequence.
        frame_tokens : [V] sorted indices in the sequence of the visual tokens that belong to frames, frame
            after frame (visual placeholders of no frame, such as LLaVA-OneVision's newline, count as text).
        unit_counts : [T'] visual tokens of each temporal unit.
        num_layers : decoder layers.

        Returns
        -------
        Tensor
            [num_layers, L] bool; row ``j`` marks the tokens decoder layer ``j`` sees (text always; row 0 all).
        """
        video = frame_tokens.cpu().long()
        keep = torch.ones(num_layers, length, dtype=torch.bool)
        if len(video) == 0:
            return keep
        size = self.frame_size(unit_counts)
        if len(video) % size:
            raise ValueError(f"{len(video)} visual tokens do not split into frames of {size}")
        schedule = self.layer_schedule(size, num_layers)
        kept = video
        for layer in range(1, num_layers):
            if schedule[layer] < schedule[layer - 1]:
                kept = kept[lpcomp_keep_indices(len(video) // size, schedule[layer - 1], schedule[layer], self.keep)]
            keep[layer, video] = False
            keep[layer, kept] = True
        return keep

    # -- the stage ---------------------------------------------------------------------------------------
    def plan(self, context: PressContext) -> Tensor:
        """[num_layers, L] :meth:`layer_keep` of the pipeline's LLM inputs (``context.inputs``)."""
        encoded, inputs = context.encoded, context.inputs
        frame_tokens = torch.searchsorted(inputs.source_index, encoded.video_token_index[inputs.video_keep])
        return self.layer_keep(len(inputs), frame_tokens, inputs.video_keep.sum(1), len(context.adapter.decoder_layers))

    def prefill_hooks(self, context: PressContext):
        keep = self.plan(context)
        context.stats["lpcomp_tokens_per_layer"] = keep.sum(1).tolist()
        return drop_hidden_states(context.adapter, keep)


@dataclass
class _Segment:
    """Per layer, for one forward call: indices into its tokens seen by the layer (None: all), indices into
    the previous layer's output kept by the layer (None: no drop), the layer's key columns in the stock mask
    (None: all)."""

    rows: list[Tensor | None]
    gather: list[Tensor | None]
    columns: list[Tensor | None]


class _DropHooks:
    """Pre-hooks on the decoder layers dropping hidden states by a [num_layers, L] keep mask.

    A forward call may cover any span of the sequence (one prefill, prefill segments, a recomputation):
    its first token's index is the KV length of layer 0 (which never drops) or 0 without a cache. Tokens
    past the mask's length are kept everywhere.
    """

    def __init__(self, keep: Tensor):
        self.keep = keep
        self.segment: _Segment | None = None
        self.layer = self.offset = self.length = 0

    def kept(self, layer: int, start: int, end: int) -> Tensor:
        """Indices in ``[start, end)`` of the sequence that ``layer`` sees."""
        length = self.keep.shape[1]
        inside = self.keep[layer, start:min(end, length)].nonzero().squeeze(1) + start
        return torch.cat([inside, torch.arange(max(start, length), max(end, length))])

    def plan(self, offset: int, length: int, device: torch.device) -> _Segment:
        rows, gather, columns = [], [], []
        previous = torch.arange(length)
        for layer in range(self.keep.shape[0]):
            kept = self.kept(layer, offset, offset + length) - offset
            past = self.kept(layer, 0, offset)
            rows.append(None if len(kept) == length else kept.to(device))
            gather.append(None if len(kept) == len(previous) else torch.searchsorted(previous, kept).to(device))
            full = len(kept) + len(past) == offset + length
            columns.append(None if full else torch.cat([past, kept + offset]).to(device))
            previous = kept
        return _Segment(rows, gather, columns)

    def pre_hook(self, layer: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs.pop("hidden_states")
            if layer == 0:
                cache = kwargs.get("past_key_values")
                self.offset = cache.get_seq_length(0) if cache is not None else 0
                self.length = hidden.shape[1]
                self.segment = self.plan(self.offset, self.length, hidden.device)
            self.layer = layer
            rows, gather, columns = (part[layer] for part in (self.segment.rows, self.segment.gather, self.segment.columns))
            if gather is not None:
                hidden = hidden.index_select(1, gather)
            if rows is not None:
                kwargs["position_embeddings"] = tuple(t.index_select(-2, rows) for t in kwargs["position_embeddings"])
                if isinstance(kwargs.get("position_ids"), Tensor):
                    kwargs["position_ids"] = kwargs["position_ids"].index_select(-1, rows)
            mask = kwargs.get("attention_mask")
            if isinstance(mask, Tensor) and columns is not None and mask.shape[-1] == self.offset + self.length:
                kwargs["attention_mask"] = _slice_mask(mask, rows, columns)
            return (hidden, *args[1:]), kwargs

        return hook

    def deepstack(self, original):
        """Wrap Qwen3-VL's ``_deepstack_process`` to add features to the visual rows still present only."""

        def process(hidden_states: Tensor, visual_pos_masks: Tensor, visual_embeds: Tensor) -> Tensor:
            rows = self.segment.rows[self.layer] if self.segment is not None else None
            if rows is not None:
                masks = visual_pos_masks.to(rows.device)
                rank = masks.flatten().cumsum(0).view_as(masks) - 1
                visual_pos_masks = masks.index_select(-1, rows)
                visual_embeds = visual_embeds[rank.index_select(-1, rows)[visual_pos_masks].to(visual_embeds.device)]
            return original(hidden_states, visual_pos_masks, visual_embeds)

        return process


def _slice_mask(mask: Tensor, rows: Tensor | None, columns: Tensor) -> Tensor:
    """The stock mask ([B, 1, q, k] or [B, k], keys in layer 0's space) restricted to a layer's rows and keys."""
    if mask.ndim == 4 and rows is not None:
        mask = mask.index_select(-2, rows)
    return mask.index_select(-1, columns)


@contextmanager
def drop_hidden_states(adapter: VideoAdapter, keep: Tensor) -> Iterator[_DropHooks]:
    """While active, decoder layer ``j`` of ``adapter``'s model sees only the tokens where ``keep[j]`` is True.

    ``keep`` [num_layers, L] bool (row 0 all True, each row a subset of the previous one) indexes the whole
    sequence the cache is filled with from its start; works in cached prefill, in forwards without a cache
    (training, recomputation) and with gradient checkpointing. Yields the hooks object.
    """
    layers = adapter.decoder_layers
    if keep.shape[0] != len(layers) or not bool(keep[0].all()):
        raise ValueError(f"keep must be [{len(layers)}, L] with row 0 all True, got {tuple(keep.shape)}")
    hooks = _DropHooks(keep.cpu())
    handles = [layer.register_forward_pre_hook(hooks.pre_hook(j), with_kwargs=True) for j, layer in enumerate(layers)]
    text_model = getattr(getattr(adapter, "inner", None), "language_model", None)
    wrap = text_model is not None and hasattr(text_model, "_deepstack_process")
    if wrap:
        text_model._deepstack_process = hooks.deepstack(text_model._deepstack_process)
    try:
        yield hooks
    finally:
        for handle in handles:
            handle.remove()
        if wrap:
            del text_model._deepstack_process
