"""PivotKV: per-chunk KV-cache eviction during chunked prefill (ReTaKe).

ReTaKe, "Reducing Temporal and Knowledge Redundancy for Long Video Understanding",
arXiv:2412.20504 (https://arxiv.org/abs/2412.20504).

Pure, model-agnostic torch functions operating on one decoder layer's query and
key states of one video chunk. Shapes follow transformers' attention layout:
``query [1, H, L, D]``, ``key [1, H_kv, L, D]`` with ``H = H_kv * groups`` and
query head ``h`` reading kv head ``h // groups`` (``repeat_kv`` order).
Scores are computed in float32 (half-precision CUDA inputs: tensor-core products
with float32 accumulation and output) and in blocks of query rows, so at most one
``[H, query_block, L]`` float32 block is alive at a time (no full ``[H, L, L]``
attention map for long chunks).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "pivotkv_scores",
    "pivotkv_keep",
    "pivotkv_keep_len",
    "keep_indices_from_scores",
    "dynamic_ratio",
    "reforge_temporal_ids",
    "rotate_half",
    "rotate",
    "unrotate",
]


def _check_qk(query: Tensor, key: Tensor) -> tuple[int, int, int]:
    """Validate ``[1, H, Lq, D]`` / ``[1, H_kv, Lk, D]``; return (H_kv, groups, D)."""
    if query.ndim != 4 or key.ndim != 4:
        raise ValueError(
            f"query and key must be 4-D [1, heads, len, dim], got {tuple(query.shape)} and {tuple(key.shape)}"
        )
    if query.shape[0] != 1 or key.shape[0] != 1:
        raise ValueError("only batch size 1 is supported")
    num_heads, head_dim = query.shape[1], query.shape[3]
    num_kv_heads = key.shape[1]
    if key.shape[3] != head_dim:
        raise ValueError(f"query head_dim {head_dim} != key head_dim {key.shape[3]}")
    if num_kv_heads < 1 or num_heads % num_kv_heads != 0:
        raise ValueError(f"query heads ({num_heads}) must be a multiple of key heads ({num_kv_heads})")
    return num_kv_heads, num_heads // num_kv_heads, head_dim


def _tensor_core_products(x: Tensor) -> bool:
    """Whether ``x``'s products run as half-precision tensor-core products with float32 output (CUDA)."""
    return x.is_cuda and x.dtype in (torch.bfloat16, torch.float16)


def _float32_bmm(a: Tensor, b: Tensor) -> Tensor:
    """Float32 ``a @ b`` of [B, n, k] by [B, k, m].

    Half-precision CUDA inputs run on tensor cores with float32 accumulation and output
    (``out_dtype=torch.float32``): the product of two bf16 / fp16 values is exact in float32, so this
    equals the float32 product of the upcast inputs up to summation order, without the float32 GEMM
    (SIMT kernels, a fifteenth of the tensor-core rate; measured on an H200: 0.8 s of a 1024-frame
    PivotKV prefill's 6.3 s of GPU time). Elsewhere the inputs are float32 already.
    """
    if _tensor_core_products(a):
        return torch.bmm(a, b, out_dtype=torch.float32)
    return torch.bmm(a, b)


