"""Tests of the functional ReTaKe / AdaReTaKe cores (DPSelect, PivotKV, AdaReTaKe budgets)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from vidpress.functional.adaretake import (
    chunk_distances,
    layer_budgets,
    prompt_guided_scores,
    temporal_budgets,
)
from vidpress.functional.dpselect import (
    dpselect,
    dpselect_num_keep,
    frame_distances,
    window_peaks,
)
from vidpress.functional.pivotkv import (
    dynamic_ratio,
    keep_indices_from_scores,
    pivotkv_keep,
    pivotkv_keep_len,
    pivotkv_scores,
    reforge_temporal_ids,
    rotate,
    rotate_half,
    unrotate,
)


# ----------------------------------------------------------------------------- helpers


def features_from_distances(dist: list[list[float]]) -> torch.Tensor:
    """[T, N, 2] unit features whose consecutive cosine distances are exactly ``dist`` ([T-1][N])."""
    num_tokens = len(dist[0])
    angles = torch.zeros(len(dist) + 1, num_tokens, dtype=torch.float64)
    for t, row in enumerate(dist, start=1):
        for n, d in enumerate(row):
            angles[t, n] = angles[t - 1, n] + math.acos(1.0 - d)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def exact_features(columns: list[list[int]]) -> torch.Tensor:
    """[T, N, 2] features from quarter-turn codes (0: +x, 1: +y, 2: -x, 3: -y), one list per token.

    Consecutive cosine distances are then exactly 0, 1 or 2, so ties are exact.
    """
    table = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)]
    cols = [[table[c] for c in col] for col in columns]
    return torch.tensor(cols).transpose(0, 1).contiguous()


def slow_peaks(curve: list[float], window: int) -> list[bool]:
    """max_pool1d(kernel=window, stride=1, padding=window//2, return_indices) semantics, earliest wins."""
    half = window // 2
    out = []
    for t in range(len(curve)):
        best = None
        for s in range(t - half, t + half + 1):
            if 0 <= s < len(curve) and (best is None or curve[s] > curve[best]):
                best = s
        out.append(best == t)
    return out


def slow_dpselect(features: torch.Tensor, num_keep: int, window: int, sync: bool):
    num_frames, num_tokens, _ = features.shape
    m = features.double()
    dist = [[1.0] * num_tokens]
    for t in range(1, num_frames):
        row = []
        for n in range(num_tokens):
            a, b = m[t - 1, n], m[t, n]
            row.append(1.0 - float(a @ b / (a.norm() * b.norm())))
        dist.append(row)

    def select(curve):
        peaks = slow_peaks(curve, window)
        score = [c + (2.0 if p else 0.0) for c, p in zip(curve, peaks)]
        order = sorted(range(num_frames), key=lambda t: (-score[t], t))
        kept = sorted(order[:num_keep])
        return kept, [peaks[t] for t in kept]

    if sync:
        curve = [sum(row) / num_tokens for row in dist]
        kept, piv = select(curve)
        return torch.tensor(kept), torch.tensor(piv)[:, None].expand(num_keep, num_tokens)
    keep = torch.zeros(num_keep, num_tokens, dtype=torch.long)
    pmask = torch.zeros(num_keep, num_tokens, dtype=torch.bool)
    for n in range(num_tokens):
        kept, piv = select([dist[t][n] for t in range(num_frames)])
        keep[:, n] = torch.tensor(kept)
        pmask[:, n] = torch.tensor(piv)
    return keep, pmask


def dense_scores(query, key, scaling=None, causal_extra=None):
    """Reference: explicit repeat_interleave of keys, full attention matrix."""
    num_heads, num_kv = query.shape[1], key.shape[1]
    d = query.shape[-1]
    scaling = 1.0 / math.sqrt(d) if scaling is None else scaling
    q = query[0].double()
    k = key[0].double().repeat_interleave(num_heads // num_kv, dim=0)
    if causal_extra is not None:
        xk = causal_extra[0].double().repeat_interleave(num_heads // num_kv, dim=0)
        k_all = torch.cat([k, xk], dim=1)
        logits = q @ k_all.transpose(1, 2) * scaling
        lq, lk = q.shape[1], k.shape[1]
        mask = torch.ones(lq, lk + lq, dtype=torch.bool)
        mask[:, lk:] = torch.tril(torch.ones(lq, lq, dtype=torch.bool))
        logits = logits.masked_fill(~mask, float("-inf"))
        attn = logits.softmax(-1)[:, :, :lk]
    else:
        attn = (q @ k.transpose(1, 2) * scaling).softmax(-1)
    per_head = attn.sum(1)  # [H, L]
    return per_head.mean(0)


# ----------------------------------------------------------------------------- DPSelect


def test_frame_distances_values():
    dist = [[0.5, 0.1], [0.2, 0.9]]
    feats = features_from_distances(dist).float()
    d = frame_distances(feats)
    assert d.dtype == torch.float32 and d.shape == (3, 2)
    expected = torch.tensor([[1.0, 1.0], [0.5, 0.1], [0.2, 0.9]])
    torch.testing.assert_close(d, expected, atol=1e-5, rtol=0)
    # bf16 input is upcast: still float32 output
    assert frame_distances(feats.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("block", [1, 3, 7, 256])
def test_frame_distances_in_blocks_equal_the_whole_video(block, monkeypatch):
    monkeypatch.setattr(importlib.import_module("vidpress.functional.dpselect"), "DISTANCE_BLOCK_FRAMES", block)
    feats = torch.randn(10, 4, 6, generator=torch.Generator().manual_seed(3)).bfloat16()
    whole = 1.0 - torch.nn.functional.cosine_similarity(feats[:-1].float(), feats[1:].float(), dim=-1)
    assert torch.equal(frame_distances(feats), torch.cat([torch.ones(1, 4), whole]))


def test_window_peaks_tie_rule_earliest_wins():
    # equal neighbours: only the first is a peak
    assert window_peaks(torch.tensor([0.0, 1.0, 1.0, 0.0])).tolist() == [False, True, False, False]
    # a plateau of three: only its first element
    assert window_peaks(torch.tensor([1.0, 1.0, 1.0])).tolist() == [True, False, False]
    # edges compare with real neighbours only (padding never wins), all-zero curve
    assert window_peaks(torch.tensor([0.0, 0.0])).tolist() == [True, False]
    assert window_peaks(torch.tensor([0.3])).tolist() == [True]
    # a value equal to an EARLIER neighbour is not a peak; equal to a LATER one it is
    assert window_peaks(torch.tensor([2.0, 2.0, 1.0, 3.0, 3.0])).tolist() == [True, False, False, True, False]


def test_window_peaks_matches_max_pool1d_on_distinct_values():
    torch.manual_seed(0)
    for window in (1, 3, 5, 7):
        curve = torch.rand(40)
        idx = F.max_pool1d(curve[None, None], window, 1, padding=window // 2, return_indices=True)[1][0, 0]
        expected = idx == torch.arange(40)
        assert torch.equal(window_peaks(curve, window), expected)


def test_window_peaks_larger_window_and_columns():
    curve = [0.1, 0.5, 0.4, 0.6, 0.2, 0.2, 0.9, 0.9, 0.3]
    for window in (3, 5, 9):
        assert window_peaks(torch.tensor(curve), window).tolist() == slow_peaks(curve, window)
    cols = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    assert window_peaks(cols).tolist() == [[False, True], [True, False], [False, True]]
    with pytest.raises(ValueError):
        window_peaks(torch.tensor(curve), 4)


def test_dpselect_sync_hand_example_peak_bonus_changes_ranking():
    # distances (frame 0 is 1.0): [1.0, 0.8, 0.9, 0.2, 0.6, 0.5]
    # peaks (window 3): t=0 (1.0 > 0.8), t=2 (0.9 > 0.8, 0.2), t=4 (0.6 > 0.2, 0.5)
    feats = features_from_distances([[0.8], [0.9], [0.2], [0.6], [0.5]]).float()
    keep, piv = dpselect(feats, 3, sync=True)
    # without +2 the top 3 by distance would be {0, 2, 1} (0.8 beats 0.6)
    assert keep.tolist() == [0, 2, 4]
    assert piv.shape == (3, 1) and piv.all()
    keep4, piv4 = dpselect(feats, 4, sync=True)
    assert keep4.tolist() == [0, 1, 2, 4]
    assert piv4[:, 0].tolist() == [True, False, True, True]


def test_dpselect_sync_averages_over_tokens():
    # exact distances: token 0 [1, 0, 2, 0], token 1 [1, 0, 0, 1] -> mean [1, 0, 1, 0.5]
    feats = exact_features([[0, 0, 2, 2], [0, 0, 0, 1]])
    assert frame_distances(feats).T.tolist() == [[1.0, 0.0, 2.0, 0.0], [1.0, 0.0, 0.0, 1.0]]
    keep, piv = dpselect(feats, 2, sync=True)
    assert keep.tolist() == [0, 2]  # token 1 alone would keep [0, 3]
    assert piv.tolist() == [[True, True], [True, True]]
    keep3, piv3 = dpselect(feats, 3, sync=True)
    assert keep3.tolist() == [0, 2, 3]
    assert piv3.tolist() == [[True, True], [True, True], [False, False]]
    keep_a, piv_a = dpselect(feats, 2, sync=False)
    assert keep_a.tolist() == [[0, 0], [2, 3]]
    assert piv_a.all()


def test_dpselect_tie_rule_in_selection():
    # exact curve [1, 0, 1, 1, 0]: t=2 is a peak, t=3 is not (equal earlier neighbour)
    feats = exact_features([[0, 0, 1, 2, 2]])
    assert frame_distances(feats)[:, 0].tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]
    keep, piv = dpselect(feats, 2, sync=True)
    assert keep.tolist() == [0, 2]  # "latest wins" would pick t=3
    assert piv[:, 0].tolist() == [True, True]
    keep3, piv3 = dpselect(feats, 3, sync=True)
    assert keep3.tolist() == [0, 2, 3]
    assert piv3[:, 0].tolist() == [True, True, False]
    keep_a, piv_a = dpselect(feats, 3, sync=False)
    assert keep_a[:, 0].tolist() == [0, 2, 3] and piv_a[:, 0].tolist() == [True, True, False]


def test_dpselect_async_hand_example():
    # col 0: [1.0, 0.2, 0.9, 0.3]  peaks t=0, t=2
    # col 1: [1.0, 0.7, 0.8, 0.95] peaks t=0, t=3
    feats = features_from_distances([[0.2, 0.7], [0.9, 0.8], [0.3, 0.95]]).float()
    keep, piv = dpselect(feats, 2, sync=False)
    assert keep.tolist() == [[0, 0], [2, 3]]
    assert piv.all()
    keep3, piv3 = dpselect(feats, 3)
    assert keep3.tolist() == [[0, 0], [2, 2], [3, 3]]
    assert piv3.tolist() == [[True, True], [True, False], [False, True]]


def test_dpselect_keep_all_gives_pivots_only():
    torch.manual_seed(1)
    feats = torch.randn(9, 5, 8)
    for sync in (False, True):
        keep, piv = dpselect(feats, 9, sync=sync)
        expected = torch.arange(9) if sync else torch.arange(9)[:, None].expand(9, 5)
        assert torch.equal(keep, expected)
        d = frame_distances(feats)
        peaks = window_peaks(d.mean(1))[:, None].expand(9, 5) if sync else window_peaks(d)
        assert torch.equal(piv, peaks)


@pytest.mark.parametrize("sync", [False, True])
@pytest.mark.parametrize("window", [3, 5])
def test_dpselect_against_slow_reference(sync, window):
    gen = torch.Generator().manual_seed(7 + window + int(sync))
    for trial in range(6):
        num_frames = 3 + trial * 3
        feats = torch.randn(num_frames, 4, 6, generator=gen)
        if trial % 2:  # repeated frames create exact ties in the distance curve
            feats[2] = feats[1]
            feats[num_frames - 1] = feats[num_frames - 2]
        for num_keep in (1, max(1, num_frames // 2), num_frames):
            keep, piv = dpselect(feats, num_keep, window=window, sync=sync)
            ref_keep, ref_piv = slow_dpselect(feats, num_keep, window, sync)
            assert torch.equal(keep, ref_keep)
            assert torch.equal(piv, ref_piv)
            # sorted in time (per column when async), distinct
            assert bool((keep[1:] > keep[:-1]).all())
            assert keep.dtype == torch.long and piv.dtype == torch.bool
            assert piv.shape == (num_keep, 4)


def test_dpselect_dtypes_and_errors():
    feats = torch.randn(6, 3, 4)
    k32, p32 = dpselect(feats, 3)
    k16, p16 = dpselect(feats.to(torch.float64), 3)
    assert torch.equal(k32, k16) and torch.equal(p32, p16)
    with pytest.raises(ValueError):
        dpselect(feats, 0)
    with pytest.raises(ValueError):
        dpselect(feats, 7)
    with pytest.raises(ValueError):
        dpselect(feats, 3, window=2)


def test_dpselect_num_keep():
    assert dpselect_num_keep(10, 0.5) == 5
    assert dpselect_num_keep(10, 0.0) == 1
    assert dpselect_num_keep(10, 1.0) == 10
    assert dpselect_num_keep(7, 0.3) == 2  # round(2.1)
    assert dpselect_num_keep(5, 0.5) == 2  # round(2.5) -> 2, Python's half-to-even
    assert dpselect_num_keep(3, 0.9) == 3
    with pytest.raises(ValueError):
        dpselect_num_keep(0, 0.5)


# ----------------------------------------------------------------------------- PivotKV scores


def make_qk(num_heads=4, num_kv=2, length=13, dim=8, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, num_heads, length, dim, generator=gen) * scale
    k = torch.randn(1, num_kv, length, dim, generator=gen) * scale
    return q, k


def test_pivotkv_scores_mean_is_one_without_pivots():
    q, k = make_qk(length=17)
    s = pivotkv_scores(q, k)
    assert s.shape == (17,) and s.dtype == torch.float32
    assert abs(s.mean().item() - 1.0) < 1e-5
    assert not torch.allclose(s, torch.ones_like(s))


@pytest.mark.parametrize("num_heads,num_kv", [(4, 4), (4, 2), (6, 2), (4, 1)])
def test_pivotkv_scores_against_dense(num_heads, num_kv):
    q, k = make_qk(num_heads, num_kv, length=11, dim=6, seed=num_heads + num_kv)
    torch.testing.assert_close(pivotkv_scores(q, k).double(), dense_scores(q, k), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        pivotkv_scores(q, k, scaling=0.05).double(), dense_scores(q, k, scaling=0.05), atol=1e-5, rtol=1e-5
    )


def test_pivotkv_gqa_grouping_order():
    # H=4, H_kv=2: heads 0,1 read kv head 0; heads 2,3 read kv head 1 (repeat_kv order).
    q, k = make_qk(4, 2, length=9, dim=4, seed=3)
    s = pivotkv_scores(q, k)
    torch.testing.assert_close(s.double(), dense_scores(q, k), atol=1e-5, rtol=1e-5)
    # the interleaved ("repeat" / tile) order would pair heads 0,2 with kv 0: must differ
    k_tiled = k[0].repeat(2, 1, 1)  # kv order 0,1,0,1
    q0 = q[0].double()
    attn = (q0 @ k_tiled.double().transpose(1, 2) / 2.0).softmax(-1)
    wrong = attn.sum(1).mean(0)
    assert not torch.allclose(s.double(), wrong, atol=1e-3)
    # single-head checks: kv head 1 alone explains query heads 2 and 3
    s23 = pivotkv_scores(q[:, 2:], k[:, 1:])
    s01 = pivotkv_scores(q[:, :2], k[:, :1])
    torch.testing.assert_close(s, (s01 + s23) / 2, atol=1e-6, rtol=1e-6)


def test_pivotkv_scores_pivots_set_to_one():
    q, k = make_qk(length=10)
    pivots = torch.zeros(10, dtype=torch.bool)
    pivots[[1, 4, 9]] = True
    s = pivotkv_scores(q, k)
    sp = pivotkv_scores(q, k, pivots)
    assert torch.all(sp[pivots] == 1.0)
    assert torch.equal(sp[~pivots], s[~pivots])


def test_pivotkv_scores_blocked_equals_unblocked():
    q, k = make_qk(8, 2, length=37, dim=16, seed=5)
    full = pivotkv_scores(q, k, query_block=10_000)
    for block in (1, 5, 16, 36, 37):
        torch.testing.assert_close(pivotkv_scores(q, k, query_block=block), full, atol=1e-6, rtol=1e-6)


def test_pivotkv_scores_memory_is_blocked(monkeypatch):
    # every [., ., L]-wide product must be at most one [H, query_block, L] block
    q, k = make_qk(8, 2, length=50, dim=4, seed=6)
    sizes = []
    real_bmm = torch.bmm

    def spy(a, b, *args, **kwargs):
        out = real_bmm(a, b, *args, **kwargs)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(torch, "bmm", spy)
    pivotkv_scores(q, k, query_block=7)
    assert sizes and max(sizes) <= 8 * 7 * 50
    assert len(sizes) == math.ceil(50 / 7)


def test_pivotkv_scores_low_precision_inputs():
    q, k = make_qk(length=15)
    s16 = pivotkv_scores(q.bfloat16(), k.bfloat16())
    assert s16.dtype == torch.float32
    torch.testing.assert_close(s16.double(), dense_scores(q.bfloat16(), k.bfloat16()), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_scores_tensor_core_products_equal_float32(dtype):
    # on CUDA half-precision Q and K are multiplied on tensor cores with float32 accumulation: the float32
    # scores of the upcast inputs up to summation order (chunk-sized, several query blocks)
    q, k = make_qk(28, 4, length=700, dim=128, seed=7, scale=1.0)
    q, k = q.to("cuda", dtype), k.to("cuda", dtype)
    reference = pivotkv_scores(q.float(), k.float(), query_block=256)
    fast = pivotkv_scores(q, k, query_block=256)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-4)
    kq = torch.randn(1, 4, 40, 128, device="cuda").to(dtype)
    guided = prompt_guided_scores(q[:, :, :40], k, key_question=kq)
    guided_reference = prompt_guided_scores(q[:, :, :40].float(), k.float(), key_question=kq.float())
    torch.testing.assert_close(guided, guided_reference, atol=1e-5, rtol=1e-4)


def test_pivotkv_scores_shape_errors():
    q, k = make_qk(3, 2)
    with pytest.raises(ValueError):
        pivotkv_scores(q, k)
    q, k = make_qk()
    with pytest.raises(ValueError):
        pivotkv_scores(q, k, torch.zeros(5, dtype=torch.bool))


# ----------------------------------------------------------------------------- PivotKV keep


def test_pivotkv_keep_sorted_length_and_topk():
    q, k = make_qk(length=20, seed=11)
    s = pivotkv_scores(q, k)
    keep = pivotkv_keep(q, k, 6)
    assert keep.shape == (6,) and keep.dtype == torch.long
    assert bool((keep[1:] > keep[:-1]).all())
    assert set(keep.tolist()) == set(torch.topk(s, 6).indices.tolist())
    assert torch.equal(pivotkv_keep(q, k, 20), torch.arange(20))


def test_pivotkv_keep_soft_pivots_follow_reference():
    q, k = make_qk(length=20, seed=12)
    s = pivotkv_scores(q, k)
    pivots = torch.zeros(20, dtype=torch.bool)
    low = torch.argsort(s)[:3]  # the three least-attended tokens
    pivots[low] = True
    soft = pivotkv_keep(q, k, 8, pivots)
    expected = torch.sort(torch.topk(s.masked_fill(pivots, 1.0), 8).indices).values
    assert torch.equal(soft, expected)


def test_pivotkv_keep_hard_pivots():
    q, k = make_qk(length=20, seed=13)
    s = pivotkv_scores(q, k)
    pivots = torch.zeros(20, dtype=torch.bool)
    low = torch.argsort(s)[:4]
    pivots[low] = True
    # pivots fit: all kept, the rest is the best non-pivots
    hard = pivotkv_keep(q, k, 7, pivots, hard_pivots=True)
    assert bool((hard[1:] > hard[:-1]).all()) and hard.shape == (7,)
    assert set(low.tolist()) <= set(hard.tolist())
    non_piv = torch.argsort(s.masked_fill(pivots, float("-inf")), descending=True)[:3]
    assert set(hard.tolist()) == set(low.tolist()) | set(non_piv.tolist())
    # soft mode (reference) would not keep all of those least-attended pivots here
    soft = pivotkv_keep(q, k, 7, pivots)
    assert not set(low.tolist()) <= set(soft.tolist())
    # more pivots than room: the best-scoring pivots
    few = pivotkv_keep(q, k, 2, pivots, hard_pivots=True)
    best_piv = low[torch.argsort(s[low], descending=True)[:2]]
    assert few.tolist() == sorted(best_piv.tolist())


def test_keep_indices_from_scores_ties_prefer_earlier():
    scores = torch.tensor([0.5, 1.0, 1.0, 0.2, 1.0])
    assert keep_indices_from_scores(scores, 2).tolist() == [1, 2]
    piv = torch.tensor([False, False, False, True, True])
    assert keep_indices_from_scores(scores, 2, piv, hard_pivots=True).tolist() == [3, 4]
    assert keep_indices_from_scores(scores, 3, piv, hard_pivots=True).tolist() == [1, 3, 4]
    assert keep_indices_from_scores(scores, 0).tolist() == []
    with pytest.raises(ValueError):
        keep_indices_from_scores(scores, 6)


def test_keep_len_and_dynamic_ratio():
    assert pivotkv_keep_len(100, 0.25) == 25
    assert pivotkv_keep_len(10, 0.05) == 1
    assert pivotkv_keep_len(7, 0.5) == 3  # int truncates
    assert pivotkv_keep_len(9, 1.0) == 9
    assert dynamic_ratio(64000, 32000) == 0.5
    assert dynamic_ratio(10000, 32000) == 1.0
    with pytest.raises(ValueError):
        dynamic_ratio(0, 100)


# ----------------------------------------------------------------------------- position reforge / RoPE


def test_reforge_temporal_ids_hand_example():
    # L = 8 tokens, two per temporal id 10..13, keep K = 4
    t_ids = torch.tensor([10, 10, 11, 11, 12, 12, 13, 13])
    keep = torch.tensor([0, 3, 4, 7])
    out = reforge_temporal_ids(t_ids, keep, 10)
    # 10 + floor((t - 10) * 4 / 8): t = 10, 11, 12, 13 -> 10, 10, 11, 11
    assert out.tolist() == [10, 10, 11, 11]
    assert out.dtype == t_ids.dtype
    assert reforge_temporal_ids(t_ids, keep, torch.tensor(10), new_t0=20).tolist() == [20, 20, 21, 21]
    # keep all: unchanged
    assert torch.equal(reforge_temporal_ids(t_ids, torch.arange(8), 10), t_ids)


def test_reforge_temporal_ids_monotone_and_in_range():
    gen = torch.Generator().manual_seed(4)
    for _ in range(20):
        frames = int(torch.randint(1, 9, (1,), generator=gen))
        per = int(torch.randint(1, 6, (1,), generator=gen))
        t0 = int(torch.randint(0, 50, (1,), generator=gen))
        t_ids = torch.arange(t0, t0 + frames).repeat_interleave(per)
        length = t_ids.shape[0]
        num_keep = int(torch.randint(1, length + 1, (1,), generator=gen))
        keep = torch.sort(torch.randperm(length, generator=gen)[:num_keep]).values
        out = reforge_temporal_ids(t_ids, keep, t0)
        assert out.shape == (num_keep,)
        assert bool((out[1:] >= out[:-1]).all())
        assert out.min() >= t0 and out.max() <= t_ids.max()
        assert out.max() - t0 <= (t_ids.max() - t0) * num_keep // length
        outf = reforge_temporal_ids(t_ids.double(), keep, t0)
        assert torch.equal(outf.long(), out)


def rope_cos_sin(length, dim, base=10000.0, offset=0, scale=1.0):
    inv = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    pos = torch.arange(offset, offset + length, dtype=torch.float64)
    freqs = torch.outer(pos, inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return (emb.cos() * scale).float(), (emb.sin() * scale).float()


def test_rotate_matches_transformers_convention():
    x = torch.randn(1, 3, 5, 8)
    cos, sin = rope_cos_sin(5, 8, offset=3)
    got = rotate(x, cos[None, None], sin[None, None])
    x1, x2 = x[..., :4], x[..., 4:]
    expected = x * cos + torch.cat([-x2, x1], dim=-1) * sin
    torch.testing.assert_close(got, expected)
    assert torch.equal(rotate_half(x), torch.cat([-x2, x1], dim=-1))
    # relative-position property: <R(p) q, R(p) k> is position independent
    c2, s2 = rope_cos_sin(5, 8, offset=40)
    a = (rotate(x, cos, sin) * rotate(x.flip(2), cos, sin)).sum(-1)
    b = (rotate(x, c2, s2) * rotate(x.flip(2), c2, s2)).sum(-1)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_unrotate_inverts_rotate():
    x = torch.randn(1, 4, 6, 16)
    cos, sin = rope_cos_sin(6, 16, offset=1000)
    y = rotate(x, cos, sin)
    assert not torch.allclose(y, x, atol=1e-2)
    torch.testing.assert_close(unrotate(y, cos, sin), x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rotate(unrotate(x, cos, sin), cos, sin), x, atol=1e-5, rtol=1e-5)
    # with an attention scaling folded into cos/sin (YaRN): still an exact inverse
    cs, ss = rope_cos_sin(6, 16, offset=7, scale=1.2)
    torch.testing.assert_close(unrotate(rotate(x, cs, ss), cs, ss), x, atol=1e-5, rtol=1e-5)
    # partial rotary: trailing dims pass through
    cp, sp = rope_cos_sin(6, 8)
    yp = rotate(x, cp, sp)
    assert torch.equal(yp[..., 8:], x[..., 8:])
    torch.testing.assert_close(unrotate(yp, cp, sp), x, atol=1e-5, rtol=1e-5)
    # dtype is preserved
    assert rotate(x.bfloat16(), cos, sin).dtype == torch.bfloat16


def test_reforge_roundtrip_rerotates_keys():
    # un-rotate keys, re-rotate with squeezed ids == rotating the raw keys at squeezed ids
    raw = torch.randn(1, 2, 8, 8)
    t_ids = torch.arange(8)
    cos, sin = rope_cos_sin(8, 8)
    k_rot = rotate(raw, cos, sin)
    keep = torch.tensor([1, 2, 5, 7])
    new_ids = reforge_temporal_ids(t_ids, keep, 0)
    table_c, table_s = rope_cos_sin(8, 8)
    k_new = rotate(unrotate(k_rot, cos, sin)[:, :, keep], table_c[new_ids], table_s[new_ids])
    expected = rotate(raw[:, :, keep], table_c[new_ids], table_s[new_ids])
    torch.testing.assert_close(k_new, expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- AdaReTaKe


def test_prompt_guided_scores_chunk_only_default():
    gen = torch.Generator().manual_seed(21)
    q = torch.randn(1, 6, 5, 8, generator=gen)
    kc = torch.randn(1, 2, 12, 8, generator=gen)
    s = prompt_guided_scores(q, kc)
    assert s.shape == (12,) and s.dtype == torch.float32
    torch.testing.assert_close(s.double(), dense_scores(q, kc), atol=1e-5, rtol=1e-5)
    assert abs(s.sum().item() - 5.0) < 1e-4  # each question row gives the chunk mass 1
    torch.testing.assert_close(prompt_guided_scores(q, kc, query_block=2), s, atol=1e-6, rtol=1e-6)


def test_prompt_guided_scores_with_question_keys_causal():
    gen = torch.Generator().manual_seed(22)
    q = torch.randn(1, 4, 6, 8, generator=gen) * 2
    kc = torch.randn(1, 2, 10, 8, generator=gen) * 2
    kq = torch.randn(1, 2, 6, 8, generator=gen) * 2
    s = prompt_guided_scores(q, kc, key_question=kq)
    ref = dense_scores(q, kc, causal_extra=kq)
    torch.testing.assert_close(s.double(), ref, atol=1e-5, rtol=1e-5)
    assert s.sum().item() < 6.0
    for block in (1, 4):
        torch.testing.assert_close(
            prompt_guided_scores(q, kc, key_question=kq, query_block=block), s, atol=1e-6, rtol=1e-6
        )
    # causality matters: a later question key changes only later rows' denominators
    kq2 = kq.clone()
    kq2[:, :, -1] += 5.0
    s2 = prompt_guided_scores(q[:, :, :-1], kc, key_question=kq2[:, :, :-1])
    s1 = prompt_guided_scores(q[:, :, :-1], kc, key_question=kq[:, :, :-1])
    torch.testing.assert_close(s1, s2)


def test_chunk_distances_edges_replicated():
    e = torch.eye(3)
    c = [e[0], e[0], e[1], (e[1] + e[2]) / 2]  # chunk embeddings
    # build chunks [F=2, N=3, C=3] whose frame/token means are c_i
    chunks = [ci.expand(2, 3, 3).clone() for ci in c]
    chunks[1][0, 0] += 1.0
    chunks[1][1, 0] -= 1.0  # mean unchanged
    d = chunk_distances(chunks)
    s = 1 - 1 / math.sqrt(2)
    expected = torch.tensor([0.0 / 2, (0.0 + 1.0) / 2, (1.0 + s) / 2, (s + 0.0) / 2])
    torch.testing.assert_close(d, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(chunk_distances(torch.stack(chunks)), expected, atol=1e-6, rtol=0)


def test_temporal_budgets_sum_and_bounds():
    gen = torch.Generator().manual_seed(31)
    for trial in range(8):
        num_chunks = 2 + trial * 3
        chunks = [torch.randn(4, 6, 16, generator=gen) + (i % 3) for i in range(num_chunks)]
        if trial % 2:
            chunks[0] = chunks[1].clone()  # a duplicated chunk: near-zero novelty
        for base in (0.01, 0.1, 0.3, 0.7, 0.95):
            r = temporal_budgets(chunks, base)
            assert r.shape == (num_chunks,) and r.dtype == torch.float32
            assert abs(r.double().sum().item() - base * num_chunks) < 1e-4
            assert r.min().item() >= 1e-3 - 1e-9 and r.max().item() <= 1.0 + 1e-9


def test_temporal_budgets_follow_novelty():
    e = torch.eye(4)
    embeds = [e[0], e[0], e[0], e[1], e[2], e[2]]
    chunks = [x.expand(3, 2, 4).clone() for x in embeds]
    d = chunk_distances(chunks)
    torch.testing.assert_close(d, torch.tensor([0.0, 0.0, 0.5, 1.0, 0.5, 0.0]), atol=1e-6, rtol=0)
    r = temporal_budgets(chunks, 0.2)
    assert abs(r.sum().item() - 1.2) < 1e-5
    # zero-novelty chunks sit at the floor; the rest keep base * d / mean(d) up to one shift
    assert r[0].item() == r[1].item() == r[5].item() == pytest.approx(1e-3)
    raw = 0.2 * d / d.mean()
    shift = r[[2, 3, 4]] - raw[[2, 3, 4]]
    torch.testing.assert_close(shift, shift[:1].expand(3), atol=1e-6, rtol=0)
    assert r[3] > r[2] == r[4]
    # no clamping at all: exactly proportional to d
    chunks2 = [x.expand(3, 2, 4).clone() for x in [e[0], e[1], e[1] + e[2], e[3]]]
    d2 = chunk_distances(chunks2)
    torch.testing.assert_close(temporal_budgets(chunks2, 0.3), (0.3 * d2 / d2.mean()).float(), atol=1e-6, rtol=0)
    # heavy base: clamps at 1, still the right sum
    r2 = temporal_budgets(chunks, 0.6)
    assert abs(r2.sum().item() - 3.6) < 1e-4 and r2.max().item() == pytest.approx(1.0)


def test_temporal_budgets_degenerate_cases():
    same = [torch.ones(2, 3, 4)] * 5
    torch.testing.assert_close(temporal_budgets(same, 0.25), torch.full((5,), 0.25))
    torch.testing.assert_close(temporal_budgets([torch.randn(2, 3, 4)], 0.4), torch.tensor([0.4]))
    chunks = [torch.randn(2, 3, 4) for _ in range(4)]
    assert torch.equal(temporal_budgets(chunks, 1.5), torch.ones(4))
    assert torch.allclose(temporal_budgets(chunks, 1e-4), torch.full((4,), 1e-3))


def test_layer_budgets_hand_example():
    # 2 layers x L=4, ratio 0.5 -> budget 4 global entries: 3 in layer 0, 1 in layer 1
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.05, 0.6, 0.02, 0.01]])
    # counts (3+1, 1+1) = (4, 2); ratio_l = 2*0.5*c/6 -> (2/3, 1/3); keep = int(r*4) -> (2, 1)
    assert layer_budgets(scores, 0.5) == [2, 1]
    assert layer_budgets(scores, 1.0) == [4, 4]


def test_layer_budgets_sum_and_floor():
    gen = torch.Generator().manual_seed(41)
    for num_layers, length, ratio in [(28, 200, 0.25), (4, 50, 0.1), (12, 333, 0.5), (3, 10, 0.05)]:
        scores = torch.rand(num_layers, length, generator=gen) * torch.linspace(0.1, 3.0, num_layers)[:, None]
        keeps = layer_budgets(scores, ratio)
        assert len(keeps) == num_layers
        assert all(isinstance(x, int) and 1 <= x <= length for x in keeps)
        target = num_layers * ratio * length
        assert target - num_layers <= sum(keeps) <= target + num_layers * max(1, 0.01 * length)
        # layers with higher scores get more
        assert keeps[-1] >= keeps[0]
    # a layer that wins nothing still keeps max(1, int(max(0.01, r) * L))
    scores = torch.zeros(3, 1000)
    scores[0] = 1.0
    keeps = layer_budgets(scores, 0.1)
    # budget int(100 * 3) = 300 all in layer 0: counts (301, 1, 1) over 303;
    # ratio_0 = 0.3 * 301 / 303 -> 298; others 0.3 / 303 < 0.01 -> int(0.01 * 1000) = 10
    assert keeps == [298, 10, 10]
