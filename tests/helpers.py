"""Helpers shared by the tests."""

from __future__ import annotations

import numpy as np


def random_frames(num_frames: int, height: int = 56, width: int = 84, seed: int = 0) -> np.ndarray:
    """uint8 [T, H, W, 3] frames of blocky random content (varied enough that visual tokens differ)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (num_frames, height // 8, width // 8, 3), dtype=np.uint8)
    return base.repeat(8, axis=1).repeat(8, axis=2)


def assert_chunked_prefill_equals_one_shot(adapter, encoded, question: str, chunk_frames: int = 4) -> None:
    """Prefilling ``encoded``'s prompt in video chunks gives the one-shot prefill's last logits."""
    import torch

    from vidpress.generation import prefill, segment_bounds
    from vidpress.presses import PressContext

    inputs = adapter.build_inputs(encoded)
    context = PressContext(adapter=adapter, question=question, encoded=encoded, inputs=inputs)
    logits = {}
    for chunk in (None, chunk_frames):
        segments = segment_bounds(encoded, inputs, chunk, adapter.temporal_patch_size, split_question=False)
        assert segments[0][0] == 0 and segments[-1][1] == len(inputs)
        logits[chunk] = prefill(adapter, inputs, adapter.new_cache(), segments, [], context)
    torch.testing.assert_close(logits[chunk_frames], logits[None], rtol=1e-4, atol=1e-5)