def _attention_column_sums(
    query: Tensor,
    key: Tensor,
    *,
    scaling: float | None,
    query_block: int,
    extra_key: Tensor | None = None,
) -> Tensor:
    """Sum over query rows of ``softmax(Q K^T * scaling)``, restricted to ``key``'s columns.

    Parameters
    ----------
    query : Tensor
        ``[1, H, Lq, D]``.
    key : Tensor
        ``[1, H_kv, Lk, D]``: the columns that are returned. Every query row sees all of them.
    scaling : float or None
        Logit scale, default ``1 / sqrt(D)``.
    query_block : int
        Query rows per block.
    extra_key : Tensor or None
        ``[1, H_kv, Lq, D]``: keys of the query tokens themselves, appended after
        ``key`` under a causal mask (query row ``i`` sees extra keys ``0..i``).
        They enter the softmax denominator only; their columns are not returned.

    Returns
    -------
    Tensor
        float32 ``[H_kv, groups, Lk]``: per query head (grouped as ``repeat_kv``),
        the attention each key column receives, summed over query rows.
    """
    num_kv_heads, groups, head_dim = _check_qk(query, key)
    q_len, k_len = query.shape[2], key.shape[2]
    if q_len < 1 or k_len < 1:
        raise ValueError(f"empty query ({q_len}) or key ({k_len})")
    if query_block < 1:
        raise ValueError(f"query_block must be >= 1, got {query_block}")
    if scaling is None:
        scaling = 1.0 / math.sqrt(head_dim)

    # the products' inputs: kept in bf16 / fp16 on CUDA when all share that dtype (see _float32_bmm), else float32
    operands = [t for t in (query, key, extra_key) if t is not None]
    keep = all(_tensor_core_products(t) and t.dtype == query.dtype for t in operands)
    q = (query[0] if keep else query[0].float()).reshape(num_kv_heads, groups, q_len, head_dim)
    k_t = (key[0] if keep else key[0].float()).transpose(1, 2)  # [H_kv, D, Lk]
    if extra_key is not None:
        if extra_key.ndim != 4 or extra_key.shape[0] != 1 or extra_key.shape[1] != num_kv_heads:
            raise ValueError(f"extra_key must be [1, {num_kv_heads}, {q_len}, {head_dim}]")
        if extra_key.shape[2] != q_len or extra_key.shape[3] != head_dim:
            raise ValueError(f"extra_key must be [1, {num_kv_heads}, {q_len}, {head_dim}]")
        xk_t = (extra_key[0] if keep else extra_key[0].float()).transpose(1, 2)  # [H_kv, D, Lq]

    sums = torch.zeros(num_kv_heads, groups, k_len, dtype=torch.float32, device=query.device)
    for start in range(0, q_len, query_block):
        stop = min(start + query_block, q_len)
        rows = stop - start
        q_blk = q[:, :, start:stop].reshape(num_kv_heads, groups * rows, head_dim)
        logits = _float32_bmm(q_blk, k_t).view(num_kv_heads, groups, rows, k_len)  # the one big block
        logits.mul_(scaling)
        if extra_key is None:  # softmax as one fused kernel
            sums += torch.softmax(logits, dim=-1).sum(dim=2)
            continue
        # the query tokens' own keys (causal) join the denominator only
        x_logits = _float32_bmm(q_blk, xk_t).view(num_kv_heads, groups, rows, q_len).mul_(scaling)
        row_idx = torch.arange(start, stop, device=query.device).view(rows, 1)
        col_idx = torch.arange(q_len, device=query.device).view(1, q_len)
        x_logits.masked_fill_(col_idx > row_idx, float("-inf"))
        row_max = torch.maximum(logits.amax(dim=-1, keepdim=True), x_logits.amax(dim=-1, keepdim=True))
        logits.sub_(row_max).exp_()
        denom = logits.sum(dim=-1, keepdim=True) + (x_logits - row_max).exp().sum(dim=-1, keepdim=True)
        sums += logits.div_(denom).sum(dim=2)
    return sums


def _head_mean(col_sums: Tensor) -> Tensor:
    """``[H_kv, groups, L]`` -> ``[L]``: mean within each KV group, then over groups."""
    return col_sums.mean(dim=1).mean(dim=0)


