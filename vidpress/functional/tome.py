"""VideoChat-Flash clip compression: clip-joint bipartite soft matching (ToMe).

VideoChat-Flash, arXiv:2501.00574; also the front end of XComp (arXiv:2604.14149).

Frames are grouped into clips (4 or 8 frames). All patch tokens of a clip are
merged *jointly* by repeated bipartite soft matching (token merging, ToMe) down to
``target_per_frame`` tokens times the number of frames in the clip. One round:

1. metric = L2-normalised token features (optionally averaged over ``metric_heads``
   equal channel chunks first, as VideoChat-Flash does with the vision tower's head
   count);
2. set A = even-index tokens, set B = odd-index tokens; every A token's best B
   match by cosine similarity;
3. the ``r`` A tokens with the best matches merge into their B partner by
   size-weighted average (sizes start at 1 and add up);
4. output = ``[unmerged A, B]``.

``r = min(remaining - target, current // 2)`` per round, so the token count
halves until the last round lands exactly on the target.

Numerics: the metric and the merge are computed in float32 (float64 for float64
input; the reference works in the model dtype, e.g. bf16); the merged tokens are
cast back to the input dtype. The
merge is differentiable w.r.t. the tokens; the matching itself is not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vidpress.functional.checks import check_int

__all__ = [
    "tome_merge_schedule",
    "tome_clip_merge",
    "tome_merge_clips",
    "tome_video",
]

_ORDERS = ("reference", "original")


def tome_merge_schedule(num_tokens: int, target: int) -> list[int]:
    """Tokens removed in each bipartite-matching round (VideoChat-Flash, arXiv:2501.00574).

    ``r = min(current - target, current // 2)`` per round until ``current == target``.

    Parameters
    ----------
    num_tokens : int
        Tokens before merging, ``>= 1``.
    target : int
        Tokens after merging, ``1 <= target <= num_tokens``.

    Returns
    -------
    list[int]
        ``r`` of each round (empty when ``target == num_tokens``); sums to
        ``num_tokens - target``.
    """
    cur = check_int("num_tokens", num_tokens, 1)
    tgt = check_int("target", target, 1)
    if tgt > cur:
        raise ValueError(f"target ({tgt}) must be <= num_tokens ({cur})")
    out: list[int] = []
    while cur != tgt:
        r = min(cur - tgt, cur // 2)
        out.append(r)
        cur -= r
    return out


def _head_mean(m: Tensor, heads: int) -> Tensor:
    if heads == 1:
        return m
    b, n, c = m.shape
    return m.reshape(b, n, heads, c // heads).mean(dim=2)


def _merge_batched(
    x: Tensor,
    sizes: Tensor,
    metric: Tensor | None,
    target: int,
    metric_heads: int,
    unmerged_order: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Merge ``x [B, N, C]`` (float32) with ``sizes [B, N]`` to ``target`` tokens per batch row.

    Returns merged tokens ``[B, target, C]``, sizes ``[B, target]``, sources
    ``[B, N]`` (output slot of every input token) and representatives ``[B, target]``
    (the input token of each group never merged away: an unmerged A token, or the B
    token the group's A tokens went into).
    """
    bsz, n_tok, ch = x.shape
    device = x.device
    sources = torch.arange(n_tok, device=device).expand(bsz, n_tok).clone()
    representatives = sources.clone()
    for r in tome_merge_schedule(n_tok, target):
        cur = x.shape[1]
        n_a, n_b = (cur + 1) // 2, cur // 2
        with torch.no_grad():
            m = _head_mean(metric if metric is not None else x.detach(), metric_heads)
            m = F.normalize(m, dim=-1)
            sim = m[:, ::2] @ m[:, 1::2].transpose(1, 2)  # [B, Na, Nb]
            best, best_idx = sim.max(dim=-1)  # [B, Na]
            order = torch.sort(best, dim=-1, descending=True, stable=True).indices
            src_idx = order[:, :r]  # A tokens merged away
            unm_idx = order[:, r:]  # A tokens kept
            if unmerged_order == "original":
                unm_idx = torch.sort(unm_idx, dim=-1).values
            dst_idx = best_idx.gather(1, src_idx)  # their B partners
            n_unm = n_a - r

            slot_a = torch.empty(bsz, n_a, dtype=torch.long, device=device)
            slot_a.scatter_(1, unm_idx, torch.arange(n_unm, device=device).expand(bsz, n_unm))
            slot_a.scatter_(1, src_idx, n_unm + dst_idx)
            slot = torch.empty(bsz, cur, dtype=torch.long, device=device)
            slot[:, ::2] = slot_a
            slot[:, 1::2] = n_unm + torch.arange(n_b, device=device)
            sources = slot.gather(1, sources)
            representatives = torch.cat([representatives[:, ::2].gather(1, unm_idx), representatives[:, 1::2]], dim=1)

        def merge(t: Tensor) -> Tensor:
            """Size-weighted merge of a [B, cur, K] tensor (already multiplied by sizes)."""
            k = t.shape[-1]
            ta, tb = t[:, ::2], t[:, 1::2]
            unm = ta.gather(1, unm_idx[..., None].expand(bsz, n_unm, k))
            src = ta.gather(1, src_idx[..., None].expand(bsz, r, k))
            tb = tb.scatter_add(1, dst_idx[..., None].expand(bsz, r, k), src)
            return torch.cat([unm, tb], dim=1)

        w = sizes[..., None]
        new_sizes = merge(w)
        x = merge(x * w) / new_sizes
        if metric is not None:
            metric = merge(metric * w) / new_sizes
        sizes = new_sizes[..., 0]
    return x, sizes, sources, representatives


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _prepare(
    tokens: Tensor, num_frames: int | None, name: str = "tokens"
) -> tuple[Tensor, int]:
    if tokens.ndim == 3:
        if num_frames is not None and num_frames != tokens.shape[0]:
            raise ValueError(f"num_frames={num_frames} disagrees with {name} shape {tuple(tokens.shape)}")
        return tokens.reshape(-1, tokens.shape[-1]), tokens.shape[0]
    if tokens.ndim == 2:
        if num_frames is None:
            raise ValueError(f"num_frames is required for flattened [F*P, C] {name}")
        f = check_int("num_frames", num_frames, 1)
        if tokens.shape[0] % f != 0:
            raise ValueError(f"{tokens.shape[0]} tokens are not divisible by num_frames={f}")
        return tokens, f
    raise ValueError(f"{name} must be [F*P, C] or [F, P, C], got shape {tuple(tokens.shape)}")


def tome_clip_merge(
    tokens: Tensor,
    target_per_frame: int = 16,
    *,
    num_frames: int | None = None,
    sizes: Tensor | None = None,
    metric: Tensor | None = None,
    metric_heads: int = 1,
    unmerged_order: str = "reference",
    return_sources: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """Merge one clip's patch tokens jointly down to ``target_per_frame * F`` tokens.

    VideoChat-Flash clip compression (arXiv:2501.00574), repeated bipartite soft
    matching: see the module docstring for one round. The metric is recomputed
    every round from the current (merged) tokens; when a separate ``metric`` is
    given it is merged alongside the tokens with the same size-weighted average
    and re-normalised every round.

    Output order of a round is ``[unmerged A, B]``; B tokens keep their original
    relative order. The order of the unmerged A tokens is set by
    ``unmerged_order``:

    * ``"reference"`` (default, the released VideoChat-Flash / XComp code): sorted by
      decreasing best-match similarity (ToMe's ``argsort`` order; ties by original
      index). This order feeds the next round's even/odd split and the final token
      order the pretrained LLM saw.
    * ``"original"``: their original relative order.

    Parameters
    ----------
    tokens : Tensor
        ``[F * P, C]`` (frame-major flattened; needs ``num_frames``) or ``[F, P, C]``
        patch tokens of one clip.
    target_per_frame : int
        Tokens per frame after merging (default 16), ``1 <= target <= P``.
    num_frames : int, optional
        ``F``; required for flattened input, checked for ``[F, P, C]``.
    sizes : Tensor, optional
        ``[F * P]`` (or ``[F, P]``) positive initial token sizes; default all 1.
    metric : Tensor, optional
        ``[F * P, Cm]`` (or ``[F, P, Cm]``) features used for matching instead of
        ``tokens``.
    metric_heads : int
        Average the metric over this many equal channel chunks before normalising
        (VideoChat-Flash uses the vision tower's attention-head count); default 1.
    unmerged_order : {"reference", "original"}
        See above.
    return_sources : bool
        Also return the output slot of every input token.

    Returns
    -------
    merged : Tensor
        ``[F * target_per_frame, C]``, dtype of ``tokens``. When ``target_per_frame ==
        P`` the input is returned unchanged (flattened), in the same order.
    sizes : Tensor
        ``[F * target_per_frame]`` sizes (input sizes summed per output), float32
        (float64 for float64 tokens).
    sources : Tensor, only with ``return_sources``
        ``[F * P]`` int64: output slot of every input token. With unit initial
        sizes ``merged[j]`` is the mean of the inputs with ``sources == j``.
    """
    if unmerged_order not in _ORDERS:
        raise ValueError(f"unmerged_order must be one of {_ORDERS}, got {unmerged_order!r}")
    heads = check_int("metric_heads", metric_heads, 1)
    flat, n_frames = _prepare(tokens, num_frames)
    n_tok, ch = flat.shape
    per_frame = n_tok // n_frames
    tpf = check_int("target_per_frame", target_per_frame, 1)
    if tpf > per_frame:
        raise ValueError(f"target_per_frame ({tpf}) exceeds the {per_frame} tokens per frame")

    cdt = _compute_dtype(tokens.dtype)
    if sizes is None:
        s = torch.ones(1, n_tok, dtype=cdt, device=flat.device)
    else:
        s = sizes.reshape(1, -1).to(cdt)
        if s.shape[1] != n_tok:
            raise ValueError(f"sizes has {s.shape[1]} entries, expected {n_tok}")
        if bool((s <= 0).any()):
            raise ValueError("sizes must be positive")
    m = None
    if metric is not None:
        m_flat, _ = _prepare(metric, n_frames, "metric")
        if m_flat.shape[0] != n_tok:
            raise ValueError(f"metric has {m_flat.shape[0]} tokens, expected {n_tok}")
        m = m_flat.detach().to(cdt)[None]
    cm = m.shape[-1] if m is not None else ch
    if cm % heads != 0:
        raise ValueError(f"metric channels ({cm}) are not divisible by metric_heads ({heads})")

    merged, out_sizes, sources, _ = _merge_batched(
        flat.to(cdt)[None], s, m, tpf * n_frames, heads, unmerged_order
    )
    merged = merged[0].to(tokens.dtype) if tpf != per_frame else flat
    if return_sources:
        return merged, out_sizes[0], sources[0]
    return merged, out_sizes[0]


def tome_merge_clips(tokens: Tensor, target: int) -> tuple[Tensor, Tensor, Tensor]:
    """Merge each of B equal clips ``tokens [B, M, C]`` jointly to ``target`` tokens; what each token became.

    The merge of :func:`tome_clip_merge` (unit sizes, the tokens as the metric, ``"reference"`` order) on every
    batch row at once, in float32 (float64 for float64 input).

    Returns
    -------
    merged : ``[B, target, C]``, dtype of ``tokens``.
    sources : ``[B, M]`` int64, the output slot of every input token.
    representatives : ``[B, target]`` int64, for each output slot the input token of its group that was never
        merged away (an unmerged A token keeps its identity, a B token keeps its own with the A tokens it absorbed).
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be [B, M, C], got shape {tuple(tokens.shape)}")
    check_int("target", target, 1)
    cdt = _compute_dtype(tokens.dtype)
    sizes = torch.ones(tokens.shape[:2], dtype=cdt, device=tokens.device)
    merged, _, sources, representatives = _merge_batched(tokens.to(cdt), sizes, None, target, 1, "reference")
    return merged.to(tokens.dtype), sources, representatives


def tome_video(
    tokens: Tensor,
    clip_frames: int = 4,
    target_per_frame: int = 16,
    *,
    metric: Tensor | None = None,
    metric_heads: int = 1,
    unmerged_order: str = "reference",
    clips_per_batch: int = 16,
) -> Tensor:
    """VideoChat-Flash clip compression of a whole video: ``[T, P, C] -> [T, target, C]``.

    VideoChat-Flash, arXiv:2501.00574. The video is split into consecutive clips of
    ``clip_frames`` frames (the last clip may be shorter); each clip of ``F`` frames
    is merged jointly by :func:`tome_clip_merge` to ``F * target_per_frame`` tokens,
    which are then reshaped to ``[F, target_per_frame, C]`` *by count*, as
    VideoChat-Flash does: the output "frame" slots of a clip are not tied to the
    frame they came from (the clip is merged jointly, and output order is
    ``[unmerged A, B]`` of the last round). Clips of equal length are merged in
    batches of ``clips_per_batch`` (each batch holds ``clips_per_batch x (F*P/2)^2``
    similarity entries in float32).

    Parameters
    ----------
    tokens : Tensor
        ``[T, P, C]`` patch tokens of the whole video.
    clip_frames : int
        Frames per clip (VideoChat-Flash uses 4), ``>= 1``.
    target_per_frame : int
        Tokens per frame after merging (default 16), ``<= P``.
    metric : Tensor, optional
        ``[T, P, Cm]`` matching features instead of ``tokens``.
    metric_heads : int
        See :func:`tome_clip_merge`.
    unmerged_order : {"reference", "original"}
        See :func:`tome_clip_merge`.
    clips_per_batch : int
        Clips merged together in one batched call.

    Returns
    -------
    Tensor
        ``[T, target_per_frame, C]``, dtype of ``tokens``.
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be [T, P, C], got shape {tuple(tokens.shape)}")
    if unmerged_order not in _ORDERS:
        raise ValueError(f"unmerged_order must be one of {_ORDERS}, got {unmerged_order!r}")
    n_frames, per_frame, ch = tokens.shape
    cf = check_int("clip_frames", clip_frames, 1)
    tpf = check_int("target_per_frame", target_per_frame, 1)
    heads = check_int("metric_heads", metric_heads, 1)
    per_batch = check_int("clips_per_batch", clips_per_batch, 1)
    if tpf > per_frame:
        raise ValueError(f"target_per_frame ({tpf}) exceeds the {per_frame} tokens per frame")
    if metric is not None and (metric.ndim != 3 or metric.shape[:2] != tokens.shape[:2]):
        raise ValueError(f"metric must be [T, P, Cm] matching tokens, got {tuple(metric.shape)}")
    cm = metric.shape[-1] if metric is not None else ch
    if cm % heads != 0:
        raise ValueError(f"metric channels ({cm}) are not divisible by metric_heads ({heads})")
    if n_frames == 0 or tpf == per_frame:
        return tokens

    outputs: list[Tensor] = []

    def run(f0: int, n_clips: int, f_clip: int) -> None:
        f1 = f0 + n_clips * f_clip
        cdt = _compute_dtype(tokens.dtype)
        x = tokens[f0:f1].reshape(n_clips, f_clip * per_frame, ch).to(cdt)
        m = None
        if metric is not None:
            m = metric[f0:f1].reshape(n_clips, f_clip * per_frame, cm).detach().to(cdt)
        s = torch.ones(n_clips, f_clip * per_frame, dtype=cdt, device=tokens.device)
        merged, _, _, _ = _merge_batched(x, s, m, f_clip * tpf, heads, unmerged_order)
        outputs.append(merged.reshape(n_clips * f_clip, tpf, ch).to(tokens.dtype))

    n_full = n_frames // cf
    for c0 in range(0, n_full, per_batch):
        run(c0 * cf, min(per_batch, n_full - c0), cf)
    rest = n_frames - n_full * cf
    if rest:
        run(n_full * cf, 1, rest)
    return torch.cat(outputs, dim=0)
