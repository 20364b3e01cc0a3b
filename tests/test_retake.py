"""ReTaKe (DPSelect, PivotKV) and AdaReTaKe presses on the tiny models of every family."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from vidpress import VideoQA, load_video
from vidpress.attention import bottom_right_causal_mask
from vidpress.functional import (
    dpselect_num_keep,
    frame_distances,
    keep_indices_from_scores,
    pivotkv_keep,
    pivotkv_keep_len,
    prompt_guided_scores,
    window_peaks,
)
from vidpress.generation import greedy_decode, prefill, segment_bounds
from vidpress.presses import Press, PressContext
from vidpress.presses.adaretake import AdaReTaKePress
from vidpress.presses.dpselect import DPSelectPress
from vidpress.presses.kv_eviction import attention_hooks
from vidpress.presses.pivotkv import PivotKVPress
from vidpress.presses.retake import ReTaKePress
from tests.helpers import random_frames

QUESTION = "What object appeared in the video?"
CHUNK = 4  # frames per prefill chunk: 2 Qwen-VL temporal units


def make_video(num_frames: int = 16, seed: int = 0):
    return load_video(list(random_frames(num_frames, seed=seed)), source_fps=4.0)


@dataclasses.dataclass
class Run:
    """One prefill as ``VideoQA.ask`` runs it, with what the tests inspect."""

    inputs: object
    encoded: object
    context: PressContext
    segments: list
    cache: object
    logits: torch.Tensor


def run_prefill(qa: VideoQA, presses: list[Press], video=None, question: str = QUESTION) -> Run:
    """The stages of ``ask`` up to the end of the prefill (one question), keeping the cache."""
    adapter = qa.adapter
    encoded = adapter.encode(adapter.prepare(video or make_video(), question))
    context = PressContext(adapter=adapter, question=question, encoded=encoded)
    keep = torch.ones(encoded.features.shape[:2], dtype=torch.bool)
    for press in presses:
        keep = press.select_tokens(encoded, keep, context)
    inputs = adapter.build_inputs(encoded, keep)
    context.inputs = inputs
    chunk = min((p.chunk_frames for p in presses if p.chunk_frames), default=None)
    segments = segment_bounds(encoded, inputs, chunk, adapter.temporal_patch_size, split_question=False)
    cache = adapter.new_cache()
    with torch.no_grad():
        logits = prefill(adapter, inputs, cache, segments, presses, context)
    return Run(inputs, encoded, context, segments, cache, logits)


class ChunkRecorder(Press):
    """Put first in a press list: records every layer's query and keys of each video chunk before any eviction."""

    def __init__(self):
        self.chunks: list[dict] = []
        self._segment = None
        self._adapter = None

    @contextlib.contextmanager
    def prefill_hooks(self, context):
        self._adapter = context.adapter
        with attention_hooks(context.adapter, self._record):
            yield

    def before_segment(self, segment, context, *, is_video):
        self._segment = segment if is_video else None
        if is_video:
            self.chunks.append({"source_index": segment.source_index, "keys": {}, "query": {}, "cached_keys": {}})

    def after_segment(self, segment, cache, context, *, is_video):
        self._segment = None

    def _record(self, layer_index, hidden_states, position_embeddings, cache):
        if self._segment is not None:
            keys = cache.layers[layer_index].keys[:, :, -hidden_states.shape[1]:].clone()  # [1, H_kv, L, D]
            chunk = self.chunks[-1]
            chunk["cached_keys"][layer_index] = keys
            chunk["keys"][layer_index] = keys[0].transpose(0, 1).flatten(1)
            chunk["query"][layer_index] = self._adapter.layer_qk(layer_index, hidden_states, position_embeddings)[0]


def kept_indices(run: Run, recorder: ChunkRecorder, kept_counts: list[list[int]]) -> list[list[torch.Tensor]]:
    """Per chunk, per layer: indices (within the chunk) of the entries left in the cache, by exact row match."""
    first_chunk = next(a for a, b, is_video in run.segments if is_video)
    result = []
    offsets = [first_chunk] * len(run.cache.layers)
    for chunk, counts in zip(recorder.chunks, kept_counts):
        per_layer = []
        for layer, count in enumerate(counts):
            cached = run.cache.layers[layer].keys[0, :, offsets[layer]: offsets[layer] + count]
            rows = cached.transpose(0, 1).flatten(1)
            match = (rows[:, None] == chunk["keys"][layer][None]).all(-1)  # [kept, L]
            assert match.any(1).all(), "a cached entry is not one of its chunk's entries"
            per_layer.append(match.float().argmax(1))
            offsets[layer] += count
        result.append(per_layer)
    return result


