"""The LLaVA-OneVision adapter on the stock transformers classes (a frame-wise adapter, 1-D positions).

LLaVA-OneVision (https://arxiv.org/abs/2408.03326) encodes each video frame with SigLIP, projects the patch
tokens and pools them 2 x 2 (bilinear, 27 x 27 -> 14 x 14 = 196 tokens for the released checkpoints); one
learned ``image_newline`` token follows the last frame of the video.

Seams used (transformers 5.17 to 5.23):
- encoding: the inner model's ``get_video_features`` on a slice of frames. In 5.17 it returns the pooled frame
  tokens and the model's forward appends the newline token; in 5.23 it appends the newline itself. Both are
  read here: the newline is dropped from each chunk's output, so ``features`` [T, 196, D] holds the frame
  tokens exactly as the LLM sees them (the pooled 14 x 14 grid, not SigLIP's 27 x 27 patches).
- the LLM forward: ``inputs_embeds`` (see vidpress/adapters/framewise.py), the newline embedding included as
  the last visual row, so it does not depend on where the newline is added.
"""

from __future__ import annotations

import math

import torch
from transformers import BatchFeature

from vidpress.adapters.base import EncodedVideo
from vidpress.adapters.framewise import FramewiseAdapter


class LlavaOnevisionAdapter(FramewiseAdapter):
    """LLaVA-OneVision: pooled SigLIP tokens per frame, then one ``image_newline`` token after the video.

    The newline is a visual placeholder that belongs to no frame: it is always kept, and it is the last row
    of :attr:`LLMInputs.video_embeds` (so ``LLMInputs.is_video`` counts one more token than ``video_keep``).
    """

    model_types = ("llava_onevision",)
    placeholders_after_frames = 1

    @property
    def video_token_id(self) -> int:
        return self.model.config.video_token_id

    @property
    def frame_grid(self) -> tuple[int, int]:
        """The pooled grid: ``ceil(side / 2)`` squared for a ``side`` x ``side`` patch grid (27 -> 14)."""
        vision = self.model.config.vision_config
        pooled = math.ceil(vision.image_size // vision.patch_size / 2)
        return pooled, pooled

    def frame_pixels(self, inputs: BatchFeature) -> torch.Tensor:
        return inputs["pixel_values_videos"][0]

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.inner.get_video_features(pixels.unsqueeze(0)).pooler_output[0]
        frames, tokens = len(pixels), self.frame_grid[0] * self.frame_grid[1]
        if len(features) == frames * tokens + 1:  # transformers 5.23 appends the newline here, 5.17 does not
            features = features[:-1]
        return features.view(frames, tokens, -1)

    def unit_spans(self, input_ids: torch.Tensor, video_index: torch.Tensor) -> torch.Tensor:
        """[T, 2] each frame's pooled tokens (the newline after the video belongs to no frame)."""
        return torch.stack([video_index[:, 0], video_index[:, -1] + 1], dim=1)

    def question_start(self, input_ids: torch.Tensor, video_index: torch.Tensor) -> int:
        """After the newline token that follows the last frame."""
        newline = int(video_index[-1, -1]) + 1
        if int(input_ids[newline]) != self.video_token_id:
            raise ValueError("the prompt has no newline placeholder after the video's last frame")
        return newline + 1

    def video_embeds(self, encoded: EncodedVideo, video_keep: torch.Tensor) -> torch.Tensor:
        """The kept frame tokens, then the newline embedding [1, D]."""
        frames = super().video_embeds(encoded, video_keep)
        newline = self.inner.image_newline.detach().to(frames.device, frames.dtype)
        return torch.cat([frames, newline[None]])
