"""The batched vision attention equals the stock per-segment loop, with far fewer SDPA calls."""

from __future__ import annotations

import copy
import types
from unittest import mock

import pytest
import torch
import transformers as tf

from vidpress.fast import NAME, disable_fast_vision, enable_fast_vision, fast_vision, packed_sdpa, segment_groups, stock_vision
from vidpress.fast.vision import groups_of, is_fast
from vidpress.fast.vision_compile import compiled_backend
from vidpress.fast.vision_mlp import align_vision_mlps, restore_vision_mlps
from vidpress.pipeline import VideoQA
from vidpress.video import Video
from vidpress.tiny import build_config, build_tiny, build_tokenizer
from tests.helpers import random_frames

SDPA = "torch.nn.functional.scaled_dot_product_attention"
# Several videos in one call, of sizes that give full, edge and corner windows (and an exact multiple
# of the window, whose padding window is empty) in Qwen2.5-VL's windowed blocks.
GRIDS = [[2, 10, 14], [1, 8, 8], [3, 6, 12]]


def windowed_qwen2_5_vl() -> tf.Qwen2_5_VLForConditionalGeneration:
    """A tiny Qwen2.5-VL whose encoder has 4 x 4-token windows (8 x 8 patches), two windowed and two full
    blocks, and MLPs of a width the fast path pads (not a multiple of 8, as Qwen2.5-VL-7B's 3420)."""
    config = build_config("qwen2_5_vl", build_tokenizer())
    vision = config.vision_config
    vision.depth, vision.fullatt_block_indexes, vision.window_size = 4, [1, 3], 112
    vision.intermediate_size = 2 * vision.hidden_size + 4
    torch.manual_seed(0)
    model = tf.Qwen2_5_VLForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="module")
