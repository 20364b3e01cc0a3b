"""AdaReTaKe: prompt-guided scores and adaptive temporal / layer budgets.

AdaReTaKe, "Adaptively Reducing Temporal and Knowledge Redundancy for Efficient
Long Video Understanding", arXiv:2503.12559 (https://arxiv.org/abs/2503.12559),
the follow-up of ReTaKe (arXiv:2412.20504).

Pure, model-agnostic torch functions. Attention shapes follow transformers'
layout (``[1, heads, len, head_dim]``, GQA as ``repeat_kv``); scores are computed
in float32 and in blocks of query rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .pivotkv import _attention_column_sums, _head_mean

__all__ = [
    "prompt_guided_scores",
    "chunk_distances",
    "temporal_budgets",
    "layer_budgets",
]

_MIN_CHUNK_RATIO = 1e-3
_MAX_CHUNK_RATIO = 1.0


def prompt_guided_scores(
    query_question: Tensor,
    key_chunk: Tensor,
    *,
    key_question: Tensor | None = None,
    scaling: float | None = None,
    query_block: int = 1024,
) -> Tensor:
    """Question-to-chunk attention scores of one layer (AdaReTaKe, arXiv:2503.12559).

    The question (its last ``max_guide_length`` tokens) is appended after each
    video chunk; each chunk token's score is the attention it receives from the
    question rows, summed over question rows and averaged over heads
    (within each KV group, then over groups: equal to the plain mean over heads).

    Two forms of the softmax denominator:

    * ``key_question=None`` (default): softmax over the chunk keys only,
      ``softmax(Q_question K_chunk^T * scaling)``. This is what the public
      AdaReTaKe code does (it slices the question rows of Q and the chunk columns
      of K before the softmax) and what ALGORITHMS.md §3 writes; each question row
      then gives the chunk a total mass of 1, so ``sum(scores) == Lq``.
    * ``key_question`` given: the softmax runs over chunk + question keys with the
      question causally masked (question row ``i`` sees all chunk keys and
      question keys ``0..i``), exactly as the model's own attention does, and
      the chunk columns are returned. The question's own keys are then included
      in the denominator (so ``sum(scores) < Lq``) but not returned.

    The past (earlier compressed chunks, text before the video) is never included.

    Parameters
    ----------
    query_question : Tensor
        ``[1, H, Lq, D]`` query states of the appended question tokens.
    key_chunk : Tensor
        ``[1, H_kv, L, D]`` key states of the chunk's tokens.
    key_question : Tensor, optional
        ``[1, H_kv, Lq, D]`` key states of the appended question tokens.
    scaling : float, optional
        Logit scale, default ``1 / sqrt(D)``.
    query_block : int, optional
        Question rows processed at once (default 1024).

    Returns
    -------
    Tensor
        float32 ``[L]`` scores.
    """
    sums = _attention_column_sums(
        query_question, key_chunk, scaling=scaling, query_block=query_block, extra_key=key_question
    )
    return _head_mean(sums)


def _chunk_embeddings(chunk_features: Sequence[Tensor] | Tensor) -> Tensor:
    """Per-chunk embedding = mean over frames of (mean over tokens), float32 ``[num_chunks, C]``."""
    if isinstance(chunk_features, Tensor):
        if chunk_features.ndim not in (3, 4):
            raise ValueError(
                "a chunk_features tensor must be [num_chunks, F, N, C] or [num_chunks, F, C], "
                f"got shape {tuple(chunk_features.shape)}"
            )
        chunks = list(chunk_features.unbind(0))
    else:
        chunks = list(chunk_features)
    if not chunks:
        raise ValueError("chunk_features is empty")
    embeds = []
    for i, chunk in enumerate(chunks):
        if chunk.ndim not in (2, 3) or chunk.shape[0] < 1 or chunk.shape[-2] < 1:
            raise ValueError(f"chunk {i} must be a non-empty [F, N, C] or [F, C] tensor, got {tuple(chunk.shape)}")
        frames = chunk.float()
        if frames.ndim == 3:
            frames = frames.mean(dim=1)  # frame embedding: mean over tokens -> [F, C]
        embeds.append(frames.mean(dim=0))  # chunk embedding: mean over frames -> [C]
    return torch.stack(embeds)


def chunk_distances(chunk_features: Sequence[Tensor] | Tensor) -> Tensor:
    """Temporal novelty of each chunk: mean cosine distance to its two neighbours.

    ``d_i = (1 - cos(c_i, c_{i-1}) + 1 - cos(c_i, c_{i+1})) / 2`` with the chunk
    embeddings replicated at the edges (``c_{-1} = c_0``, ``c_n = c_{n-1}``), so
    the first and last chunks get half their single real distance
    (AdaReTaKe, arXiv:2503.12559).

    Parameters
    ----------
    chunk_features : sequence of Tensor or Tensor
        Per chunk ``[F_i, N, C]`` (frames x tokens x channels) or ``[F_i, C]``
        (frame embeddings); or one tensor ``[num_chunks, F, N, C]`` /
        ``[num_chunks, F, C]``.

    Returns
    -------
    Tensor
        float32 ``[num_chunks]`` in ``[0, 2]`` (zeros for a single chunk).
    """
    emb = _chunk_embeddings(chunk_features)
    padded = torch.cat([emb[:1], emb, emb[-1:]], dim=0)
    left = 1.0 - F.cosine_similarity(emb, padded[:-2], dim=-1)
    right = 1.0 - F.cosine_similarity(emb, padded[2:], dim=-1)
    return (left + right) / 2.0


def temporal_budgets(
    chunk_features: Sequence[Tensor] | Tensor,
    base_ratio: float,
    *,
    max_iter: int = 200,
    tol: float = 1e-6,
) -> Tensor:
    """Per-chunk keep ratios from temporal novelty (AdaReTaKe, arXiv:2503.12559).

    ``r_i = base * d_i / mean(d)`` (:func:`chunk_distances`; uniform ``base`` when
    ``mean(d) == 0``), then Euclidean projection onto
    ``{r : 1e-3 <= r_i <= 1, sum_i r_i = base * num_chunks}``: ``r_i <- clamp(r_i + tau)``
    with the shift ``tau`` found by bisection (at most ``max_iter`` steps, stop
    when ``|sum - target| <= tol``), in float64.

    If the target is infeasible the result is clamped: ``base * n <= 1e-3 * n``
    gives every chunk ``1e-3``, ``base * n >= n`` gives every chunk ``1.0``
    (the sum then differs from ``base * n``).

    Parameters
    ----------
    chunk_features : sequence of Tensor or Tensor
        See :func:`chunk_distances`.
    base_ratio : float
        Average keep ratio (> 0), e.g. :func:`~vidpress.functional.pivotkv.dynamic_ratio`.
    max_iter : int, optional
        Bisection steps (default 200).
    tol : float, optional
        Tolerance on the sum (default 1e-6).

    Returns
    -------
    Tensor
        float32 ``[num_chunks]``, each in ``[1e-3, 1]``.
    """
    if not base_ratio > 0:
        raise ValueError(f"base_ratio must be > 0, got {base_ratio}")
    dist = chunk_distances(chunk_features).double()
    device = dist.device
    num = dist.shape[0]
    lo, hi = _MIN_CHUNK_RATIO, _MAX_CHUNK_RATIO
    target = base_ratio * num
    if target <= lo * num:
        return torch.full((num,), lo, dtype=torch.float32, device=device)
    if target >= hi * num:
        return torch.full((num,), hi, dtype=torch.float32, device=device)

    mean_d = dist.mean()
    if mean_d > 0:
        raw = base_ratio * dist / mean_d
    else:
        raw = torch.full_like(dist, base_ratio)

    # f(tau) = sum(clamp(raw + tau, lo, hi)) is continuous and non-decreasing:
    # f(tau_lo) = n * lo < target < n * hi = f(tau_hi).
    tau_lo = lo - raw.max().item()
    tau_hi = hi - raw.min().item()
    out = raw.clamp(lo, hi)
    for _ in range(max_iter):
        tau = 0.5 * (tau_lo + tau_hi)
        out = (raw + tau).clamp(lo, hi)
        total = out.sum().item()
        if abs(total - target) <= tol:
            break
        if total < target:
            tau_lo = tau
        else:
            tau_hi = tau
    return out.float()


def layer_budgets(layer_scores: Tensor, ratio: float) -> list[int]:
    """Per-layer keep lengths for one chunk, AdaKV-like (AdaReTaKe, arXiv:2503.12559).

    All layers' score vectors are concatenated and the global top
    ``budget = int(max(1, ratio * L) * num_layers)`` entries are taken (the
    ``max(1, .)`` guard is the reference's; it only matters when ``ratio * L < 1``).
    ``count_l`` = entries of layer ``l`` among them, plus 1;
    ``ratio_l = num_layers * ratio * count_l / sum(count)``;
    ``keep_l = max(1, int(max(0.01, ratio_l) * L))``, capped at ``L``.
    Ties are broken in favour of the earlier (layer, position) entry.

    Parameters
    ----------
    layer_scores : Tensor
        ``[num_layers, L]`` scores of the chunk's tokens in each layer (e.g.
        :func:`prompt_guided_scores` per layer).
    ratio : float
        The chunk's average keep ratio, in ``[0, 1]``.

    Returns
    -------
    list of int
        ``num_layers`` keep lengths, each in ``[1, L]``; their sum is about
        ``num_layers * ratio * L`` (truncation loses at most one token per layer;
        the 0.01 floor can add some).
    """
    if layer_scores.ndim != 2:
        raise ValueError(f"layer_scores must be [num_layers, L], got shape {tuple(layer_scores.shape)}")
    num_layers, length = layer_scores.shape
    if num_layers < 1 or length < 1:
        raise ValueError("layer_scores must be non-empty")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    budget = min(int(max(1.0, ratio * length) * num_layers), num_layers * length)
    flat = layer_scores.detach().float().reshape(-1)
    top = torch.sort(flat, descending=True, stable=True).indices[:budget]
    counts = torch.bincount(top // length, minlength=num_layers).tolist()
    counts = [c + 1 for c in counts]
    total = sum(counts)
    keeps = []
    for count in counts:
        ratio_l = num_layers * ratio * count / total
        keeps.append(min(length, max(1, int(max(0.01, ratio_l) * length))))
    return keeps
