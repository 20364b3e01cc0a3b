"""XComp QC-Comp as a token-stage press: keep the frames the question attends to most, scored window by window.

XComp, "One Token per Highly Selective Frame", https://arxiv.org/abs/2604.14149 (ALGORITHMS.md §5). The pieces
are the functional cores of :mod:`vidpress.functional.qccomp`; this press runs the LLM to feed them.

How a video is scored (the released code's procedure, with the choices made for Qwen-VL):

1. Frames are temporal units on Qwen-VL (2 video frames each): every length below is given in video frames
   and divided by the unit size (clips of 8 frames = 4 units, windows of 64 frames = 32 units, stride 32
   frames = 16 units, chunks of 512 frames = 256 units). A unit's score is its clip's score.
2. Chunks: :func:`qccomp_chunks` cuts the units into shifted, wrap-around chunks of ``score_chunk_frames``
   plus a margin of ``2 * (segment_frames - stride_frames)`` frames, so that every unit is scored
   ``n_repeat`` times. Each chunk is one prompt ``[text before the video] + [the chunk's units, in chunk
   order] + [the text after the video up to the assistant turn]`` at fresh contiguous positions
   ``0 .. len-1`` on every M-RoPE axis (the reference feeds each chunk as a short video of its own to a 1-D
   RoPE model; the same positions for every chunk and window are what removes the position bias, so the
   model's own 3-D video positions are not used for scoring). It runs (causally, SDPA) through the decoder
   layers up to the last scored one: a private exception raised from the forward pre-hook of that layer's
   attention stops it. One forward per chunk serves all its windows: the windows do not rerun the layers
   before the scored one, exactly as in the released code.
3. Windows: in each scored layer, the layer's own attention input (hidden states of the whole chunk) is cut
   into the sequences ``[text before] + [window units] + [text after]`` of the windows of
   :func:`qccomp_windows`, each at positions ``0 .. len-1``, as the released code re-runs the layer on them.
   The question rows' attention to the window's visual tokens comes from the layer's own rotated Q and K
   (:meth:`VideoAdapter.layer_qk`; SDPA stays on for the forward and no attention matrix is
   materialised) with the softmax over all keys of the window sequence
   (:func:`qccomp_clip_scores` with ``full_key``). A clip's score is the mean over heads, question rows and
   its visual tokens; per chunk it is averaged over the windows covering it, and clips covered by fewer
   windows than the most covered ones (the chunk's edges, i.e. its margin) are ignored in that chunk.
4. Per layer, a unit's score is the mean over the chunks that scored it; the scores of the layers
   ``layers[0] <= l < layers[1]`` are summed. The top ``n_select`` frames are kept, re-sorted in time
   (:func:`qccomp_select`), as whole units: the final pass answers on them at their own positions.

Question span: the rows from ``encoded.question_start`` (the first token after the video) to the start of
the assistant turn, i.e. the question and the end of the user turn; the reference skips a 27-token time
message of VideoChat-Flash's prompt, which the Qwen-VL prompts do not have.

Attention mask: the released code gets its attention maps from an eager fallback called without a mask, so
the question rows see every key of the window sequence, later question tokens included: ``causal=False``
(default). ``causal=True`` uses the causal attention the model runs with.

Options beyond the reference: ``local=False`` is the paper's global ablation, here one pass over the whole
video (every unit in one window). ``min_frames`` makes the reference's silent switch explicit (it scores
only videos of 1024 frames or more; 0 here). A unit scored by no full-coverage clip (the edges of a video
shorter than one chunk, which the reference never meets) gets the mean of its under-covered scores. Layer
ranges refer to a model of ``layers_depth`` decoder layers (28 in XComp) and are rescaled to the model's
depth; ``layers_depth=None`` takes them as absolute layer indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from vidpress.adapters import LLMInputs
from vidpress.functional.qccomp import qccomp_chunks, qccomp_clip_scores, qccomp_select, qccomp_windows
from vidpress.presses.base import Press, PressContext

if TYPE_CHECKING:
    from vidpress.adapters import EncodedVideo, VideoAdapter

ASSISTANT_TURN_TOKEN = "<|im_start|>"


class _ScoringDone(Exception):
    """Raised from the last scored layer to stop the scoring forward."""


@dataclass
class QCCompScores:
    """What QC-Comp measured on the temporal units it could keep.

    Attributes
    ----------
    units : [U] index in the encoded video of each scored temporal unit (those the presses before kept).
    layers : the decoder layers whose scores are summed.
    per_layer : [len(layers), U] float32 mean question-to-unit attention per layer.
    counts : [U] chunks in which the unit's clip had full window coverage (``n_repeat`` in the chunked
        local mode; 0 where only under-covered scores exist).
    """

    units: Tensor
    layers: list[int]
    per_layer: Tensor
    counts: Tensor

    @property
    def total(self) -> Tensor:
        """[U] the units' scores: the sum over the scored layers."""
        return self.per_layer.sum(0)


