"""XComp QC-Comp: question-conditioned frame selection with segment-local attention.

XComp, "One Token per Highly Selective Frame", arXiv:2604.14149 (NeurIPS 2025).

QC-Comp scores every frame by how much the question attends to it inside the
LLM, computed *locally* (short windows of clips) to avoid the position bias of
attention over very long sequences, then keeps the best frames for one final
answering pass. This module holds the model-agnostic pieces:

* :func:`qccomp_windows`: the (start, end) frame windows of ``window_clips`` clips
  sliding by ``stride_clips`` clips;
* :func:`qccomp_chunks`: overlapping, shifted, wrap-around chunks of a long video
  so that every frame is scored ``n_repeat`` times;
* :func:`qccomp_clip_token_slices`: token slices of the clips of one window;
* :func:`qccomp_clip_scores`: per-clip question-to-video attention of one window,
  from the layer's Q and K only;
* :func:`qccomp_select`: top frames, re-sorted in time.

In the reference, each window is scored by building ``[tokens before the
video] + [the window's video tokens] + [text after the video up to the
assistant turn]`` with positions ``0..len-1`` and running the layer with
attention weights; the clip score is the mean of ``A[question rows, clip
columns]`` (heads averaged). Scores of layers 6..23 (0-based, of 28) are summed;
a frame's score is its clip's score.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from vidpress.functional.checks import check_int

__all__ = [
    "qccomp_windows",
    "qccomp_chunks",
    "qccomp_clip_token_slices",
    "qccomp_clip_scores",
    "qccomp_select",
]


# --------------------------------------------------------------------------- windows


def qccomp_windows(
    num_frames: int,
    clip_frames: int = 8,
    window_clips: int = 8,
    stride_clips: int = 4,
    *,
    align_end: bool = True,
) -> list[tuple[int, int]]:
    """Frame windows of ``window_clips`` clips sliding by ``stride_clips`` clips.

    XComp QC-Comp, arXiv:2604.14149 (defaults: clips of 8 frames, windows of 8
    clips = 64 frames, stride 4 clips = 32 frames).

    The video is cut into ``C = ceil(num_frames / clip_frames)`` clips of
    ``clip_frames`` frames; when ``num_frames`` is not a multiple of
    ``clip_frames`` the last clip is shorter. Windows start at clips
    ``0, s, 2s, ...`` as long as they fit (``start + window_clips <= C``).

    * ``align_end=True`` (default): if the last such window does not end at the
      last clip, one more window ``[C - window_clips, C)`` aligned to the end is
      added, so every frame is covered by at least one window. Its start need not
      be a multiple of the stride.
    * ``align_end=False``: the reference behaviour (windows that would run past
      the end are dropped, so trailing frames may be uncovered). In the
      reference's own setting (chunks of 512 + 64 frames = 72 clips) both are
      identical since ``72 - 8`` is a multiple of 4.

    If the video has no more than ``window_clips`` clips, a single window over
    everything ``(0, num_frames)`` is returned.

    Parameters
    ----------
    num_frames : int
        ``T >= 1`` frames.
    clip_frames, window_clips, stride_clips : int
        Clip length in frames, window length and stride in clips (all ``>= 1``).
    align_end : bool
        See above.

    Returns
    -------
    list[tuple[int, int]]
        ``(start_frame, end_frame)`` half-open windows, sorted by start. Window
        starts are multiples of ``clip_frames``; ends are multiples of
        ``clip_frames`` or ``num_frames``.
    """
    n = check_int("num_frames", num_frames, 1)
    cf = check_int("clip_frames", clip_frames, 1)
    wc = check_int("window_clips", window_clips, 1)
    sc = check_int("stride_clips", stride_clips, 1)
    n_clips = -(-n // cf)
    if n_clips <= wc:
        return [(0, n)]
    starts = list(range(0, n_clips - wc + 1, sc))
    if align_end and starts[-1] != n_clips - wc:
        starts.append(n_clips - wc)
    return [(s * cf, min((s + wc) * cf, n)) for s in starts]


# --------------------------------------------------------------------------- chunks


def qccomp_chunks(
    num_frames: int,
    chunk_frames: int = 512,
    margin_frames: int = 64,
    n_repeat: int = 2,
    *,
    return_core: bool = False,
    device: torch.device | str | None = None,
) -> list[Tensor] | list[tuple[Tensor, Tensor]]:
    """Overlapping, shifted, wrap-around chunks so that every frame is scored ``n_repeat`` times.

    XComp QC-Comp, arXiv:2604.14149: long videos are scored in chunks of 512
    (+ window margin) frames, shifted so that every frame is scored twice.

    Construction (the *core* of a chunk is the part whose scores count):

    1. ``shift = chunk_frames // n_repeat`` (``chunk_frames`` must be divisible
       by ``n_repeat``). The video, seen as a circle, is cut into
       ``S = ceil(num_frames / shift)`` segments ``[k * shift, (k + 1) * shift)``,
       the last one possibly shorter (it ends at ``num_frames``).
    2. Chunk ``k`` (``k = 0 .. S-1``) has as core the ``n_repeat`` consecutive
       segments ``k, k+1, ..., k+n_repeat-1`` taken modulo ``S`` (wrap-around: the
       last chunks continue from frame 0). Core lengths are ``chunk_frames``
       except for the chunks containing a short last segment. Every frame lies in
       the core of exactly ``n_repeat`` chunks.
    3. Margin: the core is extended by ``margin_frames // 2`` frames before and
       ``margin_frames - margin_frames // 2`` after, again circularly. Margin
       frames are context only: inside a chunk, the clips at both ends are covered
       by fewer sliding windows than the others and the reference ignores them
       ("clips covered by fewer windows than the maximum are ignored"); the
       margin makes those ignored edge clips fall outside the core. For windows of
       8 clips with stride 4 of 8-frame clips the under-covered edge is
       ``(8 - 4) * 8 = 32`` frames per side, hence the default
       ``margin_frames = 64`` (the reference's ``512 + 2 * 4 * 8`` chunks).

    Frames inside a chunk are in circular video order (the order the reference
    feeds them): a wrapped chunk runs ``..., T-2, T-1, 0, 1, ...``.

    Small videos: if ``num_frames <= chunk_frames + margin_frames`` a single chunk
    over all frames in order is returned (its core is everything), so those frames
    appear once, not ``n_repeat`` times. Aggregate by the mean over occurrences
    (as the reference does) and this makes no difference.

    Differences from the released code: it runs ``n_repeat`` passes of
    ``ceil(T / 512)`` chunks of 512 frames each, the pass ``k`` shifted by
    ``k * (512 // n_repeat + 8 // n_repeat)`` frames, so when ``T`` is not a
    multiple of 512 some frames are scored more often than others; the segment
    construction above gives exactly ``n_repeat`` for every frame and uses the
    same chunk starts when ``T`` is a multiple of ``chunk_frames`` (without the
    extra ``8 // n_repeat`` sub-clip offset).

    Parameters
    ----------
    num_frames : int
        ``T >= 1`` frames of the video.
    chunk_frames : int
        Core length of a chunk (default 512), divisible by ``n_repeat``.
    margin_frames : int
        Total context frames added around each core (default 64), ``>= 0``.
    n_repeat : int
        How many chunk cores contain each frame (default 2), ``>= 1``.
    return_core : bool
        If True, return ``(frames, core_mask)`` pairs instead of bare frame tensors.
    device : torch.device or str, optional
        Device of the returned tensors.

    Returns
    -------
    list[Tensor] or list[tuple[Tensor, Tensor]]
        Per chunk, int64 frame indices ``[core_len + margin_frames]`` (or ``[T]``
        for a single small-video chunk); with ``return_core`` also a bool mask of
        the same length, True on the core positions.
    """
    n = check_int("num_frames", num_frames, 1)
    chunk = check_int("chunk_frames", chunk_frames, 1)
    margin = check_int("margin_frames", margin_frames, 0)
    rep = check_int("n_repeat", n_repeat, 1)
    if chunk % rep != 0:
        raise ValueError(f"chunk_frames ({chunk}) must be divisible by n_repeat ({rep})")

    def pack(frames: Tensor, lo: int, hi: int) -> Tensor | tuple[Tensor, Tensor]:
        if not return_core:
            return frames
        mask = torch.zeros(frames.numel(), dtype=torch.bool, device=device)
        mask[lo : frames.numel() - hi] = True
        return frames, mask

    if n <= chunk + margin:
        return [pack(torch.arange(n, dtype=torch.long, device=device), 0, 0)]

    shift = chunk // rep
    n_seg = -(-n // shift)
    bounds = [min(k * shift, n) for k in range(n_seg)] + [n]
    lo, hi = margin // 2, margin - margin // 2
    out = []
    for k in range(n_seg):
        start = bounds[k]
        end_seg = k + rep
        # circular end of the core (may pass n once; n_seg > rep so at most one wrap)
        core_end = bounds[end_seg] if end_seg <= n_seg else n + bounds[end_seg - n_seg]
        idx = torch.arange(start - lo, core_end + hi, dtype=torch.long, device=device) % n
        out.append(pack(idx, lo, hi))
    return out


# --------------------------------------------------------------------------- scores


def qccomp_clip_token_slices(
    num_frames: int,
    tokens_per_frame: int,
    clip_frames: int = 8,
) -> list[slice]:
    """Token slices (relative to a window's video span) of the window's clips.

    The window's video span holds ``num_frames * tokens_per_frame`` tokens laid out
    frame by frame; clip ``c`` covers frames ``[c * clip_frames, min((c + 1) *
    clip_frames, num_frames))``, the last clip possibly shorter.

    Parameters
    ----------
    num_frames, tokens_per_frame, clip_frames : int
        Window frames, tokens per frame, frames per clip (all ``>= 1``).

    Returns
    -------
    list[slice]
        ``[ceil(num_frames / clip_frames)]`` slices, in clip order.
    """
    n = check_int("num_frames", num_frames, 1)
    tpf = check_int("tokens_per_frame", tokens_per_frame, 1)
    cf = check_int("clip_frames", clip_frames, 1)
    return [slice(s * tpf, min(s + cf, n) * tpf) for s in range(0, n, cf)]


def _as_slices(clip_token_slices: Sequence[slice | tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for s in clip_token_slices:
        if isinstance(s, slice):
            if s.step not in (None, 1) or s.start is None or s.stop is None:
                raise ValueError(f"clip slices need explicit start/stop and step 1, got {s}")
            a, b = int(s.start), int(s.stop)
        else:
            a, b = (int(v) for v in s)
        if a < 0 or b <= a:
            raise ValueError(f"invalid clip token range ({a}, {b})")
        out.append((a, b))
    if not out:
        raise ValueError("clip_token_slices must not be empty")
    return out


def _as_heads(x: Tensor, name: str) -> Tensor:
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"{name} must have batch size 1, got shape {tuple(x.shape)}")
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"{name} must be [1, heads, len, dim] or [heads, len, dim], got {tuple(x.shape)}")
    return x


def qccomp_clip_scores(
    question_query: Tensor,
    video_key: Tensor | None,
    clip_token_slices: Sequence[slice | tuple[int, int]],
    *,
    scaling: float | None = None,
    full_key: Tensor | None = None,
    video_offset: int | None = None,
    query_offset: int | None = None,
    causal: bool = True,
    block_size: int = 4096,
) -> Tensor:
    """Per-clip question-to-video attention of one window, from Q and K only.

    XComp QC-Comp, arXiv:2604.14149. ``A = softmax(q k^T * scaling)`` (float32);
    the score of clip ``c`` is the mean of ``A`` over question rows, all query
    heads and the clip's token columns. Grouped-query attention is handled without
    repeating keys: query head ``h`` uses KV head ``h // (H // H_kv)``.

    Two forms of the softmax denominator:

    * Video-only (``full_key=None``): the softmax runs over the window's video keys
      only. Cheapest; rows sum to 1 over the video span.
    * Faithful (``full_key`` given, used whenever it is given): the reference runs
      the layer on the whole ``[prefix + window video + text after the video]``
      sequence, so its softmax runs over all of those keys. ``full_key`` holds the
      keys of that sequence; the video span starts at column ``video_offset`` and
      the question rows are the queries at columns ``query_offset ..
      query_offset + Lq - 1`` (default: the last ``Lq`` columns). With
      ``causal=True`` (default) row ``i`` sees columns ``<= query_offset + i``;
      ``causal=False`` reproduces a run without a causal mask (an eager-attention
      fallback given no mask sees every column). The numerators are read from
      ``full_key`` at the clip columns; ``video_key`` is then unused and may be
      None. The denominator is accumulated blockwise over ``block_size`` columns.

    Nothing larger than ``[H, Lq, max(Lv, block_size)]`` is materialised.

    Parameters
    ----------
    question_query : Tensor
        ``[1, H, Lq, D]`` (or ``[H, Lq, D]``) queries of the question rows, rotated
        as the layer sees them.
    video_key : Tensor or None
        ``[1, H_kv, Lv, D]`` (or ``[H_kv, Lv, D]``) keys of the window's video span
        (rotated). Required in the video-only form.
    clip_token_slices : sequence of slice or (start, stop)
        Token ranges of the clips, relative to the start of the video span.
    scaling : float, optional
        Logit scale, default ``1 / sqrt(D)``.
    full_key : Tensor, optional
        ``[1, H_kv, Lk, D]`` keys of the whole scored sequence (faithful form).
    video_offset : int, optional
        Column of the first video key inside ``full_key`` (required with it).
    query_offset : int, optional
        Column of the first question row inside ``full_key``; default ``Lk - Lq``.
    causal : bool
        Apply the causal mask in the faithful form (default True).
    block_size : int
        Key columns per block for the faithful denominator.

    Returns
    -------
    Tensor
        ``[num_clips]`` float32 clip scores.
    """
    q = _as_heads(question_query, "question_query").float()
    n_heads, n_q, dim = q.shape
    slices = _as_slices(clip_token_slices)
    scale = float(scaling) if scaling is not None else 1.0 / math.sqrt(dim)
    check_int("block_size", block_size, 1)

    def grouped(key: Tensor) -> Tensor:
        """Logits [H_kv, g, Lq, Lk'] for keys [H_kv, Lk', D]."""
        n_kv = key.shape[0]
        if key.shape[-1] != dim:
            raise ValueError(f"key head_dim {key.shape[-1]} != query head_dim {dim}")
        if n_heads % n_kv != 0:
            raise ValueError(f"query heads ({n_heads}) must be a multiple of kv heads ({n_kv})")
        qg = q.reshape(n_kv, n_heads // n_kv, n_q, dim)
        return torch.einsum("kgqd,kld->kgql", qg, key.float()) * scale

    lo = min(a for a, _ in slices)
    hi = max(b for _, b in slices)

    if full_key is None:
        if video_key is None:
            raise ValueError("video_key is required when full_key is not given")
        vk = _as_heads(video_key, "video_key")
        n_video = vk.shape[1]
        if hi > n_video:
            raise ValueError(f"clip slices reach column {hi} but the video span has {n_video} keys")
        probs = torch.softmax(grouped(vk), dim=-1)  # [H_kv, g, Lq, Lv]
        col_mass = probs.sum(dim=(0, 1, 2))  # [Lv]
        offset = 0
    else:
        fk = _as_heads(full_key, "full_key")
        n_keys = fk.shape[1]
        if video_offset is None:
            raise ValueError("video_offset is required with full_key")
        v_off = check_int("video_offset", video_offset, 0)
        q_off = n_keys - n_q if query_offset is None else check_int("query_offset", query_offset, 0)
        if q_off < 0 or (causal and q_off + n_q > n_keys):
            raise ValueError(f"question rows [{q_off}, {q_off + n_q}) do not fit in {n_keys} keys")
        if v_off + hi > n_keys:
            raise ValueError(f"clip columns reach {v_off + hi} but full_key has {n_keys} keys")
        row_pos = q_off + torch.arange(n_q, device=fk.device)  # [Lq]

        def masked_logits(c0: int, c1: int) -> Tensor:
            logits = grouped(fk[:, c0:c1])
            if causal:
                cols = torch.arange(c0, c1, device=fk.device)
                hidden = cols[None, :] > row_pos[:, None]  # [Lq, c1 - c0]
                logits = logits.masked_fill(hidden, float("-inf"))
            return logits

        n_kv = fk.shape[0]
        lse = torch.full((n_kv, n_heads // n_kv, n_q), float("-inf"), device=fk.device)
        for c0 in range(0, n_keys, block_size):
            block = masked_logits(c0, min(c0 + block_size, n_keys))
            lse = torch.logaddexp(lse, torch.logsumexp(block, dim=-1))
        probs = torch.exp(masked_logits(v_off + lo, v_off + hi) - lse[..., None])
        col_mass = probs.sum(dim=(0, 1, 2))  # [hi - lo]
        offset = lo

    denom = float(n_heads * n_q)
    scores = [col_mass[a - offset : b - offset].sum() / (denom * (b - a)) for a, b in slices]
    return torch.stack(scores)


# --------------------------------------------------------------------------- selection


def qccomp_select(frame_scores: Tensor, n_select: int) -> Tensor:
    """Indices of the ``n_select`` best-scored frames, re-sorted in time.

    XComp QC-Comp, arXiv:2604.14149: keep the top ``n_selected`` frames (256 / 512
    / 1024 / 2048 by benchmark) in temporal order for the final pass. Ties are
    broken towards the earlier frame (a stable descending sort, like the
    reference's Python sort). NaN scores rank last.

    Parameters
    ----------
    frame_scores : Tensor
        ``[T]`` real scores (higher = more relevant).
    n_select : int
        Frames to keep, ``>= 1``; ``n_select >= T`` keeps all frames.

    Returns
    -------
    Tensor
        ``[min(n_select, T)]`` int64 frame indices, ascending.
    """
    if frame_scores.ndim != 1:
        raise ValueError(f"frame_scores must be [T], got shape {tuple(frame_scores.shape)}")
    k = check_int("n_select", n_select, 1)
    n = frame_scores.shape[0]
    if k >= n:
        return torch.arange(n, dtype=torch.long, device=frame_scores.device)
    s = frame_scores.double()
    s = torch.where(torch.isnan(s), torch.full_like(s, float("-inf")), s)
    order = torch.sort(s, descending=True, stable=True).indices
    return torch.sort(order[:k]).values