def pivotkv_scores(
    query: Tensor,
    key: Tensor,
    pivot_mask: Tensor | None = None,
    *,
    scaling: float | None = None,
    query_block: int = 1024,
) -> Tensor:
    """PivotKV token scores of one chunk in one decoder layer (ReTaKe, arXiv:2412.20504).

    ``A = softmax(Q K^T * scaling)`` over the chunk's own tokens, with NO causal
    mask, keys shared across each GQA group; ``s = A`` summed over query rows
    (``[H, L]``), averaged within each KV group then over groups (``[L]``); pivot
    entries are then set to ``1.0``. Because every row of ``A`` sums to 1,
    ``mean(s) == 1`` before the pivot override, so this "soft" protection puts the
    pivots at the average score (reference behaviour; see ``hard_pivots`` in
    :func:`pivotkv_keep` for the strict form).

    Parameters
    ----------
    query : Tensor
        ``[1, H, L, D]`` the chunk's query states as the layer uses them (rotated,
        or un-rotated for position reforge).
    key : Tensor
        ``[1, H_kv, L, D]`` the chunk's key states, ``H % H_kv == 0``.
    pivot_mask : Tensor, optional
        Bool ``[L]``: DPSelect pivots of the chunk's tokens.
    scaling : float, optional
        Logit scale, default ``1 / sqrt(D)``.
    query_block : int, optional
        Query rows processed at once (default 1024); bounds memory to one float32
        ``[H, query_block, L]`` block. Does not change the result beyond float rounding.

    Returns
    -------
    Tensor
        float32 ``[L]`` scores.
    """
    if query.shape[2] != key.shape[2]:
        raise ValueError(f"query length {query.shape[2]} != key length {key.shape[2]}")
    scores = _head_mean(_attention_column_sums(query, key, scaling=scaling, query_block=query_block))
    if pivot_mask is not None:
        if pivot_mask.shape != scores.shape:
            raise ValueError(f"pivot_mask must be [{scores.shape[0]}], got {tuple(pivot_mask.shape)}")
        scores = scores.masked_fill(pivot_mask.to(device=scores.device, dtype=torch.bool), 1.0)
    return scores


def keep_indices_from_scores(
    scores: Tensor,
    keep_len: int,
    pivot_mask: Tensor | None = None,
    hard_pivots: bool = False,
) -> Tensor:
    """Sorted indices of the ``keep_len`` best-scoring tokens.

    Ties are broken in favour of the earlier index (stable sort), so the result is
    deterministic on every device.

    Parameters
    ----------
    scores : Tensor
        ``[L]`` scores.
    keep_len : int
        ``0 <= keep_len <= L``.
    pivot_mask : Tensor, optional
        Bool ``[L]``. Used only when ``hard_pivots``.
    hard_pivots : bool, optional
        If True, pivots rank before every non-pivot: all pivots are kept when they
        fit; if there are more pivots than ``keep_len``, the best-scoring pivots
        are kept; remaining slots go to the best non-pivots.

    Returns
    -------
    Tensor
        LongTensor ``[keep_len]``, ascending.
    """
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    length = scores.shape[0]
    if not 0 <= keep_len <= length:
        raise ValueError(f"keep_len must be in [0, {length}], got {keep_len}")
    order = torch.sort(scores, descending=True, stable=True).indices
    if hard_pivots and pivot_mask is not None:
        if pivot_mask.shape != scores.shape:
            raise ValueError(f"pivot_mask must be [{length}], got {tuple(pivot_mask.shape)}")
        is_pivot = pivot_mask.to(device=scores.device, dtype=torch.bool)[order]
        # Stable re-sort on "not a pivot": pivots first, each part still by score.
        order = order[torch.sort((~is_pivot).to(torch.int8), stable=True).indices]
    return torch.sort(order[:keep_len]).values


