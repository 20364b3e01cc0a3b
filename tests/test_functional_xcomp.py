"""Tests for the XComp (LP-Comp, QC-Comp) and VideoChat-Flash (ToMe) functional cores."""

from __future__ import annotations

import math

import pytest
import torch

from vidpress.functional.lpcomp import lpcomp_drop_layers, lpcomp_keep_indices, lpcomp_schedule
from vidpress.functional.qccomp import (
    qccomp_chunks,
    qccomp_clip_scores,
    qccomp_clip_token_slices,
    qccomp_select,
    qccomp_windows,
)
from vidpress.functional.tome import tome_clip_merge, tome_merge_schedule, tome_video

RELEASED_16_28 = [16, 16, 16, 15, 15, 14, 14, 13, 12, 12, 11, 10, 9, 9, 8, 7, 6, 5, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1]
RELEASED_DROPS = [3, 5, 7, 8, 10, 11, 12, 14, 15, 16, 17, 19, 20, 22, 24]


# ----------------------------------------------------------------------------- LP-Comp


def test_schedule_round_matches_released_16_28():
    sched = lpcomp_schedule(16, 28)
    assert sched == RELEASED_16_28
    assert lpcomp_schedule(16, 28, rounding="round") == RELEASED_16_28


def test_drop_layers_released_16_28():
    assert lpcomp_drop_layers(RELEASED_16_28) == RELEASED_DROPS
    assert lpcomp_drop_layers(lpcomp_schedule(16, 28)) == RELEASED_DROPS


def test_schedule_ceil_reaches_1_only_at_last_layer():
    sched = lpcomp_schedule(16, 28, rounding="ceil")
    assert len(sched) == 28
    assert sched[0] == 16
    assert sched[-1] == 1
    assert all(v > 1 for v in sched[:-1])
    # paper formula N(l) = ceil(7.5 cos(l pi / 28) + 8.5) at l = j + 1
    expected = [math.ceil(7.5 * math.cos((j + 1) * math.pi / 28) + 8.5 - 1e-9) for j in range(28)]
    expected[0] = 16
    assert sched == expected
    assert sched != RELEASED_16_28


@pytest.mark.parametrize("rounding", ["round", "ceil"])
@pytest.mark.parametrize("n1,layers", [(1, 5), (2, 3), (4, 32), (16, 24), (16, 4), (64, 80), (7, 7), (576, 28)])
def test_schedule_monotone_general(n1, layers, rounding):
    sched = lpcomp_schedule(n1, layers, rounding=rounding)
    assert len(sched) == layers
    assert sched[0] == n1
    assert sched[-1] == 1 or (layers == 1 and sched[-1] == n1)
    assert all(a >= b for a, b in zip(sched, sched[1:]))
    assert all(v >= 1 for v in sched)
    drops = lpcomp_drop_layers(sched)
    assert all(sched[j] < sched[j - 1] for j in drops)
    assert len(set(sched)) == len(drops) + 1


def test_schedule_validation():
    with pytest.raises(ValueError):
        lpcomp_schedule(0, 28)
    with pytest.raises(ValueError):
        lpcomp_schedule(16, 0)
    with pytest.raises(ValueError):
        lpcomp_schedule(16, 28, rounding="floor")
    with pytest.raises(ValueError):
        lpcomp_schedule(16.0, 28)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        lpcomp_drop_layers([4, 5, 3])
    with pytest.raises(ValueError):
        lpcomp_drop_layers([])


def test_keep_indices_suffix_and_uniform():
    assert lpcomp_keep_indices(3, 4, 2).tolist() == [2, 3, 6, 7, 10, 11]
    assert lpcomp_keep_indices(2, 4, 4, keep="suffix").tolist() == list(range(8))
    assert lpcomp_keep_indices(2, 16, 4, keep="uniform").tolist() == [3, 7, 11, 15, 19, 23, 27, 31]
    assert lpcomp_keep_indices(2, 16, 1, keep="uniform").tolist() == [15, 31]
    assert lpcomp_keep_indices(1, 5, 2, keep="uniform").tolist() == [2, 4]  # round(1.5)=2 (half up), 4
    assert lpcomp_keep_indices(2, 6, 6, keep="uniform").tolist() == list(range(12))
    assert lpcomp_keep_indices(0, 16, 8).numel() == 0
    for before in range(1, 18):
        for after in range(1, before + 1):
            u = lpcomp_keep_indices(1, before, after, keep="uniform")
            assert u.numel() == after and u[-1].item() == before - 1
            assert bool((u[1:] > u[:-1]).all())
    with pytest.raises(ValueError):
        lpcomp_keep_indices(2, 4, 5)
    with pytest.raises(ValueError):
        lpcomp_keep_indices(2, 4, 2, keep="prefix")


