"""What every model adapter provides: encoded videos, LLM inputs for a kept subset, and forward passes.

An adapter hides what differs between VLM families (how frames become tokens, where the video sits in the
prompt, how positions are computed, which module is the decoder). The pipeline and the presses only use
the interface below.
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import BatchFeature, PreTrainedModel, ProcessorMixin
from transformers.cache_utils import Cache, DynamicCache

from vidpress.adapters.streamed_processing import stream_processor
from vidpress.video import Video


VIDPRESS_KEYS = ("timestamps",)  # what ``VideoAdapter.prepare`` adds to the processor's output


def model_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``inputs`` without vidpress's own keys: what the stock model's ``forward`` and ``generate`` take."""
    return {key: value for key, value in inputs.items() if key not in VIDPRESS_KEYS}


@dataclass
class EncodedVideo:
    """A video in the prompt, with its visual tokens computed.

    Attributes
    ----------
    inputs : the processor's output for the whole prompt (``input_ids`` [1, L], ``mm_token_type_ids``, grids...).
    features : [T', N, D] projected visual tokens, one row per temporal unit (T' = frames / temporal patch).
    deepstack : per deepstack layer a [T', N, D] tensor (Qwen3-VL); empty for other families.
    grid : (T', H', W') the LLM token grid of the video (N = H' * W').
    timestamps : [T'] seconds, the centre of each temporal unit.
    positions : [P, L] the model's own position ids of the full prompt (P = 3 for M-RoPE, 1 for 1-D).
    video_token_index : [T', N] index in ``input_ids`` of each visual token.
    unit_spans : [T', 2] start and end (exclusive) in ``input_ids`` of the tokens that belong to each
        temporal unit only (its visual tokens, plus per-frame text such as Qwen3-VL's timestamp block):
        they are dropped with the unit when none of its visual tokens is kept.
    """

    inputs: BatchFeature
    features: torch.Tensor
    deepstack: list[torch.Tensor]
    grid: tuple[int, int, int]
    timestamps: torch.Tensor
    positions: torch.Tensor
    video_token_index: torch.Tensor
    unit_spans: torch.Tensor
    question_start: int = 0
    extras: dict = field(default_factory=dict)

    @property
    def num_units(self) -> int:
        return self.features.shape[0]

    @property
    def tokens_per_unit(self) -> int:
        return self.features.shape[1]

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]