def pivotkv_keep(
    query: Tensor,
    key: Tensor,
    keep_len: int,
    pivot_mask: Tensor | None = None,
    hard_pivots: bool = False,
    *,
    scaling: float | None = None,
    query_block: int = 1024,
) -> Tensor:
    """Indices of the chunk tokens PivotKV keeps in one layer (ReTaKe, arXiv:2412.20504).

    Default (``hard_pivots=False``, the reference): top-``keep_len`` of
    :func:`pivotkv_scores` with pivots scored ``1.0``. With ``hard_pivots=True``
    pivots are always kept while they fit; when there are more pivots than
    ``keep_len`` the pivots are ranked by their raw attention score (no ``1.0``
    override, which would tie them all); the best non-pivots fill the rest.

    Parameters
    ----------
    query : Tensor
        ``[1, H, L, D]``.
    key : Tensor
        ``[1, H_kv, L, D]``.
    keep_len : int
        ``0 <= keep_len <= L`` (see :func:`pivotkv_keep_len`).
    pivot_mask : Tensor, optional
        Bool ``[L]``.
    hard_pivots : bool, optional
        Strict pivot protection (not the reference behaviour).
    scaling : float, optional
        Logit scale, default ``1 / sqrt(D)``.
    query_block : int, optional
        Query rows per block (default 1024).

    Returns
    -------
    Tensor
        LongTensor ``[keep_len]``, ascending positions within the chunk.
    """
    if hard_pivots:
        scores = pivotkv_scores(query, key, None, scaling=scaling, query_block=query_block)
    else:
        scores = pivotkv_scores(query, key, pivot_mask, scaling=scaling, query_block=query_block)
    return keep_indices_from_scores(scores, keep_len, pivot_mask, hard_pivots)