# ----------------------------------------------------------------------------- QC-Comp


@pytest.mark.parametrize("num_frames", [1, 7, 64, 65, 100, 200, 256, 576, 1000, 1027])
def test_windows_cover_all_frames(num_frames):
    wins = qccomp_windows(num_frames)
    covered = torch.zeros(num_frames, dtype=torch.long)
    for s, e in wins:
        assert 0 <= s < e <= num_frames
        assert s % 8 == 0
        covered[s:e] += 1
    assert bool((covered >= 1).all())
    assert wins[-1][1] == num_frames
    if num_frames > 64:
        assert all(e - s == 64 or e == num_frames for s, e in wins)
        starts = [s for s, _ in wins]
        # regular stride of 4 clips, except possibly the end-aligned last window
        assert all(b - a == 32 for a, b in zip(starts[:-2], starts[1:-1]))
        assert 0 < starts[-1] - starts[-2] <= 32
    else:
        assert wins == [(0, num_frames)]


def test_windows_exact_values():
    assert qccomp_windows(576) == [(32 * k, 32 * k + 64) for k in range(17)]
    # 13 clips of 8 frames (last one 4 frames): starts 0, 4, then end-aligned 5
    assert qccomp_windows(100) == [(0, 64), (32, 96), (40, 100)]
    assert qccomp_windows(100, align_end=False) == [(0, 64), (32, 96)]
    assert qccomp_windows(20, clip_frames=2, window_clips=4, stride_clips=2) == [(0, 8), (4, 12), (8, 16), (12, 20)]


@pytest.mark.parametrize("num_frames", [1100, 1024, 2048, 777, 3001])
@pytest.mark.parametrize("n_repeat", [1, 2, 4])
def test_chunks_cover_each_frame_n_repeat_times(num_frames, n_repeat):
    chunks = qccomp_chunks(num_frames, chunk_frames=512, margin_frames=0, n_repeat=n_repeat)
    counts = torch.zeros(num_frames, dtype=torch.long)
    for c in chunks:
        assert c.dtype == torch.long and c.numel() <= 512
        assert c.unique().numel() == c.numel()
        # circular video order: consecutive mod T
        assert bool(((c[1:] - c[:-1]) % num_frames == 1).all())
        counts[c] += 1
    assert bool((counts == n_repeat).all())

    with_margin = qccomp_chunks(num_frames, 512, margin_frames=64, n_repeat=n_repeat, return_core=True)
    assert len(with_margin) == len(chunks)
    counts.zero_()
    for (frames, core), bare in zip(with_margin, chunks):
        assert frames.numel() == bare.numel() + 64
        assert torch.equal(frames[core], bare)
        assert core[:32].sum() == 0 and core[-32:].sum() == 0
        assert frames.unique().numel() == frames.numel()
        counts[frames[core]] += 1
    assert bool((counts == n_repeat).all())


def test_chunks_shift_wraparound_and_small_video():
    chunks = qccomp_chunks(1024, 512, margin_frames=0, n_repeat=2)
    assert [int(c[0]) for c in chunks] == [0, 256, 512, 768]
    assert chunks[-1].tolist() == list(range(768, 1024)) + list(range(0, 256))
    small = qccomp_chunks(500, 512, margin_frames=64)
    assert len(small) == 1 and small[0].tolist() == list(range(500))
    with pytest.raises(ValueError):
        qccomp_chunks(2000, 512, n_repeat=3)


