"""The InternVL adapter on the stock transformers classes (InternVL3 / InternVL3.5 ``-hf`` checkpoints).

InternVL (https://arxiv.org/abs/2504.10479) reads a video as a list of images, one 448 x 448 tile per frame,
each encoded by InternViT, pixel-shuffled (x 0.5) and projected to 256 LLM tokens. The HF processor writes
the video as ``"Frame1: <img><IMG_CONTEXT> x 256</img>\\nFrame2: ..."`` (transformers 5.17 and 5.23 alike)
and passes the frames to the model as ``pixel_values``, the same input as images.

Seams: the inner model's ``get_image_features`` encodes a slice of frames; the LLM forward takes
``inputs_embeds`` (see :class:`~vidpress.adapters.framewise.FramewiseAdapter`); positions are the
stock 1-D ``0 .. L-1``, gathered for the kept tokens.
"""

from __future__ import annotations

import torch
from transformers import BatchFeature

from vidpress.adapters.framewise import FramewiseAdapter

FRAME_LABEL = "Frame{}: "  # the text the processor writes before each frame's image tokens


class InternVLAdapter(FramewiseAdapter):
    """InternVL: each frame is ``Frame{i}: <img>`` + its tokens + ``</img>``, frames separated by a newline.

    A frame's own tokens (its ``unit_spans`` row) are its label, image start and end tokens and visual tokens,
    and for every frame but the first the newline before its label; they go when the frame keeps no token.
    A dropped frame's label is not renumbered: the kept frames keep their labels and their positions.
    """

    model_types = ("internvl",)

    @property
    def video_token_id(self) -> int:
        return self.model.config.image_token_id

    @property
    def frame_grid(self) -> tuple[int, int]:
        """The patch grid scaled by the pixel shuffle's ``downsample_ratio`` (32 x 32 -> 16 x 16)."""
        config = self.model.config
        vision = config.vision_config
        sizes = zip(vision.image_size, vision.patch_size)
        return tuple(int(size // patch * config.downsample_ratio) for size, patch in sizes)

    def frame_pixels(self, inputs: BatchFeature) -> torch.Tensor:
        return inputs["pixel_values"]

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.inner.get_image_features(pixels).pooler_output

    def unit_spans(self, input_ids: torch.Tensor, video_index: torch.Tensor) -> torch.Tensor:
        """[T, 2] from the end of the previous frame (the first: from its label) to the frame's end token."""
        ends = video_index[:, -1] + 2
        if not bool((input_ids[ends - 1] == self.processor.end_image_token_id).all()):
            raise ValueError("every frame's visual tokens must be followed by the image end token")
        first = self._label_start(input_ids, int(video_index[0, 0]) - 1, FRAME_LABEL.format(1))
        starts = torch.cat([torch.tensor([first]), ends[:-1]])
        return torch.stack([starts, ends], dim=1)

    def question_start(self, input_ids: torch.Tensor, video_index: torch.Tensor) -> int:
        """After the last frame's image end token."""
        return int(video_index[-1, -1]) + 2

    def _label_start(self, input_ids: torch.Tensor, image_start: int, label: str) -> int:
        """Index of the first token of ``label`` written right before ``image_start`` (itself if none is found)."""
        decode = self.processor.tokenizer.decode
        start = image_start
        while start > 0 and label.endswith(decode(input_ids[start - 1 : image_start])):
            start -= 1
        return start