@dataclass
class LLMInputs:
    """The LLM's input for a kept subset of the visual tokens (batch size 1).

    Attributes
    ----------
    input_ids : [1, L'] token ids, visual placeholders included.
    positions : [P, 1, L'] position ids gathered from the full prompt's positions.
    video_embeds : [V, D] the kept visual tokens, in the order of their placeholders.
    deepstack : per deepstack layer [V, D] (Qwen3-VL), else empty.
    source_index : [L'] index of each kept token in the full prompt.
    video_keep : [T', N] bool, which visual tokens are kept.
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    video_embeds: torch.Tensor
    deepstack: list[torch.Tensor]
    source_index: torch.Tensor
    video_keep: torch.Tensor
    video_token_id: int

    def __len__(self) -> int:
        return self.input_ids.shape[1]

    @property
    def is_video(self) -> torch.Tensor:
        """[L'] bool, which tokens are visual placeholders."""
        return self.input_ids[0] == self.video_token_id

    def slice(self, start: int, end: int) -> LLMInputs:
        """The tokens ``start:end``, with the visual embeddings that belong to them."""
        is_video = self.is_video
        first = int(is_video[:start].sum())
        last = first + int(is_video[start:end].sum())
        return LLMInputs(
            input_ids=self.input_ids[:, start:end],
            positions=self.positions[..., start:end],
            video_embeds=self.video_embeds[first:last],
            deepstack=[d[first:last] for d in self.deepstack],
            source_index=self.source_index[start:end],
            video_keep=self.video_keep,
            video_token_id=self.video_token_id,
        )


class VideoAdapter(ABC):
    """Base class of the model adapters. Subclasses set ``model_types`` and implement the abstract methods."""

    model_types: tuple[str, ...] = ()
    position_axes: int = 1
    streams_pixels: bool = False  # whether ``encode`` reads a PixelStream (see ``run_processor``)

    def __init__(self, model: PreTrainedModel, processor: ProcessorMixin):
        self.model = model
        self.processor = processor
        self.preprocess_device: torch.device | None = None  # where the processor resizes and normalises (None: CPU)
        # frames per chunk of a streamed preprocessing (adapters with ``streams_pixels``; None: the whole video at once)
        self.stream_frames: int | None = None
        # where streamed chunks are processed when the processor resizes nothing (the same values as on the CPU)
        self.exact_preprocess_device: torch.device | None = None

    # -- what the presses and the pipeline read ---------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def temporal_patch_size(self) -> int:
        """Frames per temporal unit of the visual tokens (2 for Qwen-VL, 1 for frame-wise models)."""
        return 1

    @property
    def text_config(self):
        return self.model.config.get_text_config()

    @property
    def inner(self) -> nn.Module:
        """The transformers ``*Model`` inside the ``*ForConditionalGeneration`` (vision tower and LLM)."""
        return self.model.model

    @property
    def decoder_layers(self) -> nn.ModuleList:
        """The LLM's decoder layers, in order (hooks of the layer and kv stages attach here)."""
        return self.inner.language_model.layers

    @property
    def eos_token_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.processor.tokenizer.eos_token_id
        return set(eos if isinstance(eos, list) else [eos])

    def layer_qk(
        self, layer_index: int, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotated query [B, H, L, D] and key [B, H_kv, L, D] that decoder layer ``layer_index`` computes.

        ``hidden_states`` [B, L, C] and ``position_embeddings`` (cos, sin) are the attention module's own
        inputs (as a forward pre-hook on ``self_attn`` sees them). Works for the Llama-style attention of
        every supported LLM (optional q/k norms, as in Qwen3), with the rotation of the layer's own module.
        """
        attention = self.decoder_layers[layer_index].self_attn
        shape = (*hidden_states.shape[:-1], -1, attention.head_dim)
        query = attention.q_proj(hidden_states).view(shape)
        key = attention.k_proj(hidden_states).view(shape)
        if hasattr(attention, "q_norm"):
            query, key = attention.q_norm(query), attention.k_norm(key)
        apply_rotary = sys.modules[type(attention).__module__].apply_rotary_pos_emb
        cos, sin = position_embeddings
        return apply_rotary(query.transpose(1, 2), key.transpose(1, 2), cos, sin)

    def new_cache(self) -> Cache:
        """An empty KV cache for one prompt; presses may prune its per-layer entries."""
        return DynamicCache(config=self.model.config)

    def text_inputs(self, token_ids: list[int], first_position: int) -> LLMInputs:
        """LLM inputs for plain text tokens at positions ``first_position``, ``first_position + 1``, ..."""
        positions = torch.arange(first_position, first_position + len(token_ids))
        return LLMInputs(
            input_ids=torch.tensor([token_ids]),
            positions=positions.view(1, 1, -1).expand(self.position_axes, 1, -1),
            video_embeds=torch.zeros(0, self.text_config.hidden_size),
            deepstack=[],
            source_index=torch.full((len(token_ids),), -1),
            video_keep=torch.zeros(0, 0, dtype=torch.bool),
            video_token_id=-1,
        )

    # -- the stages ------------------------------------------------------------------------------------
    @abstractmethod
    def prepare(self, video: Video, question: str) -> BatchFeature:
        """The model's own processor and chat template on one user turn holding the video then the question."""

    def chat_text(self, question: str) -> str:
        """The chat template's text of one user turn holding the video then ``question``, generation prompt included."""
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def reuse_prompt(self, inputs: BatchFeature, asked: str, question: str) -> BatchFeature | None:
        """``inputs`` (``prepare(video, asked)``) with ``question`` in place of ``asked``, frames not processed again.

        Two prompts on one video differ only after the video (the processor expands nothing else), so the new
        prompt is the old one up to where the two chat texts' tokens part, then the new tokens. Returns None
        when the old prompt does not end with the old text's own tokens (then run ``prepare`` instead).
        """
        ids = inputs["input_ids"]  # first: a streamed prompt is still being tokenized (not two tokenizer calls at once)
        old, new = (self.processor.tokenizer(self.chat_text(q))["input_ids"] for q in (asked, question))
        common = len(os.path.commonprefix([old, new]))
        cut = ids.shape[1] - (len(old) - common)
        if ids[0, cut:].tolist() != old[common:]:
            return None
        reused = BatchFeature(dict(inputs))
        reused["input_ids"] = torch.cat([ids[:, :cut], torch.tensor([new[common:]], dtype=ids.dtype)], dim=1)
        reused["attention_mask"] = torch.ones_like(reused["input_ids"])
        if "mm_token_type_ids" in inputs:  # text tokens are type 0
            types = inputs["mm_token_type_ids"][:, :cut]
            reused["mm_token_type_ids"] = torch.cat([types, types.new_zeros(1, len(new) - common)], dim=1)
        return reused

    def run_processor(self, text: str, video: Video, **kwargs) -> BatchFeature:
        """The model's processor on one prompt and its video, frames given as one [T, H, W, C] array.

        With ``preprocess_device`` set, the video processor resizes and normalises there (its ``device``
        argument; pixel values come back on that device). Pixel values are cast to the model's dtype, as the
        vision tower casts them first thing: the same values, half the memory in bf16. With ``stream_frames``
        set on an adapter that ``streams_pixels``, they come as a
        :class:`~vidpress.adapters.streamed_processing.PixelStream` of chunks processed by worker threads
        while the encoder runs (the same values; the whole video at once where that cannot be shown), on
        ``exact_preprocess_device`` when the processor resizes nothing.
        """
        if self.preprocess_device is not None:
            kwargs["device"] = str(self.preprocess_device)
        if self.streams_pixels and self.stream_frames:
            streamed = stream_processor(
                self.processor, text, video.frames, self.stream_frames, self.model.dtype,
                exact_device=self.exact_preprocess_device, **kwargs,
            )
            if streamed is not None:
                return streamed
        inputs = self.processor(text=[text], videos=[video.frames], return_tensors="pt", **kwargs)
        for key in ("pixel_values_videos", "pixel_values"):
            if key in inputs and inputs[key].is_floating_point():
                inputs[key] = inputs[key].to(self.model.dtype)
        return inputs

    @abstractmethod
    def encode(self, inputs: BatchFeature, chunk_frames: int | None = None, progress=None) -> EncodedVideo:
        """Visual tokens of the prompt's video, encoded ``chunk_frames`` frames at a time.

        ``progress``, when given, is called with the number of frames encoded so far. Gradients flow when
        autograd is on (PVC training encodes the whole video in one chunk); ``VideoQA`` calls it under no_grad.
        """

    @abstractmethod
    def video_units(self, inputs: BatchFeature) -> int:
        """T', the temporal units of the prompt's video (frames / ``temporal_patch_size``)."""

    @property
    @abstractmethod
    def video_token_id(self) -> int:
        """The placeholder id that the visual tokens occupy in ``input_ids``."""

    def build_inputs(self, encoded: EncodedVideo, video_keep: torch.Tensor | None = None) -> LLMInputs:
        """LLM inputs keeping the visual tokens where ``video_keep`` [T', N] is True (all if None).

        A unit none of whose visual tokens is kept loses its own tokens too (``encoded.unit_spans``); text is
        always kept; positions are the full prompt's, gathered.
        """
        units, per_unit = encoded.features.shape[:2]
        if video_keep is None:
            video_keep = torch.ones(units, per_unit, dtype=torch.bool)
        video_keep = video_keep.to(torch.bool).cpu()
        if video_keep.shape != (units, per_unit):
            raise ValueError(f"video_keep must be [{units}, {per_unit}], got {tuple(video_keep.shape)}")
        keep = torch.ones(encoded.input_ids.shape[1], dtype=torch.bool)
        for unit in (~video_keep.any(1)).nonzero().squeeze(1).tolist():
            start, end = encoded.unit_spans[unit].tolist()
            keep[start:end] = False
        keep[encoded.video_token_index.flatten()] = video_keep.flatten()
        source_index = keep.nonzero().squeeze(1)
        flat_keep = video_keep.flatten().to(encoded.features.device)
        return LLMInputs(
            input_ids=encoded.input_ids[:, source_index],
            positions=encoded.positions[:, source_index].unsqueeze(1),
            video_embeds=self.video_embeds(encoded, video_keep),
            deepstack=[d.flatten(0, 1)[flat_keep] for d in encoded.deepstack],
            source_index=source_index,
            video_keep=video_keep,
            video_token_id=self.video_token_id,
        )

    def video_embeds(self, encoded: EncodedVideo, video_keep: torch.Tensor) -> torch.Tensor:
        """[V, D] the embeddings of the kept visual placeholders, in prompt order."""
        return encoded.features.flatten(0, 1)[video_keep.flatten().to(encoded.features.device)]

    @abstractmethod
    def forward(self, inputs: LLMInputs, cache: Cache, *, logits_to_keep: int = 1) -> torch.Tensor:
        """Run the LLM on ``inputs`` after what ``cache`` holds; returns logits [1, logits_to_keep, vocab]."""