def _dense_scores(q, k_full, col0, slices, causal_from=None):
    """Reference: explicit repeat_kv + full softmax matrix."""
    h = q.shape[1]
    k = k_full.repeat_interleave(h // k_full.shape[1], dim=1)
    logits = (q @ k.transpose(-1, -2))[0] / math.sqrt(q.shape[-1])  # [H, Lq, Lk]
    if causal_from is not None:
        lq, lk = logits.shape[1:]
        mask = torch.arange(lk)[None, :] > (causal_from + torch.arange(lq))[:, None]
        logits = logits.masked_fill(mask, float("-inf"))
    a = torch.softmax(logits, dim=-1)
    return torch.stack([a[:, :, col0 + s.start : col0 + s.stop].mean() for s in slices])


def test_clip_scores_video_only_matches_dense():
    g = torch.Generator().manual_seed(0)
    h, hkv, lq, lv, d = 8, 2, 5, 48, 16
    q = torch.randn(1, h, lq, d, generator=g)
    kv = torch.randn(1, hkv, lv, d, generator=g)
    slices = qccomp_clip_token_slices(6, 8, clip_frames=2)  # 3 clips of 16 tokens
    assert [(s.start, s.stop) for s in slices] == [(0, 16), (16, 32), (32, 48)]
    got = qccomp_clip_scores(q, kv, slices)
    want = _dense_scores(q, kv, 0, slices)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert abs(got.mean().item() * lv - 1.0) < 1e-5  # rows sum to 1 over the video span
    # uneven clips given as tuples
    got2 = qccomp_clip_scores(q[0], kv[0], [(0, 5), (5, 48)])
    want2 = _dense_scores(q, kv, 0, [slice(0, 5), slice(5, 48)])
    torch.testing.assert_close(got2, want2, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("block_size", [3, 7, 4096])
def test_clip_scores_full_key_matches_dense(block_size):
    g = torch.Generator().manual_seed(1)
    h, hkv, d = 6, 3, 8
    prefix, lv, between, lq = 7, 40, 3, 4
    lk = prefix + lv + between + lq
    q = torch.randn(1, h, lq, d, generator=g)
    k_full = torch.randn(1, hkv, lk, d, generator=g) * 2
    slices = qccomp_clip_token_slices(5, 8, clip_frames=2)  # clips of 16, 16, 8 tokens
    q_off = prefix + lv + between
    got = qccomp_clip_scores(q, None, slices, full_key=k_full, video_offset=prefix, block_size=block_size)
    want = _dense_scores(q, k_full, prefix, slices, causal_from=q_off)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # the question rows here are the last Lq keys; an explicit offset gives the same
    got_q = qccomp_clip_scores(q, None, slices, full_key=k_full, video_offset=prefix, query_offset=q_off)
    torch.testing.assert_close(got_q, got)
    # non-causal form
    got_nc = qccomp_clip_scores(q, None, slices, full_key=k_full, video_offset=prefix, causal=False)
    torch.testing.assert_close(got_nc, _dense_scores(q, k_full, prefix, slices), rtol=1e-5, atol=1e-7)
    # differs from the video-only normalisation
    video_only = qccomp_clip_scores(q, k_full[:, :, prefix : prefix + lv], slices)
    assert not torch.allclose(video_only, got)
    assert float(got.sum()) < float(video_only.sum())


def test_clip_scores_validation():
    q = torch.randn(1, 4, 2, 8)
    with pytest.raises(ValueError):
        qccomp_clip_scores(q, None, [slice(0, 4)])
    with pytest.raises(ValueError):
        qccomp_clip_scores(q, torch.randn(1, 3, 10, 8), [slice(0, 4)])  # 4 heads vs 3 kv heads
    with pytest.raises(ValueError):
        qccomp_clip_scores(q, torch.randn(1, 2, 10, 8), [slice(0, 11)])
    with pytest.raises(ValueError):
        qccomp_clip_scores(q, None, [slice(0, 4)], full_key=torch.randn(1, 2, 10, 8))


def test_select_sorted_and_sized():
    scores = torch.tensor([0.1, 0.9, 0.3, 0.9, float("nan"), 0.5, 0.2])
    assert qccomp_select(scores, 3).tolist() == [1, 3, 5]
    assert qccomp_select(scores, 1).tolist() == [1]  # tie 0.9/0.9 -> earlier frame
    assert qccomp_select(scores, 7).tolist() == list(range(7))
    assert qccomp_select(scores, 100).tolist() == list(range(7))
    sel = qccomp_select(torch.randn(1000, generator=torch.Generator().manual_seed(3)), 256)
    assert sel.numel() == 256 and bool((sel[1:] > sel[:-1]).all())
    with pytest.raises(ValueError):
        qccomp_select(scores, 0)


# ----------------------------------------------------------------------------- ToMe


def test_merge_schedule():
    assert tome_merge_schedule(4096, 64) == [2048, 1024, 512, 256, 128, 64]
    assert tome_merge_schedule(100, 16) == [50, 25, 9]
    assert tome_merge_schedule(16, 16) == []
    assert sum(tome_merge_schedule(1000, 48)) == 1000 - 48


@pytest.mark.parametrize("order", ["reference", "original"])
def test_tome_output_count_and_sources(order):
    g = torch.Generator().manual_seed(0)
    f, p, c = 3, 50, 12
    x = torch.randn(f, p, c, generator=g)
    merged, sizes, sources = tome_clip_merge(x, 16, unmerged_order=order, return_sources=True)
    assert merged.shape == (f * 16, c) and sizes.shape == (f * 16,)
    assert sources.shape == (f * p,) and sources.dtype == torch.long
    assert sorted(sources.unique().tolist()) == list(range(f * 16))
    counts = torch.bincount(sources, minlength=f * 16).float()
    torch.testing.assert_close(sizes, counts)
    # scatter-mean of the inputs by sources equals the output
    mean = torch.zeros(f * 16, c).index_add_(0, sources, x.reshape(-1, c)) / counts[:, None]
    torch.testing.assert_close(merged, mean, rtol=1e-5, atol=1e-5)
    # flattened input with num_frames gives the same
    merged2, _ = tome_clip_merge(x.reshape(-1, c), 16, num_frames=f, unmerged_order=order)
    torch.testing.assert_close(merged2, merged)


def test_tome_identity_when_target_equals_p():
    x = torch.randn(2, 16, 8)
    merged, sizes, sources = tome_clip_merge(x, 16, return_sources=True)
    assert torch.equal(merged, x.reshape(-1, 8))
    assert torch.equal(sizes, torch.ones(32))
    assert torch.equal(sources, torch.arange(32))
    assert torch.equal(tome_video(x, clip_frames=2, target_per_frame=16), x)


def test_tome_two_identical_tokens_merge_to_average():
    # 4 tokens, one frame, target 3: one merge. Tokens 0 (A) and 1 (B) are parallel
    # (cosine 1) so they merge; token 2 (A) is orthogonal to B token 1 and 3.
    a = torch.tensor([1.0, 0.0, 0.0])
    x = torch.stack([a, 3 * a, torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])])
    merged, sizes, sources = tome_clip_merge(x[None], 3, return_sources=True)
    # output = [unmerged A (token 2), B (token 1 merged with token 0, token 3)]
    torch.testing.assert_close(merged, torch.stack([x[2], 2 * a, x[3]]))
    torch.testing.assert_close(sizes, torch.tensor([1.0, 2.0, 1.0]))
    assert sources.tolist() == [1, 1, 0, 2]
    # identical tokens merge into themselves with size 2
    y = torch.tensor([[1.0, 2.0], [1.0, 2.0], [-3.0, 1.0], [5.0, 5.0]])
    m, s = tome_clip_merge(y, 3, num_frames=1)
    torch.testing.assert_close(m[1], y[0])
    assert s.tolist() == [1.0, 2.0, 1.0]


