"""Helpers shared by the tests."""

from __future__ import annotations

import numpy as np


def random_frames(num_frames: int, height: int = 56, width: int = 84, seed: int = 0) -> np.ndarray:
    """uint8 [T, H, W, 3] frames of blocky random content (varied enough that visual tokens differ)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (num_frames, height // 8, width // 8, 3), dtype=np.uint8)
    return base.repeat(8, axis=1).repeat(8, axis=2)
