"""Uniform selection: keep k of n items evenly spaced."""

from __future__ import annotations

import torch


def uniform_indices(total: int, num_keep: int) -> torch.Tensor:
    """Indices [min(num_keep, total)] of ``num_keep`` evenly spaced items out of ``total``, sorted.

    Each kept index is the centre of one of ``num_keep`` equal bins, so the first and last bins are
    treated alike: ``floor((2i + 1) * total / (2 * num_keep))`` for i in 0..num_keep-1, in integers.
    """
    if total <= 0 or num_keep <= 0:
        raise ValueError(f"total and num_keep must be positive, got total={total}, num_keep={num_keep}")
    if num_keep >= total:
        return torch.arange(total)
    return (2 * torch.arange(num_keep) + 1) * total // (2 * num_keep)