def test_tome_reference_order_of_unmerged_a():
    # A tokens 0, 2, 4; B tokens 1, 3, 5. Best-match similarity of A: t4 > t2 > t0.
    x = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0],  # A0: weakly similar to B1
            [0.3, 1.0, 0.0, 0.0],  # B1
            [0.0, 0.0, 1.0, 0.0],  # A2: fairly similar to B3
            [0.0, 0.0, 1.0, 0.5],  # B3
            [0.0, 0.0, 0.0, 1.0],  # A4: identical to B5
            [0.0, 0.0, 0.0, 1.0],  # B5
        ]
    )
    ref, _, src = tome_clip_merge(x, 5, num_frames=1, return_sources=True)
    orig, _, src_o = tome_clip_merge(x, 5, num_frames=1, unmerged_order="original", return_sources=True)
    # A4 merges into B5; unmerged A are [A2, A0] by decreasing similarity, or [A0, A2] in original order
    assert src.tolist() == [1, 2, 0, 3, 4, 4]
    assert src_o.tolist() == [0, 2, 1, 3, 4, 4]
    torch.testing.assert_close(ref[:2], x[[2, 0]])
    torch.testing.assert_close(orig[:2], x[[0, 2]])
    torch.testing.assert_close(ref[2:], orig[2:])