def pivotkv_keep_len(length: int, ratio: float) -> int:
    """Tokens kept from a chunk of ``length`` tokens: ``max(1, int(ratio * length))``.

    ``int`` truncates, as in the reference (so e.g. ``int(0.29 * 100) == 28``).

    Parameters
    ----------
    length : int
        Chunk length L >= 1.
    ratio : float
        In ``[0, 1]``.

    Returns
    -------
    int
        In ``[1, length]``.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    return max(1, int(ratio * length))


def dynamic_ratio(total_input_length: int, max_input_length: int) -> float:
    """ReTaKe's dynamic compression ratio: ``min(1, max_input_length / total_input_length)``.

    The released configs use ``max_input_length`` 32000 (Qwen2-VL) or 40000
    (LLaVA-Video); AdaReTaKe uses 16000.

    Parameters
    ----------
    total_input_length : int
        Length of the whole uncompressed prompt (> 0).
    max_input_length : int
        Target length (> 0).

    Returns
    -------
    float
        In ``(0, 1]``.
    """
    if total_input_length <= 0 or max_input_length <= 0:
        raise ValueError("lengths must be positive")
    return min(1.0, max_input_length / total_input_length)


def reforge_temporal_ids(
    t_ids: Tensor,
    keep_idx: Tensor,
    t0: int | Tensor,
    *,
    new_t0: int | Tensor | None = None,
) -> Tensor:
    """Squeeze the temporal position ids of a chunk's kept tokens (ReTaKe position reforge).

    After keeping ``K`` of the chunk's ``L`` tokens, the kept tokens' temporal ids
    are compressed towards the chunk start by the keep ratio::

        t' = t0 + floor((t - t0) * K / L)

    computed exactly in integer arithmetic for integer ids (the reference computes
    ``((t - t0) * (K / L)).long()`` in floating point, which can differ by one at
    exact multiples). Since ``K <= L`` and ``t >= t0`` the result lies in
    ``[t0, max(t)]`` and is non-decreasing whenever the kept ids are. Height and
    width ids are not touched. The reference uses the smallest kept temporal id as
    ``t0``; pass the chunk's first id to get the spec's form.

    ``new_t0`` (optional) shifts the squeezed timeline to start at ``new_t0``
    instead of ``t0``: ``t' = new_t0 + floor((t - t0) * K / L)``. Use it to keep a
    later chunk continuous after the previous chunk's last squeezed id
    (``new_t0 = previous_last + 1``); the question text then follows the squeezed
    timeline (caller's job).

    Parameters
    ----------
    t_ids : Tensor
        ``[L]`` temporal ids of the chunk's tokens (integer or floating), all ``>= t0``.
    keep_idx : Tensor
        ``[K]`` LongTensor of kept positions in ``[0, L)``, ascending.
    t0 : int or Tensor
        The chunk's first temporal id (0-d tensor allowed).
    new_t0 : int or Tensor, optional
        Start of the squeezed timeline (default ``t0``).

    Returns
    -------
    Tensor
        ``[K]`` new temporal ids, same dtype as ``t_ids``.
    """
    if t_ids.ndim != 1 or keep_idx.ndim != 1:
        raise ValueError("t_ids and keep_idx must be 1-D")
    length = t_ids.shape[0]
    num_keep = keep_idx.shape[0]
    if length < 1:
        raise ValueError("t_ids must not be empty")
    base = t0 if new_t0 is None else new_t0
    rel = t_ids[keep_idx] - t0
    if t_ids.is_floating_point():
        squeezed = torch.floor(rel * num_keep / length)
    else:
        squeezed = torch.div(rel * num_keep, length, rounding_mode="floor")
    return (squeezed + base).to(t_ids.dtype)


def rotate_half(x: Tensor) -> Tensor:
    """``cat(-x2, x1)`` over the last dim, where ``x1, x2`` are its two halves."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: Tensor, cos: Tensor, sin: Tensor, inverse: bool) -> Tensor:
    rot_dim = cos.shape[-1]
    if sin.shape[-1] != rot_dim or rot_dim % 2 or rot_dim > x.shape[-1]:
        raise ValueError(f"cos/sin last dim {rot_dim} must be even and <= x last dim {x.shape[-1]}")
    ctype = torch.promote_types(x.dtype, torch.float32)
    xr, xp = x[..., :rot_dim].to(ctype), x[..., rot_dim:]
    c, s = cos.to(ctype), sin.to(ctype)
    if inverse:
        out = (xr * c - rotate_half(xr) * s) / (c * c + s * s)
    else:
        out = xr * c + rotate_half(xr) * s
    out = out.to(x.dtype)
    return out if rot_dim == x.shape[-1] else torch.cat((out, xp), dim=-1)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Apply rotate-half RoPE: ``x * cos + rotate_half(x) * sin``.

    Same convention as transformers' ``apply_rotary_pos_emb`` (cos/sin as returned
    by the model's rotary embedding, with equal halves; for M-RoPE pass the
    already section-merged cos/sin). ``cos``/``sin`` must broadcast against ``x``
    (e.g. ``[1, 1, L, D]`` for ``x [1, H, L, D]``); if their last dim is smaller
    than ``x``'s, only the leading dims are rotated (partial rotary) and the rest
    pass through. Computed in ``promote(x.dtype, float32)``, returned in ``x.dtype``.

    Parameters
    ----------
    x : Tensor
        ``[..., L, D]`` query or key states.
    cos, sin : Tensor
        Broadcastable to ``[..., L, D_rot]``, ``D_rot <= D`` even.

    Returns
    -------
    Tensor
        Same shape and dtype as ``x``.
    """
    return _rope(x, cos, sin, inverse=False)


def unrotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Exact inverse of :func:`rotate`: ``(x * cos - rotate_half(x) * sin) / (cos^2 + sin^2)``.

    When ``cos^2 + sin^2 == 1`` this is ``x * cos - rotate_half(x) * sin``; the
    division makes it exact for rotary embeddings whose cos/sin carry an attention
    scaling (YaRN's ``attention_scaling``; the reference divides by its square).
    Used by position reforge to score and re-rotate with squeezed ids.

    Parameters
    ----------
    x : Tensor
        ``[..., L, D]`` rotated states.
    cos, sin : Tensor
        The same cos/sin that rotated ``x``.

    Returns
    -------
    Tensor
        Same shape and dtype as ``x``.
    """
    return _rope(x, cos, sin, inverse=True)