@dataclass
class _Prompt:
    """The kept prompt cut into pieces, in ``base`` row indices: the text before the video, each unit's own
    tokens ``units[u]`` = [start, end) with its visual tokens ``runs[u]``, the text after the video up to the
    assistant turn ``suffix``, of which the question rows are ``question``."""

    base: LLMInputs
    units: Tensor
    runs: Tensor
    suffix: tuple[int, int]
    question: tuple[int, int]


@dataclass
class _Window:
    """A window's sequence: its ``rows`` [Lw] in the chunk, each unit's visual tokens ``runs`` [n, 2] and the
    question rows, both in window rows."""

    rows: Tensor
    runs: Tensor
    question: tuple[int, int]


@dataclass
class _Chunk:
    """A chunk's prompt and where its pieces lie in it (row indices of ``inputs``)."""

    inputs: LLMInputs
    prefix: int
    unit_starts: Tensor
    unit_ends: Tensor
    runs: Tensor
    suffix_start: int
    question: tuple[int, int]

    def window(self, first: int, last: int) -> _Window:
        """The sequence of chunk units ``first .. last - 1``: text before the video, the units, text after."""
        start, end = int(self.unit_starts[first]), int(self.unit_ends[last - 1])
        after = torch.arange(self.suffix_start, len(self.inputs))
        rows = torch.cat([torch.arange(self.prefix), torch.arange(start, end), after])
        question = self.question[0] - self.suffix_start + self.prefix + end - start
        runs = self.runs[first:last] - start + self.prefix
        return _Window(rows, runs, (question, question + self.question[1] - self.question[0]))


