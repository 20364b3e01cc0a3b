"""Adapters for Qwen2-VL, Qwen2.5-VL and Qwen3-VL on the stock transformers classes.

Seams used (stable from transformers 5.17 to 5.23):
- the inner model's ``get_video_features`` runs the vision tower on a slice of temporal units; during the LLM
  forward it is replaced, on the instance only, by one that returns the kept (possibly pruned) features, so
  the stock forward scatters them into the placeholders and feeds Qwen3-VL's deepstack layers;
- the inner model's ``get_rope_index`` gives the M-RoPE positions of the full prompt, of which the kept
  columns are gathered: positions are never re-derived here.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from transformers import BatchFeature
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures
from transformers.video_utils import VideoMetadata

from vidpress.adapters.base import EncodedVideo, LLMInputs, VideoAdapter, model_inputs
from vidpress.adapters.streamed_processing import PixelStream
from vidpress.video import Video

CHUNK_PATCHES = 73_728
"""Patches per vision-encoder call by default: 256 frames of 448x252 for Qwen2.5-VL. Bounds the encoder's
activation memory; on an H200 256-frame calls took 2.47 s for 1024 frames against 2.72 s in 64-frame calls."""


def _units_per_call(height: int, width: int) -> int:
    """Temporal units of ``height`` x ``width`` patches in one encoder call by default (:data:`CHUNK_PATCHES`)."""
    return max(1, CHUNK_PATCHES // max(1, height * width))


class QwenVLAdapter(VideoAdapter):
    """Qwen2-VL and Qwen2.5-VL: one block of video tokens, T' = frames / 2 temporal units of H' x W' tokens."""

    model_types = ("qwen2_vl", "qwen2_5_vl")
    position_axes = 3
    streams_pixels = True

    @property
    def video_token_id(self) -> int:
        return self.model.config.video_token_id

    @property
    def temporal_patch_size(self) -> int:
        return self.processor.video_processor.temporal_patch_size

    @property
    def merge_size(self) -> int:
        return self.inner.visual.spatial_merge_size

    def prepare(self, video: Video, question: str) -> BatchFeature:
        text = self.chat_text(question)
        height, width = video.frames.shape[1:3]
        metadata = VideoMetadata(
            total_num_frames=int(video.metadata.get("num_frames", len(video))),
            fps=float(video.fps),
            duration=float(video.duration),
            frames_indices=[int(i) for i in video.frame_indices],
            width=width,
            height=height,
        )
        inputs = self.run_processor(text, video, video_metadata=[metadata], do_sample_frames=False)
        inputs["timestamps"] = self._unit_timestamps(torch.as_tensor(video.timestamps, dtype=torch.float64))
        return inputs

    def _unit_timestamps(self, frame_times: torch.Tensor) -> torch.Tensor:
        """[T'] centre time of each temporal unit (the last frame repeats to fill the last unit)."""
        patch = self.temporal_patch_size
        pad = (-len(frame_times)) % patch
        padded = torch.cat([frame_times, frame_times[-1:].expand(pad)])
        units = padded.view(-1, patch)
        return (units[:, 0] + units[:, -1]) / 2

    def default_stream_frames(self, video: Video) -> int:
        """Frames per streamed preprocessing chunk: about :data:`CHUNK_PATCHES` patches of ``video``'s frames."""
        patch = self.processor.video_processor.patch_size
        height, width = video.frames.shape[1:3]
        return _units_per_call(height // patch, width // patch) * self.temporal_patch_size

    # -- vision ------------------------------------------------------------------------------------------
    def _vision_chunks(self, inputs: BatchFeature, chunk_frames: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (pixel rows, grid [1, 3]) of consecutive slices of ``chunk_frames`` frames (default: as many
        temporal units as :data:`CHUNK_PATCHES` patches); a :class:`PixelStream`'s own chunks as they come."""
        (t, h, w), = inputs["video_grid_thw"].tolist()
        pixels = inputs["pixel_values_videos"]
        if isinstance(pixels, PixelStream):
            for rows in pixels:
                yield rows, torch.tensor([[len(rows) // (h * w), h, w]])
            return
        units = max(1, chunk_frames // self.temporal_patch_size) if chunk_frames else _units_per_call(h, w)
        for start in range(0, t, units):
            stop = min(t, start + units)
            grid = torch.tensor([[stop - start, h, w]], device=pixels.device)
            yield pixels[start * h * w : stop * h * w], grid

    def video_units(self, inputs: BatchFeature) -> int:
        return int(inputs["video_grid_thw"][:, 0].sum())

    def encode(self, inputs: BatchFeature, chunk_frames: int | None = None, progress: Callable[[int], None] | None = None) -> EncodedVideo:
        (t, h, w), = inputs["video_grid_thw"].tolist()
        grid = (t, h // self.merge_size, w // self.merge_size)
        features, deepstack = [], []
        for pixels, chunk_grid in self._vision_chunks(inputs, chunk_frames):
            out = self.inner.get_video_features(pixels.to(self.device), chunk_grid.to(self.device))
            features.append(torch.cat(out.pooler_output))
            deepstack.append([self._deepstack_tensor(d) for d in getattr(out, "deepstack_features", None) or []])
            if progress is not None:
                progress(sum(len(f) for f in features) // (grid[1] * grid[2]) * self.temporal_patch_size)
        features = torch.cat(features).view(t, grid[1] * grid[2], -1)
        deepstack = [torch.cat(layer).view(t, grid[1] * grid[2], -1) for layer in zip(*deepstack)]
        input_ids = inputs["input_ids"]
        video_index = (input_ids[0] == self.video_token_id).nonzero().squeeze(1)
        if video_index.numel() != features.shape[0] * features.shape[1]:
            raise ValueError(f"prompt has {video_index.numel()} video tokens but the encoder gave {tuple(features.shape[:2])}")
        video_index = video_index.view(t, -1)
        return EncodedVideo(
            inputs=inputs,
            features=features,
            deepstack=deepstack,
            grid=grid,
            timestamps=inputs["timestamps"],
            positions=self.full_positions(inputs)[:, 0],
            video_token_index=video_index,
            unit_spans=self._unit_spans(input_ids[0], video_index),
            question_start=self._question_start(input_ids[0], video_index),
        )

    def _deepstack_tensor(self, feature: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        return feature

    def full_positions(self, inputs: BatchFeature) -> torch.Tensor:
        """[3, 1, L] position ids of the full prompt from the model's own ``get_rope_index``."""
        kwargs = {k: v for k, v in model_inputs(inputs).items() if k not in ("input_ids", "pixel_values_videos", "pixel_values")}
        positions, _ = self.inner.get_rope_index(inputs["input_ids"], **kwargs)
        return positions

    def _unit_spans(self, input_ids: torch.Tensor, video_index: torch.Tensor) -> torch.Tensor:
        """[T', 2] each unit's own tokens: only its visual tokens for Qwen2/2.5-VL."""
        return torch.stack([video_index[:, 0], video_index[:, -1] + 1], dim=1)

    def _question_start(self, input_ids: torch.Tensor, video_index: torch.Tensor) -> int:
        """Index of the first token after the video block (after its closing vision-end tokens)."""
        end_id = self.model.config.vision_end_token_id
        position = int(video_index[-1, -1]) + 1
        while position < len(input_ids) and int(input_ids[position]) == end_id:
            position += 1
        return position

    # -- LLM ----------------------------------------------------------------------------------------------
    @contextmanager
    def _precomputed_video(self, inputs: LLMInputs) -> Iterator[None]:
        """Make the stock forward use ``inputs``' visual embeddings instead of running the vision tower."""
        output = self._features_output(inputs)
        self.inner.get_video_features = lambda *args, **kwargs: output
        try:
            yield
        finally:
            del self.inner.get_video_features

    def _features_output(self, inputs: LLMInputs) -> BaseModelOutputWithPooling:
        return BaseModelOutputWithPooling(pooler_output=(inputs.video_embeds,))

    def forward(self, inputs: LLMInputs, cache: Cache, *, logits_to_keep: int = 1) -> torch.Tensor:
        device = self.device
        past = cache.get_seq_length()
        kwargs = dict(
            input_ids=inputs.input_ids.to(device),
            position_ids=inputs.positions.to(device),
            attention_mask=torch.ones(1, past + len(inputs), dtype=torch.long, device=device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=logits_to_keep,
        )
        if inputs.video_embeds.shape[0] == 0:
            return self.model(**kwargs).logits
        with self._precomputed_video(inputs):
            return self.model(**kwargs, pixel_values_videos=inputs.video_embeds).logits


class Qwen3VLAdapter(QwenVLAdapter):
    """Qwen3-VL: one timestamp block per temporal unit, and deepstack features injected in early layers."""

    model_types = ("qwen3_vl",)
    # transformers 5.17 returns each deepstack feature as one tensor, later versions split it per video
    # like pooler_output; the format seen while encoding is given back in the forward.
    deepstack_split = True

    def _deepstack_tensor(self, feature: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        self.deepstack_split = not isinstance(feature, torch.Tensor)
        return torch.cat(feature) if self.deepstack_split else feature

    def _unit_spans(self, input_ids: torch.Tensor, video_index: torch.Tensor) -> torch.Tensor:
        """[T', 2] each unit's ``<t seconds><vision_start> tokens <vision_end>`` block."""
        config = self.model.config
        boundaries = {config.vision_start_token_id, config.vision_end_token_id}
        spans = []
        for unit_index in video_index:
            start = int(unit_index[0]) - 1  # the unit's vision-start token
            while start > 0 and int(input_ids[start - 1]) not in boundaries:
                start -= 1  # its timestamp text
            spans.append((start, int(unit_index[-1]) + 2))
        return torch.tensor(spans)

    def _features_output(self, inputs: LLMInputs) -> BaseModelOutputWithPooling:
        return BaseModelOutputWithDeepstackFeatures(
            pooler_output=(inputs.video_embeds,),
            deepstack_features=[(d,) if self.deepstack_split else d for d in inputs.deepstack],
        )