def encoders() -> dict[str, torch.nn.Module]:
    models = {family: build_tiny(family)[0] for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")}
    models["qwen2_5_vl_windows"] = windowed_qwen2_5_vl()
    return models


def random_pixels(model, grids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed random patch rows [sum(t * h * w), C * 2 * P * P] for videos on ``grids``, and the grid [V, 3]."""
    vision = model.config.vision_config
    row = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    grid = torch.tensor(grids)
    return torch.randn(int(grid.prod(1).sum()), row, generator=torch.Generator().manual_seed(1)), grid


def video_features(model, grids: list[list[int]]) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """(merged features, deepstack features, number of SDPA calls) of random pixels on ``grids``."""
    pixels, grid = random_pixels(model, grids)
    with torch.no_grad(), mock.patch(SDPA, wraps=torch.nn.functional.scaled_dot_product_attention) as sdpa:
        out = model.model.get_video_features(pixels, grid)
    deepstack = getattr(out, "deepstack_features", None) or []
    deepstack = [torch.cat(d) if isinstance(d, (tuple, list)) else d for d in deepstack]
    return torch.cat(out.pooler_output), deepstack, sdpa.call_count


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_vl_windows"])
@pytest.mark.parametrize("grids", [[[4, 10, 14]], GRIDS], ids=["one_video", "mixed_sizes"])
def test_fast_vision_equals_stock_encoder(encoders, name, grids):
    model = encoders[name]
    stock, stock_deepstack, stock_calls = video_features(model, grids)
    with fast_vision(model) as on:
        assert on
        fast, fast_deepstack, fast_calls = video_features(model, grids)
    torch.testing.assert_close(fast, stock, rtol=1e-5, atol=1e-6)
    assert len(fast_deepstack) == len(stock_deepstack)
    for a, b in zip(fast_deepstack, stock_deepstack):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert fast_calls < stock_calls


def test_windowed_encoder_makes_one_call_per_window_length(encoders):
    model = encoders["qwen2_5_vl_windows"]
    # One 10 x 14 patch grid = 5 x 7 merged tokens: windows of 4x4, 4x3, 1x4 and 1x3 merged tokens.
    *_, stock_calls = video_features(model, [[2, 10, 14]])
    with fast_vision(model):
        *_, fast_calls = video_features(model, [[2, 10, 14]])
    windows_per_unit = 2 * 2
    assert stock_calls == 2 * (2 * windows_per_unit) + 2 * 2  # 2 windowed blocks, 2 full blocks (per unit)
    assert fast_calls == 2 * 4 + 2 * 1
    with fast_vision(model), mock.patch("vidpress.fast.vision.segment_groups", wraps=segment_groups) as grouping:
        video_features(model, [[2, 10, 14]])
    assert grouping.call_count == 2  # once for the windows, once for the units: not once per block


def test_segment_groups_gathers_equal_lengths():
    groups = segment_groups(torch.tensor([0, 3, 5, 8, 8, 10], dtype=torch.int32))
    assert [g.tolist() for g in groups] == [[[3, 4], [8, 9]], [[0, 1, 2], [5, 6, 7]]]


def test_packed_sdpa_equals_per_segment_attention():
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, 3, 23, 8, generator=generator) for _ in range(3))
    cu_seqlens = torch.tensor([0, 4, 9, 13, 18, 23])
    expected = torch.cat([
        torch.nn.functional.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], scale=0.3)
        for a, b in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())
    ], dim=2).transpose(1, 2)
    torch.testing.assert_close(packed_sdpa(query, key, value, cu_seqlens, scale=0.3), expected, rtol=1e-5, atol=1e-6)
    whole = torch.nn.functional.scaled_dot_product_attention(query, key, value).transpose(1, 2)
    torch.testing.assert_close(packed_sdpa(query, key, value, torch.tensor([0, 23])), whole, rtol=1e-5, atol=1e-6)


def test_switching_on_and_off(encoders):
    model = encoders["qwen2_5_vl"]
    vision = model.model.visual.config
    with fast_vision(model):
        assert vision._attn_implementation == NAME
        assert model.config.get_text_config()._attn_implementation != NAME, "the LLM must keep its attention"
    assert vision._attn_implementation == "sdpa"
    assert enable_fast_vision(model) and enable_fast_vision(model)
    disable_fast_vision(model)
    assert vision._attn_implementation == "sdpa"
    vision._attn_implementation = "eager"
    try:
        with fast_vision(model) as on:
            assert not on and vision._attn_implementation == "eager"
    finally:
        vision._attn_implementation = "sdpa"
    text_only = torch.nn.Linear(2, 2)
    with fast_vision(text_only) as on:
        assert not on, "a model without a Qwen-VL vision tower is left alone"


def test_ask_with_fast_vision_gives_the_same_answer(tiny_qa):
    qa = tiny_qa["qwen2_5_vl"]
    video = list(random_frames(12, height=84, width=112))
    expected = qa.ask(video, "What object appeared in the video?", max_new_tokens=8)
    with fast_vision(qa.model):
        answer = qa.ask(video, "What object appeared in the video?", max_new_tokens=8)
    assert answer.token_ids == expected.token_ids


def test_packed_sdpa_splits_large_batches():
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, 2, 40, 4, generator=generator) for _ in range(3))
    cu_seqlens = torch.tensor([0, 4, 8, 12, 16, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40])
    expected = packed_sdpa(query, key, value, cu_seqlens)
    with mock.patch("vidpress.fast.vision.MAX_SEGMENTS_PER_CALL", 2), mock.patch(
        SDPA, wraps=torch.nn.functional.scaled_dot_product_attention
    ) as sdpa:
        torch.testing.assert_close(packed_sdpa(query, key, value, cu_seqlens), expected)
    assert sdpa.call_count == 3 + 5  # five 4-token segments in 3 calls, ten 2-token ones in 5


def test_generate_with_fast_vision_gives_the_same_tokens(tiny_qa):
    from tests.test_pipeline import QUESTION, make_video, stock_generate

    qa = tiny_qa["qwen2_5_vl"]
    video = make_video(seed=1)
    expected = stock_generate(qa, video, QUESTION, 8)
    with fast_vision(qa.model):
        assert stock_generate(qa, video, QUESTION, 8) == expected


def test_groups_are_remembered_per_boundary_tensor():
    """The same boundary tensor is grouped once (a tower passes it to every block); an in-place edit or
    another tensor is grouped again."""
    boundaries = torch.tensor([0, 3, 5, 8])
    with mock.patch("vidpress.fast.vision.segment_groups", wraps=segment_groups) as grouping:
        first = groups_of(boundaries, boundaries.device)
        assert groups_of(boundaries, boundaries.device) is first
        boundaries[3] = 9
        edited = groups_of(boundaries, boundaries.device)
        other = groups_of(torch.tensor([0, 3, 5, 8]), boundaries.device)
    assert grouping.call_count == 3
    assert [g.tolist() for g in edited] == [[[3, 4]], [[0, 1, 2]], [[5, 6, 7, 8]]]
    assert [g.tolist() for g in other] == [g.tolist() for g in first]


def test_windowed_tower_runs_widened_mlps(encoders):
    model = encoders["qwen2_5_vl_windows"]
    mlps = [block.mlp for block in model.model.visual.blocks]
    with fast_vision(model):
        forwards = [mlp.__dict__.get("forward") for mlp in mlps]
        assert all(isinstance(forward, types.MethodType) for forward in forwards)
    assert all("forward" not in mlp.__dict__ for mlp in mlps)
    with fast_vision(model):
        assert [mlp.forward for mlp in mlps] == forwards and all(a is b for a, b in zip((m.forward for m in mlps), forwards)), \
            "the same bound forward each time (torch.compile guards on it)"
    assert align_vision_mlps(encoders["qwen2_vl"].model.visual) == 0, "Qwen2-VL's MLPs are not gated: left stock"


def test_widened_mlp_equals_stock_and_follows_its_weights():
    model = windowed_qwen2_5_vl()
    mlp = model.model.visual.blocks[0].mlp
    width = mlp.gate_proj.out_features
    x = torch.randn(5, mlp.gate_proj.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stock = mlp(x)
        assert align_vision_mlps(model.model.visual) == 4
        torch.testing.assert_close(mlp(x), stock, rtol=1e-5, atol=1e-6)
        gate_up, _, down = mlp.__dict__["_vidpress_aligned_weights"][1]
        assert gate_up.shape[0] == 2 * down.shape[1] and down.shape[1] % 64 == 0 and down.shape[1] > width
        mlp.up_proj.weight.mul_(2)  # an in-place edit: the widened copy is made again
        restore_vision_mlps(model.model.visual)
        stock_doubled = mlp(x)
        align_vision_mlps(model.model.visual)
        torch.testing.assert_close(mlp(x), stock_doubled, rtol=1e-5, atol=1e-6)
        copied = copy.deepcopy(model)
        copied_mlp = copied.model.visual.blocks[0].mlp
        copied_mlp.down_proj.weight.zero_()
        torch.testing.assert_close(mlp(x), stock_doubled, rtol=1e-5, atol=1e-6)  # the copy's forward is bound to the copy
        torch.testing.assert_close(copied_mlp(x), copied_mlp.down_proj.bias.expand(5, -1))
    mlp(x).square().sum().backward()
    grads = [p.grad.clone() for p in mlp.parameters()]
    mlp.zero_grad()
    restore_vision_mlps(model.model.visual)
    assert "forward" not in mlp.__dict__ and "_vidpress_aligned_weights" not in mlp.__dict__
    mlp(x).square().sum().backward()
    for fast_grad, param in zip(grads, mlp.parameters()):
        torch.testing.assert_close(fast_grad, param.grad, rtol=1e-5, atol=1e-5)


def merged_features(model, grids: list[list[int]]) -> torch.Tensor:
    """The tower's merged features of fixed random pixels on ``grids`` (no SDPA counting: dynamo traces it)."""
    with torch.no_grad():
        return torch.cat(model.model.get_video_features(*random_pixels(model, grids)).pooler_output)


def test_compiled_blocks_equal_the_uncompiled_tower_and_survive_stock_switches():
    model = windowed_qwen2_5_vl()
    stock = merged_features(model, GRIDS)
    assert enable_fast_vision(model, compile_backend="eager")
    tower = model.model.visual
    assert compiled_backend(tower) == "eager" and all(b._compiled_call_impl is not None for b in tower.blocks)
    with mock.patch("torch.compile", wraps=torch.compile) as compiling:
        with stock_vision(model):
            assert compiled_backend(tower) is None and not is_fast(model)
        assert compiled_backend(tower) == "eager"
    assert compiling.call_count == 0, "switching back reuses the compiled blocks"
    for grids in (GRIDS, [[4, 10, 14]]):  # two shapes
        compiled = merged_features(model, grids)
        with stock_vision(model):
            expected = merged_features(model, grids)
        torch.testing.assert_close(compiled, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged_features(model, GRIDS), stock, rtol=1e-5, atol=1e-6)
    disable_fast_vision(model)
    assert all(b._compiled_call_impl is None for b in tower.blocks)


def test_compile_vision_needs_fast_vision(tiny_qa):
    qa = tiny_qa["qwen2_5_vl"]
    with pytest.raises(ValueError, match="fast_vision"):
        VideoQA(qa.model, qa.processor, fast_vision=False, compile_vision=True)


def test_default_chunks_hold_a_patch_budget(tiny_qa, monkeypatch):
    qa = tiny_qa["qwen2_5_vl"]
    video = Video.from_array(random_frames(12, height=84, width=112), fps=2.0)
    inputs = qa.adapter.prepare(video, "What happens?")
    (units, h, w), = inputs["video_grid_thw"].tolist()
    whole = qa.adapter.encode(inputs, chunk_frames=len(video))
    monkeypatch.setattr("vidpress.adapters.qwen_vl.CHUNK_PATCHES", 2 * h * w)
    with mock.patch.object(qa.model.model, "get_video_features", wraps=qa.model.model.get_video_features) as calls:
        chunked = qa.adapter.encode(inputs)
    assert calls.call_count == -(-units // 2)
    torch.testing.assert_close(chunked.features, whole.features, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_fast_and_compiled_towers_match_stock_in_bf16_on_cuda():
    """On the GPU in bf16: the fast tower (batched attention, widened MLPs), uncompiled and under inductor,
    matches the stock tower within bf16 rounding (relative to the features' scale)."""
    model = windowed_qwen2_5_vl().to("cuda", torch.bfloat16)
    pixels, grid = random_pixels(model, [[8, 16, 28], [2, 10, 14]])
    pixels, grid = pixels.to("cuda", torch.bfloat16), grid.to("cuda")

    def features() -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(model.model.get_video_features(pixels, grid).pooler_output).float()

    stock = features()
    for backend in (None, "inductor"):
        assert enable_fast_vision(model, compile_backend=backend)
        fast = features()
        disable_fast_vision(model)
        error = (fast - stock).abs().max() / stock.abs().max()
        assert error < 0.03, (backend, float(error))