@dataclass
class QCCompPress(Press):
    """XComp QC-Comp: keep the ``n_select`` frames with the most question-to-frame attention, window by window.

    Parameters
    ----------
    n_select : video frames kept (XComp: 256 / 512 / 1024 / 2048 by benchmark), rounded up to whole temporal
        units; all are kept when the video has fewer (scores are still computed and recorded).
    segment_frames, stride_frames : window length and stride in frames (64 and 32: 8 clips, stride 4 clips).
    clip_frames : frames per clip, the unit of scoring (8); a multiple of the model's temporal unit.
    layers : decoder layers ``[start, end)`` whose scores are summed, 0-based (6..23 of 28).
    layers_depth : the depth ``layers`` refers to (28); other depths rescale it to
        ``[round(start * L / depth), round(end * L / depth))`` with at least one layer. None: absolute.
    n_repeat : how often each frame is scored by the wrap-around chunks (2).
    score_chunk_frames : frames per scoring chunk, before the window margin (512). (Not ``chunk_frames``:
        that name asks the pipeline for a chunked final prefill.)
    min_frames : below this many frames, selection is off and everything is kept (the reference: 1024).
    local : window-local scores (True, XComp); False scores the whole video in one window (global ablation).
    causal : causal question-to-video attention; False (default) lets the question rows see every key of
        the window sequence, as the released code's unmasked attention maps do.
    """

    n_select: int = 256
    segment_frames: int = 64
    stride_frames: int = 32
    clip_frames: int = 8
    layers: tuple[int, int] = (6, 24)
    layers_depth: int | None = 28
    n_repeat: int = 2
    score_chunk_frames: int = 512
    min_frames: int = 0
    local: bool = True
    causal: bool = False
    stages: ClassVar[tuple[str, ...]] = ("token",)

    def __post_init__(self) -> None:
        for name in ("n_select", "segment_frames", "stride_frames", "clip_frames", "n_repeat", "score_chunk_frames"):
            _check_int(name, getattr(self, name), 1)
        _check_int("min_frames", self.min_frames, 0)
        if self.segment_frames % self.clip_frames or self.stride_frames % self.clip_frames:
            raise ValueError(f"segment_frames and stride_frames must be multiples of clip_frames={self.clip_frames}")
        if self.stride_frames > self.segment_frames:
            raise ValueError(f"stride_frames={self.stride_frames} must not exceed segment_frames={self.segment_frames}")
        self.layers = tuple(self.layers)
        if len(self.layers) != 2:
            raise ValueError(f"layers must be (start, end), got {self.layers}")
        if _check_int("layers[0]", self.layers[0], 0) >= _check_int("layers[1]", self.layers[1], 1):
            raise ValueError(f"layers must be (start, end) with 0 <= start < end, got {self.layers}")
        if self.layers_depth is not None and _check_int("layers_depth", self.layers_depth, 1) < self.layers[1]:
            raise ValueError(f"layers {self.layers} do not fit in layers_depth={self.layers_depth}")

    # -- the stage ---------------------------------------------------------------------------------------
    def select_tokens(self, encoded: EncodedVideo, keep: Tensor, context: PressContext) -> Tensor:
        patch = context.adapter.temporal_patch_size
        frames = int(keep.any(1).sum()) * patch
        if frames < self.min_frames:
            context.stats["qccomp"] = {"selection": f"off: {frames} frames < min_frames={self.min_frames}"}
            return keep
        scores = self.score_units(encoded, keep, context.adapter)
        chosen = scores.units[qccomp_select(scores.total, -(-self.n_select // patch))]
        new_keep = torch.zeros_like(keep)
        new_keep[chosen] = keep[chosen]
        context.stats["qccomp"] = {
            "selection": "on",
            "layers": scores.layers,
            "units": scores.units.tolist(),
            "unit_scores": scores.total.tolist(),
            "kept_units": chosen.tolist(),
            "kept_seconds": encoded.timestamps[chosen].tolist(),
        }
        return new_keep

    # -- scoring -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def score_units(self, encoded: EncodedVideo, keep: Tensor, adapter: VideoAdapter) -> QCCompScores:
        """Score the temporal units that ``keep`` [T', N] keeps (see the module docstring)."""
        units = keep.any(1).nonzero().squeeze(1)
        clip, window, stride, chunk, margin = self._unit_lengths(adapter.temporal_patch_size)
        layers = self.layer_range(len(adapter.decoder_layers))
        prompt = _cut_prompt(encoded, keep, adapter)
        if self.local:
            chunks = qccomp_chunks(len(units), chunk, margin, self.n_repeat)
        else:
            chunks = [torch.arange(len(units))]
        valid_sum, valid_count = torch.zeros(len(layers), len(units)), torch.zeros(len(units))
        any_sum, any_count = torch.zeros(len(layers), len(units)), torch.zeros(len(units))
        for order in chunks:
            if self.local:
                windows = qccomp_windows(len(order), clip, window // clip, stride // clip)
            else:
                windows = [(0, len(order))]
            clip_scores, coverage = self._score_chunk(adapter, _build_chunk(prompt, order), windows, layers, clip)
            of_unit = torch.arange(len(order)) // clip
            unit_scores = (clip_scores / coverage)[:, of_unit]
            full = (coverage == coverage.max())[of_unit]
            any_sum[:, order] += unit_scores
            any_count[order] += 1
            valid_sum[:, order[full]] += unit_scores[:, full]
            valid_count[order[full]] += 1
        per_layer = torch.where(valid_count > 0, valid_sum / valid_count.clamp(min=1), any_sum / any_count)
        return QCCompScores(units=units, layers=list(layers), per_layer=per_layer, counts=valid_count.long())

    def layer_range(self, num_layers: int) -> range:
        """The scored decoder layers of a model with ``num_layers`` layers."""
        start, end = self.layers
        if self.layers_depth is not None and num_layers != self.layers_depth:
            start, end = round(start * num_layers / self.layers_depth), round(end * num_layers / self.layers_depth)
        end = min(max(end, 1), num_layers)
        return range(min(start, end - 1), end)

    def _unit_lengths(self, patch: int) -> tuple[int, int, int, int, int]:
        """Clip, window, stride, chunk and margin lengths in temporal units of ``patch`` frames."""
        if self.clip_frames % patch:
            raise ValueError(f"clip_frames={self.clip_frames} is not a multiple of the {patch}-frame temporal unit")
        chunk = self.score_chunk_frames // patch
        if chunk < 1 or chunk % self.n_repeat:
            raise ValueError(
                f"score_chunk_frames={self.score_chunk_frames} must hold a multiple of n_repeat={self.n_repeat} "
                f"temporal units of {patch} frames"
            )
        window, stride = self.segment_frames // patch, self.stride_frames // patch
        return self.clip_frames // patch, window, stride, chunk, 2 * (window - stride)

    def _score_chunk(
        self, adapter: VideoAdapter, chunk: _Chunk, bounds: list[tuple[int, int]], layers: range, clip: int
    ) -> tuple[Tensor, Tensor]:
        """Run ``chunk`` to the last scored layer and score its windows ``bounds`` (chunk units [first, last)).

        Returns per-layer sums over windows of the clip scores [len(layers), C] and the windows covering
        each clip [C].
        """
        clips = [slice(first // clip, -(-last // clip)) for first, last in bounds]
        sums = torch.zeros(len(layers), -(-len(chunk.runs) // clip))
        coverage = torch.zeros(sums.shape[1])
        for covered in clips:
            coverage[covered] += 1
        windows = [chunk.window(first, last) for first, last in bounds]

        def hook(index: int, layer: int):
            def pre_hook(module, args, kwargs):
                hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
                for (first, _), covered, window in zip(bounds, clips, windows):
                    scores = self._window_scores(adapter, layer, hidden, kwargs["position_embeddings"], window)
                    sums[index, covered] += _clip_means(scores, window.runs, first, clip)
                if index == len(layers) - 1:
                    raise _ScoringDone

            return pre_hook

        layer_modules = [adapter.decoder_layers[layer].self_attn for layer in layers]
        handles = [
            module.register_forward_pre_hook(hook(index, layer), with_kwargs=True)
            for index, (layer, module) in enumerate(zip(layers, layer_modules))
        ]
        try:
            adapter.forward(chunk.inputs, adapter.new_cache())
        except _ScoringDone:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return sums, coverage

    def _window_scores(
        self,
        adapter: VideoAdapter,
        layer: int,
        hidden: Tensor,
        position_embeddings: tuple[Tensor, Tensor],
        window: _Window,
    ) -> Tensor:
        """[n] mean attention of the question rows to each unit's visual tokens in one window.

        ``hidden`` [1, L, C] is the layer's attention input on the chunk at positions 0 .. L-1, whose
        ``position_embeddings`` (cos, sin) the window takes the first Lw of: its positions are 0 .. Lw-1.
        """
        length = len(window.rows)
        cos, sin = position_embeddings
        query, key = adapter.layer_qk(
            layer, hidden.index_select(1, window.rows.to(hidden.device)), (cos[..., :length, :], sin[..., :length, :])
        )
        start, end = window.question
        return qccomp_clip_scores(
            query[:, :, start:end],
            None,
            window.runs.tolist(),
            scaling=adapter.decoder_layers[layer].self_attn.scaling,
            full_key=key,
            video_offset=0,
            query_offset=start,
            causal=self.causal,
        )


def _clip_means(unit_scores: Tensor, runs: Tensor, first: int, clip: int) -> Tensor:
    """Per clip touched by a window of units ``first ..``, the mean over its visual tokens, from each unit's mean
    ``unit_scores`` [n] over its visual tokens ``runs`` [n, 2]."""
    tokens = (runs[:, 1] - runs[:, 0]).float()
    clips = (torch.arange(len(unit_scores)) + first) // clip - first // clip
    total = torch.zeros(int(clips[-1]) + 1).index_add_(0, clips, unit_scores.cpu() * tokens)
    return total / torch.zeros_like(total).index_add_(0, clips, tokens)


def question_span(encoded: EncodedVideo, adapter: VideoAdapter) -> tuple[int, int]:
    """[start, end) in the prompt of the question rows: after the video, up to the assistant turn's start."""
    start, ids = encoded.question_start, encoded.input_ids[0]
    turn = adapter.processor.tokenizer.convert_tokens_to_ids(ASSISTANT_TURN_TOKEN)
    after = (ids[start:] == turn).nonzero() if isinstance(turn, int) else []
    return start, start + int(after[-1]) if len(after) else len(ids)


def _cut_prompt(encoded: EncodedVideo, keep: Tensor, adapter: VideoAdapter) -> _Prompt:
    """The prompt of the kept tokens, cut into the pieces chunks are made of."""
    base = adapter.build_inputs(encoded, keep)
    units = keep.any(1).nonzero().squeeze(1)

    def row(prompt_index: Tensor) -> Tensor:
        return torch.searchsorted(base.source_index, prompt_index)

    spans = row(encoded.unit_spans[units])
    first_visual = torch.stack([encoded.video_token_index[u][keep[u]][0] for u in units.tolist()])
    runs = torch.stack([row(first_visual), row(first_visual) + keep[units].sum(1)], dim=1)
    question = row(torch.tensor(question_span(encoded, adapter))).tolist()
    return _Prompt(base=base, units=spans, runs=runs, suffix=(int(spans[-1, 1]), question[1]), question=tuple(question))


def _build_chunk(prompt: _Prompt, order: Tensor) -> _Chunk:
    """The prompt of the units ``order`` (indices into ``prompt.units``), in that order, at positions 0 .. len-1."""
    spans = prompt.units[order]
    lengths = spans[:, 1] - spans[:, 0]
    prefix = int(prompt.units[0, 0])
    rows = torch.cat([torch.arange(prefix), *[torch.arange(int(a), int(b)) for a, b in spans.tolist()],
                      torch.arange(*prompt.suffix)])
    ends = prefix + lengths.cumsum(0)
    starts = ends - lengths
    runs = prompt.runs[order] - spans[:, :1] + starts[:, None]
    suffix_start = int(ends[-1])
    offset = suffix_start - prompt.suffix[0]
    question = (prompt.question[0] + offset, prompt.question[1] + offset)
    return _Chunk(_gather(prompt.base, rows), prefix, starts, ends, runs, suffix_start, question)


def _gather(inputs: LLMInputs, rows: Tensor) -> LLMInputs:
    """The tokens ``rows`` of ``inputs`` (any order) with their visual embeddings, at positions 0 .. len-1."""
    is_video = inputs.is_video
    embed_rows = (is_video.cumsum(0) - 1)[rows][is_video[rows]]
    positions = torch.arange(len(rows)).view(1, 1, -1).expand(inputs.positions.shape[0], 1, -1)
    return LLMInputs(
        input_ids=inputs.input_ids[:, rows],
        positions=positions,
        video_embeds=inputs.video_embeds[embed_rows.to(inputs.video_embeds.device)],
        deepstack=[d[embed_rows.to(d.device)] for d in inputs.deepstack],
        source_index=inputs.source_index[rows],
        video_keep=inputs.video_keep,
        video_token_id=inputs.video_token_id,
    )


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value
