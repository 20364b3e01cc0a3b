"""A V-NIAH-style grid: needle questions over every (video length, needle depth) cell."""

from __future__ import annotations

from collections.abc import Sequence

from vidpress.synth.sample import SynthSample, make_sample


def needle_grid(
    lengths: Sequence[int],
    depths: Sequence[float],
    seed: int,
    *,
    per_cell: int = 1,
    height: int = 112,
    width: int = 112,
    fps: float = 2.0,
) -> list[SynthSample]:
    """``per_cell`` needle samples for each length x depth cell, ordered length-major.

    Sample j of every cell uses seed ``seed + j``: the same needle and the same haystack (a shorter video is a
    prefix of a longer one), so cells differ only in length and depth. Raise ``per_cell`` to average over objects.
    """
    return [
        make_sample("needle", length, depth=depth, seed=seed + j, height=height, width=width, fps=fps)
        for length in lengths
        for depth in depths
        for j in range(per_cell)
    ]
