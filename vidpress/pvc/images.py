"""Images as static videos (PVC): one image repeated T_img times goes through the video path."""

from __future__ import annotations

import os
from typing import Any

from PIL import Image

from vidpress.video import Video, load_video

IMAGE_REPEATS = 4


def pvc_image_frames(image: Any, repeats: int = IMAGE_REPEATS, *, max_side: int | None = None) -> Video:
    """A static video of ``repeats`` copies of ``image`` (a path, a PIL image, or a uint8 array [H, W, 3]).

    The copies are 1 s apart. With PVC, each copy gets its own relative time, so the AdaLN modulation can
    make each look at the image differently. Cost on InternVL, whose every frame is a unit: 4 x
    ``tokens_per_frame`` tokens (4 x 64, as in the paper). On Qwen-VL, whose temporal unit is 2 frames,
    T_img = 4 frames are 2 units: 2 x ``tokens_per_frame`` tokens.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    return load_video([image] * repeats, source_fps=1.0, max_side=max_side)