def test_tome_mass_conservation_with_sizes():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 37, 6, generator=g, dtype=torch.float64)
    s0 = torch.rand(2 * 37, generator=g, dtype=torch.float64) + 0.5
    merged, sizes = tome_clip_merge(x, 5, sizes=s0)
    assert merged.shape == (10, 6) and merged.dtype == torch.float64
    torch.testing.assert_close(sizes.double().sum(), s0.sum(), rtol=1e-6, atol=1e-6)
    mass_in = (s0[:, None] * x.reshape(-1, 6)).sum(0)
    mass_out = (sizes.double()[:, None] * merged).sum(0)
    torch.testing.assert_close(mass_out, mass_in, rtol=1e-5, atol=1e-5)


def test_tome_metric_and_heads():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 32, 8, generator=g)
    # separate metric equal to the tokens gives the same result
    a, _ = tome_clip_merge(x, 4)
    b, _ = tome_clip_merge(x, 4, metric=x.clone())
    torch.testing.assert_close(a, b)
    # metric_heads averages channel chunks: heads=2 on [u, u] features == heads=1 on u
    u = torch.randn(1, 32, 4, generator=g)
    c1, _, s1 = tome_clip_merge(torch.cat([u, u], -1), 4, metric_heads=2, return_sources=True)
    _, _, s2 = tome_clip_merge(u, 4, return_sources=True)
    assert torch.equal(s1, s2)
    with pytest.raises(ValueError):
        tome_clip_merge(x, 4, metric_heads=3)
    with pytest.raises(ValueError):
        tome_clip_merge(x, 33)
    with pytest.raises(ValueError):
        tome_clip_merge(x.reshape(32, 8), 4)  # flattened without num_frames


def test_tome_video_clips_and_short_last_clip():
    g = torch.Generator().manual_seed(4)
    t, p, c = 10, 20, 6
    x = torch.randn(t, p, c, generator=g)
    out = tome_video(x, clip_frames=4, target_per_frame=3, clips_per_batch=1)
    assert out.shape == (t, 3, c)
    # clip by clip with tome_clip_merge, reshaped by count
    parts = [tome_clip_merge(x[f0 : f0 + 4], 3)[0].reshape(-1, 3, c) for f0 in (0, 4)]
    parts.append(tome_clip_merge(x[8:10], 3)[0].reshape(-1, 3, c))  # short last clip (2 frames)
    torch.testing.assert_close(out, torch.cat(parts))
    # batching clips does not change the result
    torch.testing.assert_close(tome_video(x, 4, 3, clips_per_batch=16), out)
    # each clip's outputs are averages of that clip's inputs only
    clip_mean_in = x[:8].reshape(2, -1, c).mean(1)
    clip_mean_out = out[:8].reshape(2, -1, c)
    _, sizes = tome_clip_merge(x[:4], 3)
    torch.testing.assert_close((clip_mean_out[0] * sizes[:, None]).sum(0) / sizes.sum(), clip_mean_in[0], rtol=1e-5, atol=1e-5)


def test_tome_gradients_flow_and_dtype():
    x = torch.randn(2, 16, 4, requires_grad=True)
    merged, _ = tome_clip_merge(x, 4)
    merged.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad.sum(), torch.tensor(float(merged.shape[0] * 4)), rtol=1e-5, atol=1e-4)
    half = tome_video(torch.randn(4, 16, 4).to(torch.bfloat16), 2, 4)
    assert half.dtype == torch.bfloat16 and half.shape == (4, 4, 4)
