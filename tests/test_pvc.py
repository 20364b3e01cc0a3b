"""PVC on tiny models: identity when untrained, causality, chunked = one-shot, token budget, save/load, training."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import random_frames
from vidpress import Video, VideoQA, load_video
from vidpress.presses.pvc import PVCPress
from vidpress.pvc import (
    PVC,
    attach_pvc,
    cell_slots,
    load_pvc,
    pooling_grid,
    pvc_for_model,
    pvc_image_frames,
    save_pvc,
    vision_tower,
)

QUESTION = "What object appeared in the video?"


def make_video(num_frames: int = 8, seed: int = 0) -> Video:
    """Frames of 112 x 112 pixels: a 4 x 4 grid of merged tokens per unit, in 2 x 2 attention windows (Qwen2.5-VL)."""
    return load_video(list(random_frames(num_frames, 112, 112, seed=seed)), source_fps=4.0)


def trained_like(pvc: PVC, seed: int = 0) -> PVC:
    """Give every parameter of ``pvc`` (zero gates and modulation included) random non-zero values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in pvc.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return pvc


def tower_features(qa: VideoQA, inputs, pvc: PVC | None = None) -> torch.Tensor:
    """[T', N, D] merged features of the video in ``inputs``, in one tower call (with ``pvc`` attached if given)."""
    adapter = qa.adapter
    call = lambda: adapter.inner.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    with torch.no_grad():
        if pvc is None:
            out = call()
        else:
            with attach_pvc(qa.model, pvc, stream=False):
                out = call()
    units = int(inputs["video_grid_thw"][0, 0])
    return torch.cat(out.pooler_output).view(units, -1, out.pooler_output[0].shape[-1])


@pytest.fixture(scope="module")
def qa25(tiny_qa) -> VideoQA:
    return tiny_qa["qwen2_5_vl"]


# -- the compressor's grid and slots --------------------------------------------------------------------------
@pytest.mark.parametrize(("height", "width", "budget", "expected"), [
    (9, 16, 64, (8, 8)), (6, 20, 64, (4, 16)), (4, 4, 64, (4, 4)), (16, 9, 8, (4, 2)), (3, 5, 15, (3, 5)), (2, 3, 2, (1, 2)),
])
def test_pooling_grid(height, width, budget, expected):
    assert pooling_grid(height, width, budget) == expected


def test_pooling_grid_without_a_layout_is_an_error():
    with pytest.raises(ValueError, match="cannot be laid out"):
        pooling_grid(2, 3, 5)


@pytest.mark.parametrize(("height", "width"), [(4, 4), (9, 16), (5, 7), (18, 32)])
def test_cell_slots_are_distinct_cell_centres(height, width):
    for rows in range(1, height + 1):
        for cols in range(1, width + 1):
            slots = cell_slots(height, width, rows, cols)
            assert len(set(slots.tolist())) == rows * cols == len(slots)
            assert slots.tolist() == sorted(slots.tolist()), "slots must follow the pooled cells' raster order"
    assert cell_slots(4, 4, 2, 2).tolist() == [0 * 4 + 0, 0 * 4 + 2, 2 * 4 + 0, 2 * 4 + 2]
    assert cell_slots(3, 3, 1, 1).tolist() == [4]


def test_sinusoidal_time_embedding():
    from vidpress.pvc import sinusoidal_embedding

    embedding = sinusoidal_embedding(torch.tensor([0.0, 1.0, 3.0]))
    assert embedding.shape == (3, 256) and embedding.dtype == torch.float32
    assert torch.equal(embedding[0], torch.cat([torch.ones(128), torch.zeros(128)]))
    torch.testing.assert_close(embedding[1, [0, 128]], torch.tensor([torch.cos(torch.tensor(1.0)), torch.sin(torch.tensor(1.0))]))
    assert not torch.allclose(embedding[1], embedding[2])