def video_chunk_lengths(run: Run) -> list[int]:
    return [b - a for a, b, is_video in run.segments if is_video]


# -- keep everything ----------------------------------------------------------------------------------------
KEEP_ALL = {
    "dpselect": lambda: [DPSelectPress()],
    "pivotkv": lambda: [PivotKVPress(ratio=1.0, chunk_frames=CHUNK)],
    "retake": lambda: [ReTaKePress(chunk_frames=CHUNK)],
    "dpselect+pivotkv": lambda: [DPSelectPress(), PivotKVPress(chunk_frames=CHUNK, hard_pivots=True)],
    "adaretake": lambda: [AdaReTaKePress(chunk_frames=CHUNK)],
}


@pytest.mark.parametrize("name", list(KEEP_ALL))
def test_keep_everything_equals_ask_without_press(tiny_qa, family, name):
    qa = tiny_qa[family]
    video = make_video()
    plain = qa.ask(video, QUESTION, max_new_tokens=10)
    pressed = qa.ask(video, QUESTION, press=KEEP_ALL[name](), max_new_tokens=10)
    assert pressed.token_ids == plain.token_ids
    assert pressed.stats.kv_length_per_layer == plain.stats.kv_length_per_layer


def test_chunked_prefill_without_eviction_equals_one_shot(tiny_qa, family):
    qa = tiny_qa[family]
    one_shot = run_prefill(qa, [])
    chunked = run_prefill(qa, [DPSelectPress(), PivotKVPress(ratio=1.0, chunk_frames=CHUNK)])
    assert len(one_shot.segments) == 1 and len(video_chunk_lengths(chunked)) == 4
    torch.testing.assert_close(chunked.logits, one_shot.logits, rtol=1e-4, atol=1e-5)
    for full, pieces in zip(one_shot.cache.layers, chunked.cache.layers):
        torch.testing.assert_close(pieces.keys, full.keys, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(pieces.values, full.values, rtol=1e-4, atol=1e-5)


# -- PivotKV -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.5, 0.2, None])
def test_pivotkv_cache_length_per_layer(tiny_qa, family, ratio):
    qa = tiny_qa[family]
    full_length = len(run_prefill(qa, []).inputs)
    press = PivotKVPress(ratio=ratio, chunk_frames=CHUNK, max_input_length=full_length // 3)
    run = run_prefill(qa, [press])
    expected_ratio = ratio if ratio is not None else (full_length // 3) / full_length
    assert run.context.stats["pivotkv"]["ratio"] == pytest.approx(expected_ratio)
    chunks = video_chunk_lengths(run)
    expected = len(run.inputs) - sum(length - max(1, int(expected_ratio * length)) for length in chunks)
    assert [run.cache.get_seq_length(i) for i in range(len(run.cache.layers))] == [expected] * len(run.cache.layers)
    answer = qa.ask(make_video(), QUESTION, press=press, max_new_tokens=4)
    assert answer.stats.kv_length_per_layer == [expected] * len(run.cache.layers)
    assert answer.stats.press["pivotkv"]["chunk_lengths"] == chunks


def test_soft_pivot_scores_through_the_press(tiny_qa, family):
    qa = tiny_qa[family]
    captured = {}

    class FirstChunkCapture(Press):
        video = False

        def prefill_hooks(self, context):
            return attention_hooks(context.adapter, self.capture)

        def before_segment(self, segment, context, *, is_video):
            self.video = is_video

        def capture(self, layer_index, hidden_states, position_embeddings, cache):
            if self.video and layer_index == 1 and "hidden" not in captured:
                captured.update(hidden=hidden_states, position_embeddings=position_embeddings)

    run_prefill(qa, [FirstChunkCapture(), PivotKVPress(ratio=1.0, chunk_frames=CHUNK)])
    hidden, position_embeddings = captured["hidden"], captured["position_embeddings"]
    pivots = torch.zeros(hidden.shape[1], dtype=torch.bool)
    pivots[::3] = True
    press = PivotKVPress()
    raw = press.scores(qa.adapter, 1, hidden, position_embeddings, None)
    soft = press.scores(qa.adapter, 1, hidden, position_embeddings, pivots)
    assert raw.mean().item() == pytest.approx(1.0, abs=1e-5)
    assert raw.std() > 0.05, "degenerate test: flat scores"
    assert torch.equal(soft[pivots], torch.ones(int(pivots.sum())))
    assert torch.equal(soft[~pivots], raw[~pivots])
    hard = PivotKVPress(hard_pivots=True).scores(qa.adapter, 1, hidden, position_embeddings, pivots)
    assert torch.equal(hard, raw)


def test_hard_pivots_are_kept(tiny_qa, family):
    """Each layer keeps the top PivotKV scores of its chunk (from the query and the cached rotated keys)."""
    qa = tiny_qa[family]
    dropped_soft = 0
    for hard in (True, False):
        recorder = ChunkRecorder()
        press = PivotKVPress(ratio=0.5, chunk_frames=CHUNK, hard_pivots=hard)
        run = run_prefill(qa, [DPSelectPress(), recorder, press])
        stats = run.context.stats["pivotkv"]
        layers = len(run.cache.layers)
        kept = kept_indices(run, recorder, [[k] * layers for k in stats["chunk_kept"]])
        pivot_of_source = torch.zeros(run.encoded.input_ids.shape[1], dtype=torch.bool)
        pivot_of_source[run.encoded.video_token_index.flatten()] = run.context.pivot_mask.flatten()
        for chunk, per_layer in zip(recorder.chunks, kept):
            pivot_mask = pivot_of_source[chunk["source_index"]]
            pivots = pivot_mask.nonzero().squeeze(1)
            for layer, indices in enumerate(per_layer):
                query, key = chunk["query"][layer], chunk["cached_keys"][layer]
                assert torch.equal(indices, pivotkv_keep(query, key, len(indices), pivot_mask, hard))
                missing = set(pivots.tolist()) - set(indices.tolist())
                if hard:
                    if len(pivots) <= len(indices):
                        assert not missing
                    else:
                        assert set(indices.tolist()) <= set(pivots.tolist())
                dropped_soft += len(missing) * (not hard)
    assert dropped_soft > 0, "degenerate test: soft pivots were all kept too"


# -- decoding from a pruned cache ---------------------------------------------------------------------------
MASKED = "vidpress_test_masked_sdpa"
ALIVE: dict[int, torch.Tensor] = {}


def masked_sdpa(module, query, key, value, attention_mask, **kwargs):
    """SDPA over the full cache, hiding the entries a press evicted (its own chunk's queries still see them)."""
    query_length, key_length = query.shape[2], key.shape[2]
    alive = torch.ones(key_length, dtype=torch.bool)
    known = ALIVE[module.layer_idx][:key_length]
    alive[: len(known)] = known
    alive[key_length - query_length:] = True
    mask = bottom_right_causal_mask(query_length, key_length, query.device) & alive.to(query.device)
    return sdpa_attention_forward(module, query, key, value, mask, **kwargs)


AttentionInterface.register(MASKED, masked_sdpa)
AttentionMaskInterface.register(MASKED, sdpa_mask)


@contextlib.contextmanager
def attention_implementation(qa: VideoQA, name: str):
    config = qa.model.config.get_text_config()
    previous, config._attn_implementation = config._attn_implementation, name
    try:
        yield
    finally:
        config._attn_implementation = previous


def kv_press(name: str, full_length: int) -> Press:
    if name == "pivotkv":
        return PivotKVPress(ratio=0.4, chunk_frames=CHUNK)
    return AdaReTaKePress(chunk_frames=CHUNK, max_input_length=int(0.4 * full_length))


@pytest.mark.parametrize("name", ["pivotkv", "adaretake"])
def test_decoding_from_pruned_cache_equals_masked_recomputation(tiny_qa, family, name):
    """The pruned per-layer caches decode exactly as the full model whose attention hides the evicted entries."""
    qa = tiny_qa[family]
    full_length = len(run_prefill(qa, []).inputs)
    recorder = ChunkRecorder()
    press = kv_press(name, full_length)
    pruned = run_prefill(qa, [DPSelectPress(), recorder, press])
    stats = pruned.context.stats[name]
    layers = len(pruned.cache.layers)
    counts = [c if isinstance(c, list) else [c] * layers for c in stats["chunk_kept"]]
    kept = kept_indices(pruned, recorder, counts)
    ALIVE.clear()
    for layer in range(layers):
        alive = torch.ones(len(pruned.inputs), dtype=torch.bool)
        for (start, end), per_layer in zip([(a, b) for a, b, v in pruned.segments if v], kept):
            alive[start:end] = False
            alive[start + per_layer[layer]] = True
        ALIVE[layer] = alive
    assert int((~ALIVE[0]).sum()) > 0
    next_position = int(pruned.inputs.positions[..., -1].max()) + 1
    with torch.no_grad():
        tokens = greedy_decode(qa.adapter, pruned.logits, pruned.cache, next_position, 8)
        with attention_implementation(qa, MASKED):
            reference = run_prefill(qa, [DPSelectPress(), PivotKVPress(ratio=1.0, chunk_frames=CHUNK)])
            reference_tokens = greedy_decode(qa.adapter, reference.logits, reference.cache, next_position, 8)
    torch.testing.assert_close(pruned.logits, reference.logits, rtol=1e-4, atol=1e-5)
    assert tokens == reference_tokens
    plain = run_prefill(qa, [])
    assert not torch.allclose(pruned.logits, plain.logits, atol=1e-3), "degenerate test: eviction changed nothing"


def test_ask_many_shares_the_pruned_video_prefill(tiny_qa, family):
    qa = tiny_qa[family]
    video = make_video()
    questions = [QUESTION, "How many times did the red circle appear?"]
    press = [DPSelectPress(), PivotKVPress(ratio=0.4, chunk_frames=CHUNK)]
    many = qa.ask_many(video, questions, press=press, max_new_tokens=6)
    single = [qa.ask(video, q, press=press, max_new_tokens=6) for q in questions]
    assert [a.token_ids for a in many] == [a.token_ids for a in single]
    assert [a.stats.kv_length_per_layer for a in many] == [a.stats.kv_length_per_layer for a in single]


# -- AdaReTaKe ---------------------------------------------------------------------------------------------
def test_adaretake_budgets(tiny_qa, family):
    qa = tiny_qa[family]
    full_length = len(run_prefill(qa, []).inputs)
    press = AdaReTaKePress(chunk_frames=CHUNK, max_input_length=int(0.4 * full_length))
    run = run_prefill(qa, [press])
    stats = run.context.stats["adaretake"]
    base = int(0.4 * full_length) / full_length
    assert stats["base_ratio"] == pytest.approx(base)
    ratios, lengths = stats["chunk_ratios"], stats["chunk_lengths"]
    assert lengths == video_chunk_lengths(run)
    assert sum(ratios) == pytest.approx(base * len(ratios), abs=1e-4)
    assert all(1e-3 <= r <= 1 for r in ratios) and max(ratios) - min(ratios) > 0.05
    layers = len(run.cache.layers)
    for ratio, length, keeps in zip(ratios, lengths, stats["chunk_kept"]):
        target = layers * ratio * length
        assert target - layers < sum(keeps) <= target + layers * max(1, 0.01 * length)
    kv = [run.cache.get_seq_length(i) for i in range(layers)]
    assert kv == [len(run.inputs) - sum(length - keeps[i] for length, keeps in zip(lengths, stats["chunk_kept"]))
                  for i in range(layers)]
    assert len(set(kv)) > 1, "layer budgets should differ between layers"

    flat = run_prefill(qa, [dataclasses.replace(press, temporal=False, layer=False)])
    flat_stats = flat.context.stats["adaretake"]
    assert flat_stats["chunk_ratios"] == [pytest.approx(base)] * len(lengths)
    assert flat_stats["chunk_kept"] == [[pivotkv_keep_len(n, base)] * layers for n in lengths]


def test_adaretake_scores_come_from_the_question_appended_to_the_chunk(tiny_qa, family):
    """First chunk: the kept entries are the top scores of the question run right after [text, chunk]."""
    qa = tiny_qa[family]
    adapter = qa.adapter
    full_length = len(run_prefill(qa, []).inputs)
    recorder = ChunkRecorder()
    press = AdaReTaKePress(chunk_frames=CHUNK, max_input_length=int(0.4 * full_length), max_guide_length=6)
    run = run_prefill(qa, [recorder, press])
    layers = len(run.cache.layers)
    kept = kept_indices(run, recorder, run.context.stats["adaretake"]["chunk_kept"])[0]

    (text_end, chunk_end, _), question_start = run.segments[1], run.segments[-1][0]
    inputs, cache = run.inputs, adapter.new_cache()
    question = inputs.slice(len(inputs) - 6, len(inputs))
    assert len(inputs) - 6 >= question_start
    shift = question.positions[0, 0, 0] - inputs.positions[0, 0, chunk_end - 1] - 1
    captured = {}
    with torch.no_grad():
        adapter.forward(inputs.slice(0, chunk_end), cache)
        hook = lambda i, hidden, rope, _: captured.__setitem__(i, adapter.layer_qk(i, hidden, rope)[0])  # noqa: E731
        with attention_hooks(adapter, hook):
            adapter.forward(dataclasses.replace(question, positions=question.positions - shift), cache)
    for layer in range(layers):
        keys = cache.layers[layer].keys[:, :, text_end:chunk_end]
        scores = prompt_guided_scores(captured[layer], keys)
        expected = keep_indices_from_scores(scores, len(kept[layer]))
        assert torch.equal(kept[layer], expected)


# -- DPSelect ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sync", [True, False])
def test_dpselect_drops_tokens(tiny_qa, family, sync):
    qa = tiny_qa[family]
    video = make_video()
    run = run_prefill(qa, [DPSelectPress(keep_ratio=0.5, sync=sync)], video=video)
    keep = run.inputs.video_keep
    units, tokens = keep.shape
    num_keep = dpselect_num_keep(units, 0.5)
    assert (keep.sum(0) == num_keep).all()
    if sync:
        assert (keep.all(1) | ~keep.any(1)).all()
    else:
        assert not (keep.all(1) | ~keep.any(1)).all(), "degenerate test: async kept whole units"
    pivots = run.context.pivot_mask
    assert pivots.any() and not (pivots & ~keep).any()
    answer = qa.ask(video, QUESTION, press=DPSelectPress(keep_ratio=0.5, sync=sync), max_new_tokens=4)
    assert answer.stats.visual_tokens_after == num_keep * tokens
    assert answer.stats.frames_kept == (2 * num_keep if sync else len(video))
    assert answer.stats.press["dpselect"]["pivots"] == int(pivots.sum())


def test_dpselect_keep_all_only_marks_pivots(tiny_qa, family):
    qa = tiny_qa[family]
    run = run_prefill(qa, [DPSelectPress()])
    assert run.inputs.video_keep.all()
    assert run.context.pivot_mask.shape == run.encoded.features.shape[:2]
    peaks = window_peaks(frame_distances(run.encoded.features)).cpu()
    assert torch.equal(run.context.pivot_mask, peaks)
    assert 0 < int(peaks.sum()) < peaks.numel()


def test_qwen3_video_chunks_carry_their_own_deepstack_features(tiny_qa):
    qa = tiny_qa["qwen3_vl"]
    run = run_prefill(qa, [DPSelectPress(keep_ratio=0.5), PivotKVPress(ratio=0.5, chunk_frames=CHUNK)])
    encoded, inputs = run.encoded, run.inputs
    assert len(encoded.deepstack) == 2
    flat_of_source = {int(s): i for i, s in enumerate(encoded.video_token_index.flatten())}
    chunks = 0
    for start, end, is_video in run.segments:
        segment = inputs.slice(start, end)
        flat = [flat_of_source[int(s)] for s in segment.source_index if int(s) in flat_of_source]
        chunks += bool(is_video)
        assert is_video == bool(flat)
        assert torch.equal(segment.video_embeds, encoded.features.flatten(0, 1)[flat])
        assert len(segment.deepstack) == 2
        for kept, full in zip(segment.deepstack, encoded.deepstack):
            assert torch.equal(kept, full.flatten(0, 1)[flat])
    assert chunks == 4


# -- presets and parameters --------------------------------------------------------------------------------
def test_retake_preset_equals_the_composed_list(tiny_qa):
    qa = tiny_qa["qwen2_vl"]
    video = make_video()
    preset = qa.ask(video, QUESTION, press=ReTaKePress(ratio=0.4, chunk_frames=CHUNK), max_new_tokens=8)
    listed_presses = [DPSelectPress(), PivotKVPress(ratio=0.4, chunk_frames=CHUNK)]
    listed = qa.ask(video, QUESTION, press=listed_presses, max_new_tokens=8)
    assert preset.token_ids == listed.token_ids
    assert preset.stats.kv_length_per_layer == listed.stats.kv_length_per_layer
    assert preset.stats.press["pivotkv"] == listed.stats.press["pivotkv"]
    defaults = ReTaKePress()
    assert (defaults.keep_ratio, defaults.sync, defaults.ratio, defaults.max_input_length, defaults.chunk_frames) == \
        (1.0, False, None, 32000, 32)


@pytest.mark.parametrize("build", [
    lambda: DPSelectPress(keep_ratio=0.0),
    lambda: DPSelectPress(keep_ratio=1.5),
    lambda: PivotKVPress(ratio=0.0),
    lambda: PivotKVPress(max_input_length=0),
    lambda: PivotKVPress(chunk_frames=0),
    lambda: AdaReTaKePress(max_guide_length=0),
    lambda: AdaReTaKePress(max_input_length=0),
    lambda: ReTaKePress(ratio=2.0),
])
def test_invalid_parameters(build):
    with pytest.raises(ValueError):
        build()
