"""XComp LP-Comp: the per-layer token schedule and which tokens survive a drop.

XComp, "One Token per Highly Selective Frame", arXiv:2604.14149 (NeurIPS 2025).

LP-Comp compresses the video span of the LLM input progressively *inside* the
decoder. The span is viewed as ``T`` frames of ``N1`` consecutive tokens each
(``N1 = 16`` for VideoChat-Flash, whose "frames" are consecutive groups of 16
merged tokens of a clip). Right before certain decoder layers every frame drops
some of its tokens, down to one token per frame at the last layers. Text tokens
are never dropped.

This module holds only the model-agnostic arithmetic:

* :func:`lpcomp_schedule`: tokens per frame seen by each decoder layer;
* :func:`lpcomp_drop_layers`: the layers right before which a drop happens;
* :func:`lpcomp_keep_indices`: the indices (into the video span) that survive a
  drop from ``tokens_before`` to ``tokens_after`` tokens per frame.

Indexing convention (both roundings)
------------------------------------
Layers are 0-based, ``j = 0 .. L-1``, and layer ``j`` sees the schedule value at
``i = j + 1`` (``i = 1 .. L``). This is the released code's convention: it
builds its drop list from ``goal(i) != goal(i + 1)`` and applies drop ``i`` after
layer ``i - 1`` has run, i.e. right before layer ``i``. For ``N1 = 16``,
``L = 28`` this gives the released schedule::

    16,16,16,15,15,14,14,13,12,12,11,10,9,9,8,7,6,5,5,4,3,3,2,2,1,1,1,1

A drop can only happen after a layer has run, so layer 0 always sees all
``N1`` tokens: entry 0 is pinned to ``N1`` (for ``16/28`` and any setting where
the formula already gives ``N1`` at ``i = 1`` this changes nothing).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from vidpress.functional.checks import check_int

__all__ = [
    "lpcomp_schedule",
    "lpcomp_drop_layers",
    "lpcomp_keep_indices",
]

_ROUNDINGS = ("round", "ceil")
_KEEP_MODES = ("suffix", "uniform")


def lpcomp_schedule(tokens_per_frame: int, num_layers: int, rounding: str = "round") -> list[int]:
    """Tokens per frame seen by every 0-based decoder layer (XComp LP-Comp cosine schedule).

    XComp, arXiv:2604.14149. With ``N1 = tokens_per_frame`` and ``L = num_layers``,
    layer ``j`` (0-based) sees ``g(j + 1)`` tokens per frame, where

    * ``rounding="round"`` (released code, the default)::

          g(i) = 1 + int((N1 - 1) * 0.5 * (1 + cos(i / L * pi)) + 0.5)

      evaluated with exactly that floating-point expression, as the reference
      does. For ``N1 = 16, L = 28``:
      ``16,16,16,15,15,14,14,13,12,12,11,10,9,9,8,7,6,5,5,4,3,3,2,2,1,1,1,1``.

    * ``rounding="ceil"`` (the paper's typeset formula)::

          N(l) = ceil((N1 - 1) / 2 * cos(l * pi / L) + (N1 + 1) / 2),   l = j + 1

      which reaches 1 only at the last layer (``l = L``: ``cos(pi) = -1`` gives
      exactly 1) and ``N1`` at layer 0 whenever ``L`` is not tiny. The paper
      writes the index as ``l = 0..L-1``; taken literally (``l = j``) that never
      reaches 1 (for 16/28 the last layer would get 2), so the same ``i = j + 1``
      shift as the released code is used. A ``1e-9`` tolerance is subtracted
      before the ceiling so that values that are integers up to rounding error
      (e.g. ``cos(pi/3)``) are not bumped up by one.

    Entry 0 is always ``N1`` (a drop happens after a layer has run, never before
    layer 0). The result is non-increasing, starts at ``N1`` and ends at 1.

    Parameters
    ----------
    tokens_per_frame : int
        ``N1 >= 1``, tokens per frame entering the decoder.
    num_layers : int
        ``L >= 1``, number of decoder layers.
    rounding : {"round", "ceil"}
        ``"round"`` = released code (default), ``"ceil"`` = paper formula.

    Returns
    -------
    list[int]
        ``[L]`` tokens per frame seen by layers ``0 .. L-1``.

    Raises
    ------
    ValueError
        On non-integer / non-positive sizes or an unknown rounding.
    """
    n1 = check_int("tokens_per_frame", tokens_per_frame, 1)
    n_layers = check_int("num_layers", num_layers, 1)
    if rounding not in _ROUNDINGS:
        raise ValueError(f"rounding must be one of {_ROUNDINGS}, got {rounding!r}")

    out: list[int] = []
    for j in range(n_layers):
        i = j + 1
        if rounding == "round":
            value = 1 + int((n1 - 1) * 0.5 * (1 + math.cos(i / n_layers * math.pi)) + 0.5)
        else:
            value = math.ceil((n1 - 1) / 2 * math.cos(i * math.pi / n_layers) + (n1 + 1) / 2 - 1e-9)
        out.append(max(1, min(n1, value)))
    out[0] = n1
    # Both formulas are monotone in i; this only guards against floating-point noise.
    for j in range(1, n_layers):
        out[j] = min(out[j], out[j - 1])
    return out


def lpcomp_drop_layers(schedule: Sequence[int]) -> list[int]:
    """0-based layer indices right before which the tokens per frame decrease.

    XComp LP-Comp, arXiv:2604.14149. Layer ``j`` is listed iff
    ``schedule[j] < schedule[j - 1]``; layer 0 is never listed. For the released
    ``16/28`` schedule: ``3,5,7,8,10,11,12,14,15,16,17,19,20,22,24``.

    Parameters
    ----------
    schedule : Sequence[int]
        ``[L]`` non-increasing positive tokens per frame, as from :func:`lpcomp_schedule`.

    Returns
    -------
    list[int]
        Sorted layer indices in ``1 .. L-1``.

    Raises
    ------
    ValueError
        If the schedule is empty, has a non-positive entry or increases.
    """
    values = [int(v) for v in schedule]
    if not values:
        raise ValueError("schedule must not be empty")
    if any(v < 1 for v in values):
        raise ValueError(f"schedule entries must be >= 1, got {values}")
    drops: list[int] = []
    for j in range(1, len(values)):
        if values[j] > values[j - 1]:
            raise ValueError(f"schedule must be non-increasing, got {values}")
        if values[j] < values[j - 1]:
            drops.append(j)
    return drops


def _local_keep(tokens_before: int, tokens_after: int, keep: str) -> list[int]:
    if keep == "suffix":
        return list(range(tokens_before - tokens_after, tokens_before))
    # uniform: positions round((j + 1) * before / after - 1), j = 0..after-1, rounding half
    # up, in exact integer arithmetic: floor((2 (j+1) before - after) / (2 after)).
    return [(2 * (j + 1) * tokens_before - tokens_after) // (2 * tokens_after) for j in range(tokens_after)]


def lpcomp_keep_indices(
    num_frames: int,
    tokens_before: int,
    tokens_after: int,
    keep: str = "suffix",
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Indices into a video span that survive one LP-Comp drop.

    XComp, arXiv:2604.14149. The span is ``num_frames`` consecutive groups of
    ``tokens_before`` tokens (frame ``f`` occupies ``[f * tokens_before,
    (f + 1) * tokens_before)``); each frame keeps ``tokens_after`` of its tokens.

    * ``keep="suffix"`` (the paper's "suffix preservation", the default): the
      LAST ``tokens_after`` tokens of each frame. Under causal attention the later
      tokens of a frame have already attended to the earlier ones.
    * ``keep="uniform"`` (the paper's weaker ablation): ``tokens_after`` evenly
      spaced tokens that always include the frame's last token. Local position
      ``j = 0 .. tokens_after-1`` keeps token
      ``round_half_up((j + 1) * tokens_before / tokens_after - 1)``; e.g. 16 -> 4
      keeps local tokens ``3, 7, 11, 15`` and 16 -> 1 keeps ``15``. This is the
      grid the released code targets (it aims at 1-based ids
      ``(j + 1) / n * 16``), but evaluated afresh on the current tokens rather
      than by the reference's greedy path-dependent removal over layers.

    Parameters
    ----------
    num_frames : int
        ``T >= 0`` frames in the span.
    tokens_before : int
        Tokens per frame before the drop, ``>= 1``.
    tokens_after : int
        Tokens per frame after the drop, ``1 <= tokens_after <= tokens_before``.
    keep : {"suffix", "uniform"}
        Which tokens of each frame survive.
    device : torch.device or str, optional
        Device of the returned tensor.

    Returns
    -------
    Tensor
        ``[num_frames * tokens_after]`` int64 indices into the span, sorted ascending.

    Raises
    ------
    ValueError
        On invalid sizes or an unknown ``keep``.
    """
    n_frames = check_int("num_frames", num_frames, 0)
    before = check_int("tokens_before", tokens_before, 1)
    after = check_int("tokens_after", tokens_after, 1)
    if after > before:
        raise ValueError(f"tokens_after ({after}) must be <= tokens_before ({before})")
    if keep not in _KEEP_MODES:
        raise ValueError(f"keep must be one of {_KEEP_MODES}, got {keep!r}")
    local = torch.tensor(_local_keep(before, after, keep), dtype=torch.long, device=device)
    offsets = torch.arange(n_frames, dtype=torch.long, device=device) * before
    return (offsets[:, None] + local[None, :]).reshape(-1)
