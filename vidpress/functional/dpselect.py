"""DPSelect: keyframe / key-patch selection by peak temporal distance (ReTaKe).

ReTaKe, "Reducing Temporal and Knowledge Redundancy for Long Video Understanding",
arXiv:2412.20504 (https://arxiv.org/abs/2412.20504).

Pure, model-agnostic torch functions. All scoring is done in float32 whatever the
input dtype. Nothing here touches a model: the caller passes the projected
LLM-input visual embeddings of a video laid out as ``[T, N, C]`` (T frames, or
temporal patches for Qwen-VL, N tokens per frame, C channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DISTANCE_BLOCK_FRAMES = 256  # frames whose distances are computed together (float32 temporaries of that many)

__all__ = [
    "frame_distances",
    "window_peaks",
    "dpselect",
    "dpselect_num_keep",
]


def frame_distances(features: Tensor) -> Tensor:
    """Cosine distance of every token to the same token position one frame earlier.

    ``d[t, n] = 1 - cos(M[t-1, n], M[t, n])`` for ``t >= 1`` and ``d[0, n] = 1``
    (ReTaKe DPSelect, arXiv:2412.20504).

    Parameters
    ----------
    features : Tensor
        ``[T, N, C]`` per-frame visual features ``M`` (any floating dtype, T >= 1).

    Returns
    -------
    Tensor
        ``[T, N]`` float32 distances, in ``[0, 2]``.
    """
    if features.ndim != 3:
        raise ValueError(f"features must be [T, N, C], got shape {tuple(features.shape)}")
    num_frames, num_tokens, _ = features.shape
    if num_frames < 1:
        raise ValueError("features must contain at least one frame")
    out = torch.ones(num_frames, num_tokens, dtype=torch.float32, device=features.device)
    for start in range(1, num_frames, DISTANCE_BLOCK_FRAMES):  # float32 copies of a block at a time, not the video
        m = features[start - 1 : start + DISTANCE_BLOCK_FRAMES].float()
        out[start : start + len(m) - 1] = 1.0 - F.cosine_similarity(m[:-1], m[1:], dim=-1)
    return out


def window_peaks(scores: Tensor, window: int = 3) -> Tensor:
    """Local maxima along dim 0, with the tie rule of ``max_pool1d(return_indices=True)``.

    Position ``t`` is a peak iff it is the arg-max of the window
    ``[t - window//2, t + window//2]`` (stride 1, padding ``window//2``), where on
    ties the EARLIEST index of the window wins. Equivalently: ``scores[t]`` is
    strictly greater than every earlier in-window value and greater than or equal
    to every later in-window value. Padding positions never win (they behave as
    ``-inf``), so the first and last positions are compared only with real
    neighbours. With two equal neighbouring maxima only the first is a peak.

    Parameters
    ----------
    scores : Tensor
        ``[T]`` or ``[T, N]`` real scores; columns are treated independently.
    window : int, optional
        Odd window size >= 1 (default 3). ``window=1`` makes every position a peak.

    Returns
    -------
    Tensor
        Bool tensor of the same shape as ``scores``.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window}")
    if scores.ndim not in (1, 2):
        raise ValueError(f"scores must be [T] or [T, N], got shape {tuple(scores.shape)}")
    num = scores.shape[0]
    half = window // 2
    is_peak = torch.ones_like(scores, dtype=torch.bool)
    for off in range(1, min(half, num - 1) + 1):
        # Earlier neighbour at t - off (exists for t >= off): must be strictly smaller.
        is_peak[off:] &= scores[off:] > scores[:-off]
        # Later neighbour at t + off (exists for t < num - off): must not be larger.
        is_peak[:-off] &= scores[:-off] >= scores[off:]
    return is_peak


def dpselect_num_keep(num_frames: int, keep_ratio: float) -> int:
    """Number of time steps DPSelect keeps: ``max(1, round(keep_ratio * num_frames))``.

    Python's ``round`` is used (round-half-to-even), as in the reference.

    Parameters
    ----------
    num_frames : int
        T >= 1.
    keep_ratio : float
        In ``[0, 1]``.

    Returns
    -------
    int
        In ``[1, num_frames]``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not 0.0 <= keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in [0, 1], got {keep_ratio}")
    return max(1, round(keep_ratio * num_frames))


def dpselect(
    features: Tensor,
    num_keep: int,
    *,
    window: int = 3,
    sync: bool = False,
) -> tuple[Tensor, Tensor]:
    """DPSelect: keep the time steps with peak distance to their predecessor.

    ReTaKe (arXiv:2412.20504), Sec. DPSelect. With ``d = frame_distances(features)``:

    * sync: score ``d̄[t] = mean_n d[t, n]``; every frame keeps or drops all its tokens.
    * async (default, as the released ReTaKe configs): each token position ``n``
      uses its own column ``d[:, n]`` and keeps its own ``num_keep`` time steps.

    Peaks (see :func:`window_peaks`, earliest index wins ties) get ``+2`` so they
    rank before every non-peak (distances are in ``[0, 2]``); the top ``num_keep``
    scores are kept and returned sorted in time. Ties in the top-k are broken
    deterministically in favour of the earlier time step.

    Parameters
    ----------
    features : Tensor
        ``[T, N, C]`` frame features (any floating dtype; computed in float32).
    num_keep : int
        Time steps to keep, ``1 <= num_keep <= T`` (see :func:`dpselect_num_keep`).
        ``num_keep == T`` drops nothing and only yields the pivot mask.
    window : int, optional
        Odd peak window (default 3).
    sync : bool, optional
        Frame-level (True) or per-token-position (False, default) selection.

    Returns
    -------
    keep_idx : Tensor
        LongTensor of kept time indices, ascending: ``[num_keep]`` when ``sync``,
        ``[num_keep, N]`` otherwise (column ``n`` sorted ascending).
    pivot_mask : Tensor
        Bool ``[num_keep, N]``: True where the kept entry was a peak (of the mean
        curve when ``sync``, of column ``n`` otherwise). These are the PivotKV pivots.
    """
    dist = frame_distances(features)  # [T, N]
    num_frames, num_tokens = dist.shape
    if not 1 <= num_keep <= num_frames:
        raise ValueError(f"num_keep must be in [1, {num_frames}], got {num_keep}")

    if sync:
        curve = dist.mean(dim=1)  # [T]
        peaks = window_peaks(curve, window)  # [T]
        score = curve + 2.0 * peaks.float()
        order = torch.sort(score, descending=True, stable=True).indices
        keep_idx = torch.sort(order[:num_keep]).values  # [K]
        pivot_mask = peaks[keep_idx].unsqueeze(1).expand(num_keep, num_tokens).clone()
        return keep_idx, pivot_mask

    peaks = window_peaks(dist, window)  # [T, N]
    score = dist + 2.0 * peaks.float()
    order = torch.sort(score, dim=0, descending=True, stable=True).indices
    keep_idx = torch.sort(order[:num_keep], dim=0).values  # [K, N]
    pivot_mask = torch.gather(peaks, 0, keep_idx)
    return keep_idx, pivot_mask
