"""Frame-wise adapters: families that encode frame by frame (temporal unit = 1 frame) with 1-D positions.

- the LLM forward: ``inputs_embeds``. The stock forward embeds ``input_ids`` and scatters the visual tokens
  into the placeholders before calling the language model; :meth:`FramewiseAdapter.forward` does exactly that
  with the kept tokens, so it does not depend on where a family adds its extra tokens.
- positions: the stock LLM numbers the prompt 0 .. L-1 (1-D RoPE), so the full prompt's positions are
  ``arange(L)`` and kept tokens keep their original index as position (gaps where tokens were dropped);
  decoding continues at the largest kept position + 1.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Callable

import torch
from transformers import BatchFeature
from transformers.cache_utils import Cache

from vidpress.adapters.base import EncodedVideo, LLMInputs, VideoAdapter
from vidpress.video import Video


class FramewiseAdapter(VideoAdapter):
    """Base of the families that encode frame by frame (temporal unit = 1 frame) and use 1-D positions.

    ``features`` [T, N, D] are the LLM-input tokens of each frame on the grid the LLM sees (``frame_grid``),
    so token-stage presses (DPSelect's pivots, ToMe, QC-Comp) work on the tokens that are fed to the LLM.
    Subclasses give the frames' pixels, the encoder of a slice of frames, the placeholder id of the visual
    tokens, and which prompt tokens belong to each frame.
    """

    position_axes = 1
    default_chunk_frames = 64  # frames per encoder call when none is given
    placeholders_after_frames = 0  # visual placeholders after the last frame that belong to no frame

    def prepare(self, video: Video, question: str) -> BatchFeature:
        """The model's processor on the chat template; the frames are vidpress's (the processor samples none)."""
        text = self.chat_text(question)
        inputs = self.run_processor(text, video, do_sample_frames=False)
        inputs["timestamps"] = torch.as_tensor(video.timestamps, dtype=torch.float64)
        return inputs

    # -- vision ------------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def frame_grid(self) -> tuple[int, int]:
        """(H', W') the LLM tokens of one frame (N = H' * W')."""

    @abstractmethod
    def frame_pixels(self, inputs: BatchFeature) -> torch.Tensor:
        """[T, C, H, W] the processed frames of the prompt's video."""

    @abstractmethod
    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """[t, N, D] the LLM tokens of the frames ``pixels`` [t, C, H, W], as the stock forward computes them."""

    def video_units(self, inputs: BatchFeature) -> int:
        return len(self.frame_pixels(inputs))

    def encode(self, inputs: BatchFeature, chunk_frames: int | None = None, progress: Callable[[int], None] | None = None) -> EncodedVideo:
        chunk_frames = max(1, chunk_frames or self.default_chunk_frames)
        pixels = self.frame_pixels(inputs)
        features = []
        for start in range(0, len(pixels), chunk_frames):
            features.append(self.encode_frames(pixels[start : start + chunk_frames].to(self.device)))
            if progress is not None:
                progress(min(len(pixels), start + chunk_frames))
        features = torch.cat(features)
        input_ids = inputs["input_ids"][0]
        video_index = self.frame_token_index(input_ids, len(features))
        return EncodedVideo(
            inputs=inputs,
            features=features,
            deepstack=[],
            grid=(len(features), *self.frame_grid),
            timestamps=inputs["timestamps"],
            positions=self.full_positions(inputs)[:, 0],
            video_token_index=video_index,
            unit_spans=self.unit_spans(input_ids, video_index),
            question_start=self.question_start(input_ids, video_index),
        )

    def frame_token_index(self, input_ids: torch.Tensor, frames: int) -> torch.Tensor:
        """[T, N] index in ``input_ids`` [L] of each frame's visual tokens (the first T * N placeholders)."""
        tokens = self.frame_grid[0] * self.frame_grid[1]
        placeholders = (input_ids == self.video_token_id).nonzero().squeeze(1)
        if placeholders.numel() != frames * tokens + self.placeholders_after_frames:
            raise ValueError(
                f"prompt has {placeholders.numel()} visual placeholders but the encoder gave {frames} frames "
                f"x {tokens} tokens (+ {self.placeholders_after_frames} after the frames)"
            )
        return placeholders[: frames * tokens].view(frames, tokens)

    def full_positions(self, inputs: BatchFeature) -> torch.Tensor:
        """[1, 1, L] position ids of the full prompt: 0 .. L-1, as the stock LLM numbers them."""
        return torch.arange(inputs["input_ids"].shape[1]).view(1, 1, -1)

    @abstractmethod
    def unit_spans(self, input_ids: torch.Tensor, video_index: torch.Tensor) -> torch.Tensor:
        """[T, 2] start and end (exclusive) of the tokens that belong to each frame only."""

    @abstractmethod
    def question_start(self, input_ids: torch.Tensor, video_index: torch.Tensor) -> int:
        """Index of the first token after the video."""

    # -- LLM ----------------------------------------------------------------------------------------------
    def forward(self, inputs: LLMInputs, cache: Cache, *, logits_to_keep: int = 1) -> torch.Tensor:
        """The stock forward on ``inputs_embeds``: the token embeddings with the visual tokens scattered in."""
        device = self.device
        input_ids = inputs.input_ids.to(device)
        embeds = self.model.get_input_embeddings()(input_ids)
        if inputs.video_embeds.shape[0]:
            placeholders = (input_ids == inputs.video_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(placeholders, inputs.video_embeds.to(device, embeds.dtype))
        past = cache.get_seq_length()
        return self.model(
            inputs_embeds=embeds,
            position_ids=inputs.positions[0].to(device),
            attention_mask=torch.ones(1, past + len(inputs), dtype=torch.long, device=device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=logits_to_keep,
        ).logits
