"""``vidpress bench`` at toy scale on CPU, its work floors against torch's FLOP counter, and the real configs."""

from __future__ import annotations

import re
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
import transformers as tf
import typer
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from vidpress.bench import ARCHS, Peaks, Result, Row, Settings, get_arch, markdown_section, run_bench, write_markdown
from vidpress.bench.archs import MODEL_CLASSES, load_config
from vidpress.bench.floors import decode_step_bytes, kv_bytes, prefill_flops, vision_flops
from vidpress.bench.runner import ArchBench
from vidpress.bench_cli import bench_command
from vidpress.tiny import build_tiny, build_tokenizer
from tests.test_fast_vision import GRIDS, windowed_qwen2_5_vl

SDPA = "torch.nn.functional.scaled_dot_product_attention"


def counted_flops(run) -> float:
    """FLOPs of ``run()``: torch's counter for matmuls and convolutions, plus 4 * B * H * Lq * Lk * D per SDPA call
    (the counter does not see the CPU attention kernel)."""
    attention = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting(query, key, value, *args, **kwargs):
        attention.append(4 * query.numel() * key.shape[-2])
        return sdpa(query, key, value, *args, **kwargs)

    with torch.no_grad(), mock.patch(SDPA, counting), FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops() + sum(attention)


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl_windows", "qwen3_vl"])
def test_vision_flops_match_the_flop_counter(name):
    model = windowed_qwen2_5_vl() if name == "qwen2_5_vl_windows" else build_tiny(name)[0]
    vision = model.config.vision_config
    grid = torch.tensor(GRIDS)
    pixels = torch.randn(int(grid.prod(1).sum()), vision.in_channels * vision.temporal_patch_size * vision.patch_size**2)
    counted = counted_flops(lambda: model.model.get_video_features(pixels, grid))
    assert vision_flops(model.model.visual, grid) == pytest.approx(counted, rel=1e-6)


def test_prefill_flops_and_kv_bytes_match_a_real_prefill():
    model, _ = build_tiny("qwen2_5_vl")
    input_ids = torch.randint(10, 400, (1, 37))
    counted = counted_flops(lambda: model(input_ids=input_ids, logits_to_keep=1))
    assert prefill_flops(model, 37, causal=False) == pytest.approx(counted, rel=0.02)
    assert prefill_flops(model, 37) < prefill_flops(model, 37, causal=False)
    with torch.no_grad():
        cache = model(input_ids=input_ids, use_cache=True).past_key_values
    stored = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert kv_bytes(model, 37) == stored
    weights = sum(p.numel() * p.element_size() for p in model.model.language_model.parameters())
    assert decode_step_bytes(model, 37) == pytest.approx(weights + stored, rel=0.5)


def test_prefill_flops_per_layer_match_an_lpcomp_prefill(tiny_qa):
    """The prefill's counted work has each decoder layer's own tokens under LP-Comp: its FLOPs match those of
    a real LP-Comp prefill."""
    from tests.test_pipeline import QUESTION, make_video
    from vidpress.presses.lpcomp import LPCompPress

    qa, video, press = tiny_qa["qwen2_5_vl"], make_video(8), LPCompPress(tokens_per_frame=None)
    vision = counted_flops(lambda: qa.adapter.encode(qa.adapter.prepare(video, QUESTION)))
    answered = counted_flops(lambda: qa.ask(video, QUESTION, press=press, max_new_tokens=1))  # encode + prefill
    stats = qa.ask(video, QUESTION, press=press, max_new_tokens=1).stats
    per_layer = stats.prefill_tokens_per_layer
    assert per_layer == stats.press["lpcomp_tokens_per_layer"]
    assert len(set(per_layer)) > 1, "degenerate test: LP-Comp thinned nothing"
    assert prefill_flops(qa.model, per_layer, causal=False) == pytest.approx(answered - vision, rel=0.02)
    assert prefill_flops(qa.model, per_layer, pairs=stats.prefill_pairs_per_layer) == prefill_flops(qa.model, per_layer)
    assert prefill_flops(qa.model, per_layer) < prefill_flops(qa.model, per_layer[0])
    with pytest.raises(ValueError, match="per-layer"):
        prefill_flops(qa.model, per_layer[:-1])