# -- the encoder stage ------------------------------------------------------------------------------------------
def test_window_order_is_the_same_in_every_unit(qa25):
    """The hooks rely on it: token j of every temporal unit is the same spatial position inside the blocks."""
    from transformers.vision_utils import get_vision_window_index

    visual = vision_tower(qa25.model)
    grid = torch.tensor([[3, 8, 12]])
    index, _ = get_vision_window_index(grid, visual.spatial_merge_size, visual.window_size, visual.patch_size)
    per_unit = index.view(3, -1) - torch.arange(3)[:, None] * (8 * 12 // 4)
    assert torch.equal(per_unit, per_unit[:1].expand_as(per_unit))
    assert not torch.equal(per_unit[0], torch.arange(per_unit.shape[1])), "degenerate test: no window permutation"


def test_untrained_pvc_is_identity_on_the_tower(tiny_qa, family):
    qa = tiny_qa[family]
    inputs = qa.adapter.prepare(make_video(8), QUESTION)
    pvc = pvc_for_model(qa.model)
    assert torch.equal(tower_features(qa, inputs, pvc), tower_features(qa, inputs))


def test_temporal_attention_is_causal(qa25):
    adapter = qa25.adapter
    frames = random_frames(8, 112, 112, seed=0)
    later = frames.copy()
    later[4:] = random_frames(4, 112, 112, seed=1)  # units 2, 3 change
    earlier = frames.copy()
    earlier[:2] = random_frames(2, 112, 112, seed=2)  # unit 0 changes
    pvc = trained_like(pvc_for_model(qa25.model))
    base, changed_late, changed_early = (
        tower_features(qa25, adapter.prepare(load_video(list(f), source_fps=4.0), QUESTION), pvc)
        for f in (frames, later, earlier)
    )
    assert torch.equal(changed_late[:2], base[:2]), "a unit's output depends on later frames"
    assert not torch.allclose(changed_late[2:], base[2:])
    assert not torch.allclose(changed_early[1], base[1]), "degenerate test: PVC does not mix frames over time"


def test_chunked_encoding_with_pvc_equals_one_shot(qa25):
    adapter = qa25.adapter
    inputs = adapter.prepare(make_video(12), QUESTION)
    pvc = trained_like(pvc_for_model(qa25.model))
    encoded = {}
    for chunk in (1000, 2, 4):
        with attach_pvc(qa25.model, pvc) as run:
            encoded[chunk] = adapter.encode(inputs, chunk_frames=chunk).features
        assert run.units_seen == 6
    for chunk in (2, 4):
        torch.testing.assert_close(encoded[chunk], encoded[1000], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tower_features(qa25, inputs, pvc), encoded[1000], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(encoded[1000], adapter.encode(inputs).features), "degenerate test: PVC changed nothing"


def test_separate_videos_in_one_call_do_not_mix(qa25):
    adapter = qa25.adapter
    first, second = (adapter.prepare(make_video(4, seed=s), QUESTION) for s in (0, 1))
    pvc = trained_like(pvc_for_model(qa25.model))
    both = {
        "pixel_values_videos": torch.cat([first["pixel_values_videos"], second["pixel_values_videos"]]),
        "video_grid_thw": torch.cat([first["video_grid_thw"], second["video_grid_thw"]]),
    }
    with torch.no_grad(), attach_pvc(qa25.model, pvc, stream=False):
        out = adapter.inner.get_video_features(both["pixel_values_videos"], both["video_grid_thw"]).pooler_output
    torch.testing.assert_close(out[0].view(2, 16, -1), tower_features(qa25, first, pvc), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[1].view(2, 16, -1), tower_features(qa25, second, pvc), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one video per call"), torch.no_grad(), attach_pvc(qa25.model, pvc):
        adapter.inner.get_video_features(both["pixel_values_videos"], both["video_grid_thw"])


def test_hooks_are_removed_after_the_context(qa25):
    inputs = qa25.adapter.prepare(make_video(4), QUESTION)
    reference = tower_features(qa25, inputs)
    tower_features(qa25, inputs, trained_like(pvc_for_model(qa25.model)))
    assert torch.equal(tower_features(qa25, inputs), reference)


# -- the press ---------------------------------------------------------------------------------------------------
def test_press_keeping_every_token_equals_no_press(tiny_qa, family):
    qa = tiny_qa[family]
    video = make_video(8)
    full = qa.ask(video, QUESTION, max_new_tokens=8)
    per_unit = full.stats.visual_tokens_after // 4
    answer = qa.ask(video, QUESTION, press=PVCPress(tokens_per_frame=per_unit), max_new_tokens=8)
    assert answer.token_ids == full.token_ids
    assert answer.stats.visual_tokens_after == full.stats.visual_tokens_after


def test_press_token_budget_reaches_the_llm(qa25):
    video = make_video(12)
    full = qa25.ask(video, QUESTION, max_new_tokens=4)
    press = PVCPress(tokens_per_frame=4)
    answer = qa25.ask(video, QUESTION, press=press, max_new_tokens=4)
    units = 6
    assert answer.stats.visual_tokens_after == units * 4
    assert answer.stats.llm_input_length == full.stats.llm_input_length - units * (16 - 4)
    assert answer.stats.press["pvc"] == {"layers": 2, "pooled_grid": [2, 2], "tokens_per_unit": 4}
    encoded = qa25.adapter.encode(qa25.adapter.prepare(video, QUESTION))
    keep = press.select_tokens(encoded, torch.ones(units, 16, dtype=torch.bool), _context(qa25))
    assert keep.sum(1).tolist() == [4] * units
    assert keep[0].nonzero().squeeze(1).tolist() == cell_slots(4, 4, 2, 2).tolist()


def test_press_compresses_to_pooled_features_when_untrained(qa25):
    from vidpress.pvc import pool_frames

    inputs = qa25.adapter.prepare(make_video(8), QUESTION)
    encoded = qa25.adapter.encode(inputs)
    original = encoded.features
    keep = PVCPress(tokens_per_frame=4).select_tokens(encoded, torch.ones(4, 16, dtype=torch.bool), _context(qa25))
    assert encoded.features is not original and torch.equal(original, qa25.adapter.encode(inputs).features)
    llm = qa25.adapter.build_inputs(encoded, keep)
    torch.testing.assert_close(llm.video_embeds.view(4, 4, -1), pool_frames(original, (4, 4), (2, 2)))
    assert torch.equal(llm.positions[:, 0], encoded.positions[:, llm.source_index])


def test_press_keeps_units_dropped_by_an_earlier_press(qa25):
    encoded = qa25.adapter.encode(qa25.adapter.prepare(make_video(8), QUESTION))
    keep = torch.ones(4, 16, dtype=torch.bool)
    keep[1] = False
    keep[2, 5:] = False
    out = PVCPress(tokens_per_frame=4).select_tokens(encoded, keep, _context(qa25))
    assert out.sum(1).tolist() == [4, 0, 4, 4]


def test_press_on_qwen3_pools_deepstack_features_to_the_slots(tiny_qa):
    from vidpress.pvc import pool_frames

    qa = tiny_qa["qwen3_vl"]
    video = make_video(8)
    encoded = qa.adapter.encode(qa.adapter.prepare(video, QUESTION))
    units, per_unit = encoded.features.shape[:2]
    grid = encoded.grid[1:]
    deepstack = list(encoded.deepstack)
    keep = PVCPress(tokens_per_frame=4).select_tokens(encoded, torch.ones(units, per_unit, dtype=torch.bool), _context(qa))
    llm = qa.adapter.build_inputs(encoded, keep)
    cells = pooling_grid(*grid, 4)
    assert len(llm.deepstack) == len(deepstack) > 0
    for kept, full in zip(llm.deepstack, deepstack):
        torch.testing.assert_close(kept.view(units, 4, -1), pool_frames(full, grid, cells))
    answer = qa.ask(video, QUESTION, press=PVCPress(tokens_per_frame=4), max_new_tokens=4)
    assert answer.stats.visual_tokens_after == units * 4


def test_image_as_static_video(qa25):
    image = random_frames(1, 112, 112, seed=3)[0]
    video = pvc_image_frames(image)
    assert len(video) == 4 and all((frame == image).all() for frame in video.frames)
    answer = qa25.ask(video, QUESTION, press=PVCPress(tokens_per_frame=4), max_new_tokens=4)
    assert answer.stats.visual_tokens_after == 2 * 4, "4 frames are 2 temporal units on Qwen-VL"


def test_press_validates_its_parameters():
    with pytest.raises(ValueError, match="tokens_per_frame"):
        PVCPress(tokens_per_frame=0)
    with pytest.raises(ValueError, match="layers"):
        PVCPress(layers=0)


# -- save / load ---------------------------------------------------------------------------------------------------
def test_save_load_round_trip(qa25, tmp_path):
    pvc = trained_like(pvc_for_model(qa25.model), seed=4)
    folder = save_pvc(pvc, tmp_path / "pvc")
    assert sorted(p.name for p in folder.iterdir()) == ["pvc.safetensors", "pvc_config.json"]
    loaded = load_pvc(folder, qa25.model)
    assert loaded.config == pvc.config
    for (name, a), (_, b) in zip(pvc.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert all(torch.equal(a, b) for a, b in zip(load_pvc(folder).parameters(), pvc.parameters()))
    inputs = qa25.adapter.prepare(make_video(8), QUESTION)
    assert torch.equal(tower_features(qa25, inputs, loaded), tower_features(qa25, inputs, pvc))
    video = make_video(8)
    from_checkpoint = PVCPress(tokens_per_frame=4, checkpoint=str(folder))
    answer = qa25.ask(video, QUESTION, press=from_checkpoint, max_new_tokens=6)
    untrained = qa25.ask(video, QUESTION, press=PVCPress(tokens_per_frame=4), max_new_tokens=6)
    assert answer.token_ids != untrained.token_ids, "degenerate test: the loaded weights change nothing"
    with pytest.raises(ValueError, match="layers"):
        qa25.ask(video, QUESTION, press=PVCPress(layers=1, checkpoint=str(folder)), max_new_tokens=1)


# -- training -------------------------------------------------------------------------------------------------------
@pytest.fixture()
def fresh_qa():
    """A tiny Qwen2.5-VL of its own (training freezes its parameters)."""
    from vidpress.tiny import build_tiny

    return VideoQA(*build_tiny("qwen2_5_vl"))


def _sample(qa: VideoQA):
    from vidpress.train.encode import encode_conversation

    return encode_conversation(qa.adapter, make_video(8), (("user", QUESTION), ("assistant", "The answer is B.")))


@pytest.mark.parametrize("train_projector", [False, True])
def test_training_step_updates_only_the_addon(fresh_qa, train_projector, tmp_path):
    from vidpress.pvc.training import pvc_training_step, trainable_parameters

    model = fresh_qa.model
    pvc = pvc_for_model(model)
    parameters = trainable_parameters(model, pvc, train_projector=train_projector)
    assert (pvc.merger is not None) == train_projector
    before_model = {name: p.detach().clone() for name, p in model.named_parameters()}
    before_pvc = {name: p.detach().clone() for name, p in pvc.named_parameters()}
    optimizer = torch.optim.AdamW(parameters, lr=1e-2, weight_decay=0.0)
    sample = _sample(fresh_qa)
    losses = [pvc_training_step(fresh_qa.adapter, pvc, sample, optimizer, tokens_per_frame=4) for _ in range(3)]
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, before_model[name]) for name, p in model.named_parameters()), "the base model changed"
    changed = {name for name, p in pvc.named_parameters() if not torch.equal(p, before_pvc[name])}
    for name in ("temporal.0.gate", "modulation.0.linear.weight", "time_embedding.mlp.0.weight", "compressor.gate"):
        assert name in changed
    assert any(name.startswith("merger.") for name in changed) == train_projector
    if train_projector:
        folder = save_pvc(pvc, tmp_path / "with_merger")
        with pytest.raises(ValueError, match="merger"):
            load_pvc(folder)
        loaded = load_pvc(folder, model)
        assert torch.equal(loaded.merger.mlp[0].weight, pvc.merger.mlp[0].weight)


def test_float32_addon_on_a_bf16_model(fresh_qa):
    from vidpress.pvc.training import pvc_training_step, trainable_parameters

    model = fresh_qa.model.to(torch.bfloat16)
    inputs = fresh_qa.adapter.prepare(make_video(8), QUESTION)
    pvc = pvc_for_model(model).float()
    assert torch.equal(tower_features(fresh_qa, inputs, pvc), tower_features(fresh_qa, inputs))
    parameters = trainable_parameters(model, pvc, train_projector=True)
    assert {p.dtype for p in parameters} == {torch.float32}
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    loss = pvc_training_step(fresh_qa.adapter, pvc, _sample(fresh_qa), optimizer, tokens_per_frame=4)
    assert torch.isfinite(torch.tensor(loss))


def _pvc_gradients(qa: VideoQA, pvc: PVC, sample) -> dict[str, torch.Tensor]:
    from vidpress.pvc.training import pvc_answer_loss

    pvc.zero_grad(set_to_none=True)
    with attach_pvc(qa.model, pvc, stream=False) as run:
        loss_sum, count = pvc_answer_loss(qa.adapter, run, sample, tokens_per_frame=4)
        assert count == len(qa.processor.tokenizer("The answer is B.")["input_ids"]) + 1  # the answer and <|im_end|>
        (loss_sum / count).backward()
    return {name: p.grad.clone() for name, p in pvc.named_parameters()}


def test_gradient_checkpointing_gives_the_same_gradients(fresh_qa):
    from vidpress.pvc.training import pvc_answer_loss, trainable_parameters

    model = fresh_qa.model.train()
    pvc = trained_like(pvc_for_model(model))
    trainable_parameters(model, pvc)
    sample = _sample(fresh_qa)
    plain = _pvc_gradients(fresh_qa, pvc, sample)
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable  # the newer name
    enable()
    checkpointed = _pvc_gradients(fresh_qa, pvc, sample)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert plain["temporal.1.qkv.weight"].abs().sum() > 0
    with attach_pvc(model, pvc, stream=True) as run, pytest.raises(ValueError, match="stream=False"):
        pvc_answer_loss(fresh_qa.adapter, run, sample)


def _context(qa: VideoQA):
    from vidpress.presses import PressContext

    return PressContext(adapter=qa.adapter, question=QUESTION)


# -- the sliding temporal window (not in the paper: bounds memory on long videos) ----------------------------------
def windowed_pvc(qa: VideoQA, window: int | None) -> PVC:
    """A trained-like add-on with the temporal window ``window`` (the same weights for every window)."""
    return trained_like(pvc_for_model(qa.model, window=window))


def stream_encode(qa: VideoQA, inputs, pvc: PVC, chunk_frames: int) -> tuple[torch.Tensor, list[list[int]]]:
    """Chunked encoding with ``pvc`` attached: features [T', N, D] and, after each tower call, the units carried per layer."""
    carried = []
    visual = vision_tower(qa.model)
    with torch.no_grad(), attach_pvc(qa.model, pvc) as run:
        handle = visual.register_forward_hook(lambda *_: carried.append([kv[0].shape[2] for kv in run.past]))
        try:
            features = qa.adapter.encode(inputs, chunk_frames=chunk_frames).features
        finally:
            handle.remove()
    return features, carried


def reference_temporal(attention, frames: torch.Tensor, window: int | None) -> torch.Tensor:
    """The temporal branch on frames [K, n, C] from its definition: unit t attends to units max(0, t - w + 1) .. t."""
    count, positions, width = frames.shape
    heads = attention.heads
    query, key, value = attention.qkv(attention.norm(frames)).view(count, positions, 3, heads, -1).unbind(2)
    out = []
    for t in range(count):
        first = 0 if window is None else max(0, t - window + 1)
        scores = torch.einsum("nhd,unhd->nhu", query[t], key[first : t + 1]) / (width // heads) ** 0.5
        out.append(torch.einsum("nhu,unhd->nhd", scores.softmax(-1), value[first : t + 1]).reshape(positions, width))
    return attention.gate * attention.proj(torch.stack(out))


@pytest.mark.parametrize("window", [None, 1, 2, 3, 9])
def test_temporal_attention_module_with_a_window(window):
    """Fed in chunks, the branch matches its definition; the carried keys/values hold the last w - 1 units only."""
    from vidpress.pvc import CausalTemporalAttention

    torch.manual_seed(0)
    attention = CausalTemporalAttention(16, 2)
    with torch.no_grad():
        attention.gate.normal_()
        frames = torch.randn(7, 5, 16)
        expected = reference_temporal(attention, frames, window)
        past, start = None, 0
        for size in (1, 3, 2, 1):
            out, past = attention(frames[start : start + size], past, window)
            start += size
            torch.testing.assert_close(out, expected[start - size : start], rtol=1e-5, atol=1e-6)
            assert past[0].shape == past[1].shape == (5, 2, start if window is None else min(start, window - 1), 8)
            if window is not None:
                assert past[0].untyped_storage().nbytes() == past[0].numel() * past[0].element_size(), "dropped units held"
        if window is not None and window < 7:  # units before t - w + 1 do not reach unit t = 6 at all
            changed = frames.clone()
            changed[: 7 - window] = torch.randn(7 - window, 5, 16)
            assert torch.equal(attention(changed, window=window)[0][-1], attention(frames, window=window)[0][-1])
            assert not torch.allclose(attention(changed)[0][-1], attention(frames)[0][-1]), "without the window they do"
        assert torch.equal(attention(frames)[0], attention(frames, window=None)[0])


def test_window_covering_the_video_equals_no_window(qa25):
    inputs = qa25.adapter.prepare(make_video(12), QUESTION)  # 6 units
    full = tower_features(qa25, inputs, windowed_pvc(qa25, None))
    full_chunked = stream_encode(qa25, inputs, windowed_pvc(qa25, None), 4)[0]
    for window in (6, 100):
        assert torch.equal(tower_features(qa25, inputs, windowed_pvc(qa25, window)), full)
        assert torch.equal(stream_encode(qa25, inputs, windowed_pvc(qa25, window), 4)[0], full_chunked)
    assert not torch.allclose(tower_features(qa25, inputs, windowed_pvc(qa25, 5)), full), "degenerate test: no window effect"


def test_window_limits_what_each_unit_sees(qa25):
    """Each layer reaches w - 1 units back, so the tower's L layers reach L (w - 1) units back (here 2: units 1, 2)."""
    adapter = qa25.adapter
    frames = random_frames(12, 112, 112, seed=0)
    earlier = frames.copy()
    earlier[:2] = random_frames(2, 112, 112, seed=2)  # unit 0 changes
    videos = [adapter.prepare(load_video(list(f), source_fps=4.0), QUESTION) for f in (frames, earlier)]
    pvc = windowed_pvc(qa25, 2)
    assert pvc.config.layers == 2
    base, changed = (tower_features(qa25, inputs, pvc) for inputs in videos)
    assert torch.equal(changed[3:], base[3:]), "a unit sees units beyond its window"
    assert not torch.allclose(changed[2], base[2]), "degenerate test: the layers do not chain their windows"
    full, full_changed = (tower_features(qa25, inputs, windowed_pvc(qa25, None)) for inputs in videos)
    assert not torch.allclose(full_changed[5], full[5]), "degenerate test: without a window the last unit sees unit 0"


@pytest.mark.parametrize("window", [1, 3])
def test_chunked_encoding_with_a_window_equals_one_shot(qa25, window):
    inputs = qa25.adapter.prepare(make_video(12), QUESTION)
    pvc = windowed_pvc(qa25, window)
    one_shot = tower_features(qa25, inputs, pvc)
    for chunk in (1000, 2, 4, 6):
        torch.testing.assert_close(stream_encode(qa25, inputs, pvc, chunk)[0], one_shot, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(one_shot, tower_features(qa25, inputs, windowed_pvc(qa25, None)))


@pytest.mark.parametrize(("window", "chunk"), [(1, 2), (3, 2), (3, 6), (3, 1000), (None, 2)])
def test_carried_state_is_bounded_by_the_window(qa25, window, chunk):
    inputs = qa25.adapter.prepare(make_video(12), QUESTION)
    _, carried = stream_encode(qa25, inputs, windowed_pvc(qa25, window), chunk)
    units = [min(6, (call + 1) * chunk // 2) for call in range(len(carried))]  # units seen after each call
    assert carried == [[seen if window is None else min(seen, window - 1)] * 2 for seen in units]


def test_save_load_keeps_the_window(qa25, tmp_path):
    import json

    folder = save_pvc(windowed_pvc(qa25, 3), tmp_path / "pvc")
    assert json.loads((folder / "pvc_config.json").read_text())["window"] == 3
    assert load_pvc(folder).config.window == 3
    assert PVCPress(checkpoint=str(folder)).module(qa25.model).config.window == 3
    assert PVCPress(checkpoint=str(folder), window=5).module(qa25.model).config.window == 5, "the press's window overrides"
    inputs = qa25.adapter.prepare(make_video(12), QUESTION)
    assert torch.equal(tower_features(qa25, inputs, load_pvc(folder)), tower_features(qa25, inputs, windowed_pvc(qa25, 3)))
    older = json.loads((folder / "pvc_config.json").read_text())
    del older["window"]  # a checkpoint saved before the window existed
    (folder / "pvc_config.json").write_text(json.dumps(older))
    assert load_pvc(folder).config.window is None


def test_bad_window_is_an_error(qa25):
    from vidpress.pvc import PVCConfig
    from vidpress.pvc.training import PVCTrainConfig

    for window in (0, -2):
        with pytest.raises(ValueError, match="window"):
            PVCPress(window=window)
        with pytest.raises(ValueError, match="window"):
            PVCConfig(vision_width=8, vision_heads=2, llm_width=8, llm_heads=2, window=window)
        with pytest.raises(ValueError, match="window"):
            pvc_for_model(qa25.model, window=window)
        with pytest.raises(ValueError, match="window"):
            PVCTrainConfig(model="m", data="d", output="o", window=window)


def test_training_config_window_reaches_the_addon(tiny_checkpoints, tmp_path):
    from typer.testing import CliRunner

    from vidpress.pvc.training import PVCObjective, PVCTrainConfig
    from vidpress.train_cli import train_app

    config = lambda window: PVCTrainConfig(model=str(tiny_checkpoints["qwen2_5_vl"]), data="d", output="o", window=window)
    objective = PVCObjective(config(2))
    objective.load(None, torch.device("cpu"))
    assert objective.trainable.pvc.config.window == 2
    objective.save(objective.trainable, tmp_path)
    assert PVCObjective(config(2)).load(tmp_path, torch.device("cpu")) is not None  # resuming with the same window
    with pytest.raises(ValueError, match="window"):
        PVCObjective(config(None)).load(tmp_path, torch.device("cpu"))
    assert "--window" in CliRunner().invoke(train_app, ["pvc", "--help"], terminal_width=200).output


# -- InternVL: a unit is one frame, InternViT's blocks hold [T, n, C] (PVC's own setting: 4 x 64 tokens per image) --
@pytest.fixture(scope="module")
def internvl_qa(tmp_path_factory) -> VideoQA:
    from vidpress.tiny_families import build_tiny_internvl

    model, processor = build_tiny_internvl()
    folder = tmp_path_factory.mktemp("pvc_internvl")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return VideoQA.from_pretrained(folder, device="cpu")


def internvl_features(qa: VideoQA, frames, pvc: PVC | None = None, chunk_frames: int = 1000) -> torch.Tensor:
    """[T, 16, D] the LLM tokens of ``frames`` (with ``pvc`` attached, streaming, when given)."""
    inputs = qa.adapter.prepare(load_video(list(frames), source_fps=4.0), QUESTION)
    with torch.no_grad():
        if pvc is None:
            return qa.adapter.encode(inputs, chunk_frames=chunk_frames).features
        with attach_pvc(qa.model, pvc) as run:
            features = qa.adapter.encode(inputs, chunk_frames=chunk_frames).features
        assert run.units_seen == len(frames), "a unit is one frame on InternVL"
        return features


def test_internvl_untrained_pvc_is_identity_and_trained_pvc_is_causal(internvl_qa):
    frames = random_frames(6, 112, 112, seed=0)
    assert torch.equal(internvl_features(internvl_qa, frames, pvc_for_model(internvl_qa.model)), internvl_features(internvl_qa, frames))
    pvc = trained_like(pvc_for_model(internvl_qa.model))
    base = internvl_features(internvl_qa, frames, pvc)
    later = frames.copy()
    later[3:] = random_frames(3, 112, 112, seed=1)
    changed = internvl_features(internvl_qa, later, pvc)
    assert torch.equal(changed[:3], base[:3]), "a frame's output depends on later frames"
    earlier = frames.copy()
    earlier[0] = random_frames(1, 112, 112, seed=2)[0]
    assert not torch.allclose(internvl_features(internvl_qa, earlier, pvc)[1], base[1]), "degenerate test: no mixing over time"
    assert not torch.allclose(base, internvl_features(internvl_qa, frames)), "degenerate test: PVC changed nothing"


def test_internvl_chunked_encoding_with_pvc_equals_one_shot(internvl_qa):
    frames = random_frames(7, 112, 112, seed=0)
    pvc = trained_like(pvc_for_model(internvl_qa.model))
    whole = internvl_features(internvl_qa, frames, pvc)
    for chunk in (1, 3):
        torch.testing.assert_close(internvl_features(internvl_qa, frames, pvc, chunk_frames=chunk), whole, rtol=1e-4, atol=1e-5)


def test_internvl_press_and_image_token_counts(internvl_qa):
    video = make_video(8)
    full = internvl_qa.ask(video, QUESTION, max_new_tokens=6)
    assert full.stats.visual_tokens_after == 8 * 16
    kept_all = internvl_qa.ask(video, QUESTION, press=PVCPress(tokens_per_frame=16), max_new_tokens=6)
    assert kept_all.token_ids == full.token_ids
    assert internvl_qa.ask(video, QUESTION, press=PVCPress(tokens_per_frame=4), max_new_tokens=6).stats.visual_tokens_after == 8 * 4
    image = pvc_image_frames(random_frames(1, 112, 112, seed=3)[0])
    answer = internvl_qa.ask(image, QUESTION, press=PVCPress(tokens_per_frame=4), max_new_tokens=4)
    assert answer.stats.visual_tokens_after == 4 * 4, "an image is 4 frames of tokens_per_frame tokens, as in the paper"


def test_internvl_training_step_updates_only_the_addon_and_its_projector(internvl_qa, tmp_path):
    from vidpress.pvc.training import pvc_training_step, trainable_parameters
    from vidpress.train.encode import encode_conversation

    model = internvl_qa.model
    pvc = pvc_for_model(model)
    parameters = trainable_parameters(model, pvc, train_projector=True)
    before_model = {name: p.detach().clone() for name, p in model.named_parameters()}
    before_pvc = {name: p.detach().clone() for name, p in pvc.named_parameters()}
    optimizer = torch.optim.AdamW(parameters, lr=1e-2, weight_decay=0.0)
    sample = encode_conversation(internvl_qa.adapter, make_video(6), (("user", QUESTION), ("assistant", "The answer is B.")))
    assert sample.unit_counts.tolist() == [16] * 6
    losses = [pvc_training_step(internvl_qa.adapter, pvc, sample, optimizer, tokens_per_frame=4) for _ in range(3)]
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, before_model[name]) for name, p in model.named_parameters()), "the base model changed"
    changed = {name for name, p in pvc.named_parameters() if not torch.equal(p, before_pvc[name])}
    for name in ("temporal.0.gate", "modulation.0.linear.weight", "compressor.gate"):
        assert name in changed
    assert any(name.startswith("merger.") for name in changed), "the projector copy did not train"
    loaded = load_pvc(save_pvc(pvc, tmp_path / "addon"), model)
    video = make_video(6)
    trained = internvl_qa.ask(video, QUESTION, press=PVCPress(4, checkpoint=str(tmp_path / "addon")), max_new_tokens=4)
    assert trained.stats.visual_tokens_after == 6 * 4
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), pvc.state_dict().values()))