def test_prefill_work_is_counted_as_it_runs(tiny_qa):
    """One causal pass without a press: n tokens and n (n + 1) / 2 pairs in every layer. PivotKV's chunks take
    the same tokens but score fewer pairs (each chunk attends to the entries kept before it), chunk by chunk."""
    from tests.test_retake import CHUNK, QUESTION, make_video
    from vidpress.presses import PivotKVPress

    qa, video = tiny_qa["qwen2_5_vl"], make_video()
    plain = qa.ask(video, QUESTION, max_new_tokens=1).stats
    layers = len(plain.kv_length_per_layer)
    n = plain.llm_input_length
    assert plain.prefill_tokens_per_layer == [n] * layers
    assert plain.prefill_pairs_per_layer == [n * (n + 1) // 2] * layers
    pruned = qa.ask(video, QUESTION, press=PivotKVPress(ratio=0.4, chunk_frames=CHUNK), max_new_tokens=1).stats
    assert pruned.prefill_tokens_per_layer == [n] * layers
    assert all(0 < pairs < n * (n + 1) // 2 for pairs in pruned.prefill_pairs_per_layer)
    assert prefill_flops(qa.model, n, pairs=pruned.prefill_pairs_per_layer) < prefill_flops(qa.model, n)


@pytest.mark.parametrize("name, params, vision_params", [("qwen2_5_vl_7b", 8.29e9, 0.677e9), ("qwen3_vl_8b", 8.77e9, 0.576e9)])
def test_real_configs_build_the_published_sizes(name, params, vision_params):
    arch = get_arch(name)
    tokenizer = build_tokenizer()
    config = load_config(arch, tokenizer)
    assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    with torch.device("meta"):
        model = getattr(tf, MODEL_CLASSES[arch.family])._from_config(config, dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.005)
    assert sum(p.numel() for p in model.model.visual.parameters()) == pytest.approx(vision_params, rel=0.005)
    if name == "qwen2_5_vl_7b":  # DESIGN.md: about 0.8 PFLOP for 2048 frames of 448x252 (32 x 18 patches)
        assert vision_flops(model.model.visual, torch.tensor([[1024, 18, 32]])) == pytest.approx(0.8e15, rel=0.05)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    app = typer.Typer()
    app.command()(bench_command)
    args = [
        "--arch", "tiny", "--frames", "8,16", "--press", "uniform", "--press", "dedup+uniform",
        "--press-arg", "uniform.num_frames=4", "--press-arg", "dedup.threshold=0.05",
        "--max-new-tokens", "3", "--output", str(folder / "benchmarks.md"), "--video-dir", str(folder),
    ]
    runs = []

    def recording(*args, **kwargs):
        runs.append(run_bench(*args, **kwargs))
        return runs[-1]

    with mock.patch("vidpress.bench.run_bench", recording):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output, (folder / "benchmarks.md").read_text(), runs[0]


def table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| tiny |")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_bench_cli_writes_a_table_with_every_row(cli_run):
    output, markdown, _ = cli_run
    assert "vidpress bench --arch tiny --frames 8,16 --press uniform --press dedup+uniform --press-arg uniform.num_frames=4" in markdown
    # flags as run: the tri-state --fast-preprocess is left out when not given
    assert "--stream-preprocess" in markdown and "fast-preprocess" not in markdown.split("Command:")[1].splitlines()[0]
    assert "## tiny on cpu" in markdown and "TFLOP/s" in markdown
    rows = table_rows(markdown)
    assert [(r[1], r[2]) for r in rows] == [
        (frames, method)
        for frames in ("8", "16")
        for method in (
            "transformers", "vidpress", "vidpress + uniform(num_frames=4)", "vidpress + dedup(threshold=0.05)+uniform(num_frames=4)"
        )
    ]
    assert "transformers" in output and "vidpress + uniform" in output


def test_bench_numbers_are_positive(cli_run):
    *_, result = cli_run
    assert result.peaks.flops > 0 and result.peaks.bandwidth > 0
    assert len(result.rows) == 8
    for row in result.rows:
        assert row.ok, row
        for name in ("llm_tokens", "kv_gib", "decode_s", "preprocess_s", "vision_s", "prefill_s", "first_token_s",
                     "ms_per_token", "peak_gib", "vision_fraction", "prefill_fraction", "decode_fraction"):
            assert getattr(row, name) > 0, (name, row)
        assert row.first_token_s >= row.vision_s + row.prefill_s
    plain = [row for row in result.rows if row.method == "vidpress"]
    assert [row.same_tokens_as_stock for row in plain] == [True, True], "vidpress must answer like model.generate"
    uniform = [row for row in result.rows if row.method.endswith("+ uniform(num_frames=4)")]
    assert uniform[1].llm_tokens < plain[1].llm_tokens, "the frame press must shorten the LLM input"
    assert uniform[1].vision_floor_s < plain[1].vision_floor_s, "fewer frames must cost the encoder less"


def test_transformers_rows_run_the_stock_vision_tower(tmp_path):
    """VideoQA switches the tower to the batched attention: the transformers row must switch it back."""
    from vidpress import VideoQA
    from vidpress.bench.archs import build_model
    from vidpress.bench.video import write_synthetic_video
    from vidpress.fast import NAME

    arch = get_arch("tiny")
    model, processor = build_model(arch, torch.device("cpu"), torch.float32)
    bench = ArchBench(VideoQA(model, processor), arch, Settings(archs=["tiny"], frames=[8]), Peaks(device="cpu", flops=1e12, bandwidth=1e10))
    path = tmp_path / "video.mp4"
    write_synthetic_video(path, 8, *arch.frame_size)
    seen = []
    handle = model.model.visual.register_forward_pre_hook(lambda module, args: seen.append(module.config._attn_implementation))
    try:
        bench.stock(path, 8, 2)
        bench.vidpress(path, 8, None, 2)
    finally:
        handle.remove()
        bench.clock.remove()
    assert seen == ["sdpa", NAME]


def fake_result(archs: list[str], frames: int) -> Result:
    row = Row(arch=archs[0], frames=frames, method="vidpress", llm_tokens=10, vision_s=1.0, vision_floor_s=0.5)
    peaks = Peaks(device="cpu", flops=1e12, bandwidth=1e10)
    return Result(peaks=peaks, rows=[row], settings=Settings(archs=archs, frames=[frames]), dtype="float32")


def test_markdown_sections_are_replaced_per_architecture(tmp_path):
    path = tmp_path / "benchmarks.md"
    write_markdown(fake_result(["tiny"], 8), path, "first")
    write_markdown(fake_result(["tiny_qwen3_vl"], 8), path, "second")
    write_markdown(fake_result(["tiny"], 16), path, "third")
    text = path.read_text()
    assert text.startswith("# Benchmarks")
    assert "Command: `second`" in text and "Command: `third`" in text and "Command: `first`" not in text
    assert text.count("<!-- bench:tiny -->") == 1
    assert re.search(r"\| tiny \| 16 \| vidpress \| 10 \|.*\| 50\.0% \|", text)


def test_out_of_memory_becomes_a_noted_row():
    def out_of_memory():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    bench = SimpleNamespace(arch=ARCHS["tiny"], device=torch.device("cpu"))
    row = ArchBench._guarded(bench, 7200, "transformers", out_of_memory)
    assert not row.ok and "OOM" in row.note and row.frames == 7200
    assert "OOM" in markdown_section(
        Result(Peaks("cpu", 1.0, 1.0), [row], Settings(archs=["tiny"], frames=[7200]), "float32"), "cmd"
    )


def test_settings_are_validated():
    with pytest.raises(ValueError, match="unknown architecture"):
        Settings(archs=["gpt"], frames=[8])
    with pytest.raises(ValueError, match="frames"):
        Settings(archs=["tiny"], frames=[])
