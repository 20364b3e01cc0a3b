"""scripts/accuracy_study.py: the budget of every method, the work shared by the methods of a sample, and the
study end to end on a random tiny model (two answering processes; rows, budgets kept, study.md and plots;
resuming skips the rows done; other settings are refused)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from vidpress.eval.journal import read_records
from vidpress.pipeline import VideoQA
from vidpress.presses import LPCompPress, PVCPress, ToMePress, UniformFramePress
from vidpress.synth import prompt
from vidpress.video import Video
from vidpress.tiny import save_tiny

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "accuracy_study.py"


@pytest.fixture(scope="module")
def study():
    """The script as a module."""
    spec = importlib.util.spec_from_file_location("accuracy_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny("qwen2_5_vl", tmp_path_factory.mktemp("study") / "model")


# -- the budget mapping, with vidpress-tiny's numbers ----------------------------------------------------------
TINY_FACTS = dict(layers=6, patch=2, unit_tokens=16)


def budget(study, frames: int, fraction: float = 1.0, prompt_length: int = 0):
    return study.Budget.of(study.ModelFacts(**TINY_FACTS), 256, fraction, frames, prompt_length)


def test_budget_is_the_tokens_of_256_frames(study):
    b = budget(study, 1024)
    assert (b.tokens, b.units, b.ratio, b.unit_budget) == (2048, 512, 0.25, 128)
    assert budget(study, 256, fraction=1 / 8).tokens == 256
    assert budget(study, 128).ratio == 1.0


def test_each_method_keeps_the_budget(study):
    b = budget(study, 1024, prompt_length=8245)
    assert study.uniform(b) == [UniformFramePress(num_frames=256)]
    assert study.dpselect(b)[0].keep_ratio == 0.25
    assert study.pivotkv(b)[0].ratio == 0.25
    assert study.retake(b)[0].ratio == 0.25
    assert study.adaretake(b)[0].max_input_length == int(0.25 * 8245)
    assert study.qccomp(b)[0].n_select == 256
    # LP-Comp: 16, 12, 9, 5, 2, 1 tokens per unit in 6 layers; 273 units average 2047.5 per layer, 274 would not fit
    assert study.lpcomp(b) == [UniformFramePress(num_frames=546), LPCompPress(tokens_per_frame=16)]
    assert 273 * 45 / 6 <= 2048 < 274 * 45 / 6
    assert study.xcomp(b)[0].n_select == 546 and study.xcomp(b)[0].tokens_per_frame == 16
    assert study.full(b) == []


def test_pvc_keeps_its_trained_tokens_per_unit(study, tmp_path):
    (tmp_path / "pvc_train_config.json").write_text(json.dumps({"tokens_per_frame": 4}))
    build = study.available_methods(None, tmp_path)["pvc"].build
    [press] = build(budget(study, 1024))  # 512 units x 4 tokens: every frame
    assert isinstance(press, PVCPress) and (press.tokens_per_frame, press.checkpoint) == (4, str(tmp_path))
    first, second = build(budget(study, 4096))  # 2048 units: 512 of them, uniformly
    assert first == UniformFramePress(num_frames=1024) and second.tokens_per_frame == 4


def test_pvc_without_its_training_config_spreads_the_budget(study, tmp_path):
    build = study.available_methods(None, tmp_path)["pvc"].build
    assert build(budget(study, 1024))[0].tokens_per_frame == 4
    assert build(budget(study, 4096))[0].tokens_per_frame == 1
    first, second = build(budget(study, 8192))  # 4096 units: even 1 token each is over
    assert first == UniformFramePress(num_frames=4096) and second.tokens_per_frame == 1


def test_tome_merges_every_unit_to_the_budget(study):
    assert study.tome(budget(study, 1024)) == [ToMePress(tokens_per_frame=4)]  # 512 units x 4 tokens
    assert study.tome(budget(study, 4096)) == [ToMePress(tokens_per_frame=1)]
    assert study.tome(budget(study, 8192)) == [UniformFramePress(num_frames=4096), ToMePress(tokens_per_frame=1)]
    assert study.tome(budget(study, 256)) == [ToMePress(tokens_per_frame=16)]  # within the budget: nothing merged


def test_sct_model_runs_the_lpcomp_it_was_tuned_with(study, tmp_path):
    schedule = (16, 8, 4, 2, 1, 1)
    config = {"tokens_per_frame": 16, "schedule": list(schedule), "keep": "uniform"}
    (tmp_path / "sct_config.json").write_text(json.dumps(config))
    method = study.available_methods(tmp_path, None)["lpcomp-sct"]
    uniform, press = method.build(budget(study, 1024))
    assert method.model == "sct" and press == LPCompPress(tokens_per_frame=16, schedule=schedule, keep="uniform")
    assert uniform == UniformFramePress(num_frames=2 * (2048 * 6 // sum(schedule)))  # 384 units average 2048 per layer


def test_short_videos_keep_everything(study):
    b = budget(study, 128)
    assert study.uniform(b)[0].num_frames >= 128 and study.lpcomp(b) == [LPCompPress(tokens_per_frame=16)]


# -- shared work across the methods of a sample -----------------------------------------------------------------
def test_shared_inputs_and_encoding_give_the_same_answers(study, tiny_model):
    """The worker's processor inputs and one encoding per frame set answer exactly as VideoQA alone does."""
    methods = study.available_methods(None, None)
    names = ("full", "uniform", "dpselect", "tome", "pivotkv", "lpcomp")
    jobs = tuple(study.Job(m, 1.0) for m in names)
    spec = study.SampleSpec(study.Group("needle", 64, None), study.sample_seed("needle", 0, 0), jobs)
    item = study.RenderedSamples([spec], tiny_model, methods, budget_frames=32)[0]
    plain = VideoQA.from_pretrained(tiny_model, device="cpu")
    shared = study.load_qa(tiny_model, "cpu")
    cache = study.SampleCache()
    cache.install(shared.adapter)
    cache.start(item.inputs)
    facts = study.ModelFacts.of(plain.adapter)
    video, question = Video.from_array(item.frames.numpy(), item.sample.fps), prompt(item.sample)
    prompt_length = item.inputs[study.inputs_key(video, question)]["input_ids"].shape[1]
    budget = study.Budget.of(facts, 32, 1.0, len(video), prompt_length)
    for name in names:
        presses = methods[name].build(budget)
        expected, got = (qa.ask(video, question, press=presses, max_new_tokens=4) for qa in (plain, shared))
        assert got.token_ids == expected.token_ids, name
        assert got.stats.kv_length_per_layer == expected.stats.kv_length_per_layer, name
    assert len(item.inputs) >= 2  # the whole video and uniform's frames (and lpcomp's when it samples)
    assert len(cache.encoded) == len(item.inputs)  # each encoded once, all from the worker's inputs


# -- end to end ---------------------------------------------------------------------------------------------------
ARGS = ["--lengths", "64", "--tasks", "needle", "--per-task", "1", "--methods", "full,uniform,lpcomp",
        "--budget-frames", "32", "--fractions", "1/2", "--depths", "0,1", "--depth-frames", "32", "--device", "cpu"]


def run(study, model: Path, output: Path, *extra: str) -> Path:
    return study.main(["--model", str(model), "--output", str(output), *ARGS, *extra])


def test_study_end_to_end_and_resume(study, tiny_model, tmp_path, monkeypatch):
    output = tmp_path / "study"
    report = run(study, tiny_model, output, "--procs", "2", "--workers", "0")  # two answering processes
    rows = read_records(output / "results.jsonl")
    keys = {(r["method"], r["task"], r["length"], r["depth"], r["fraction"]) for r in rows}
    methods = ("full", "uniform", "lpcomp")
    expected = {(m, "needle", 64, None, 1.0) for m in methods}
    expected |= {("uniform", "needle", 32, None, 0.5), ("lpcomp", "needle", 32, None, 0.5)}
    expected |= {("full", "needle", 32, None, 1.0)}
    expected |= {(m, "needle", 32, depth, 1.0) for m in methods for depth in (0.0, 1.0)}
    assert keys == expected and len(rows) == len(expected)

    for row in rows:
        assert row["n"] == 1 and row["accuracy"] == row["correct"] / row["n"] and 0 <= row["accuracy"] <= 1
        budget_tokens = int(row["fraction"] * 16 * 16)  # 32 frames: 16 units of 16 tokens
        assert row["budget_tokens"] == budget_tokens
        visual = row["length"] // 2 * 16
        if row["method"] == "full":
            assert row["visual_kv"] == row["visual_tokens"] == visual
        else:
            assert 0 < row["visual_kv"] <= budget_tokens
    by_key = {(r["method"], r["length"], r["depth"], r["fraction"]): r for r in rows}
    assert by_key[("uniform", 64, None, 1.0)]["frames_kept"] == 32
    assert by_key[("uniform", 32, None, 0.5)]["visual_tokens"] == 128

    text = report.read_text()
    assert "## Issue targets" in text and "| lpcomp | 1/2 |" in text and "depth 1.00" in text
    assert (output / "accuracy_vs_frames.png").stat().st_size > 0 and (output / "needle_depth.png").stat().st_size > 0

    def no_questions(*args, **kwargs):
        raise AssertionError("a done row was answered again")

    with monkeypatch.context() as patch:  # everything done: no question is asked
        patch.setattr(VideoQA, "ask", no_questions)
        run(study, tiny_model, output, "--workers", "0")
    assert read_records(output / "results.jsonl") == rows

    lines = (output / "results.jsonl").read_text().splitlines()
    dropped = json.loads(lines[4])
    (output / "results.jsonl").write_text("\n".join(lines[:4] + lines[5:]) + "\n")
    asked = []
    original = VideoQA.ask
    monkeypatch.setattr(VideoQA, "ask", lambda self, *a, **k: asked.append(1) or original(self, *a, **k))
    run(study, tiny_model, output, "--workers", "1")  # rendered in a DataLoader worker
    again = read_records(output / "results.jsonl")
    assert len(asked) == 1 and len(again) == len(rows)
    del again[-1]["seconds"], dropped["seconds"]
    assert again[-1] == dropped


def test_other_settings_are_refused(study, tiny_model, tmp_path):
    output = tmp_path / "study"
    output.mkdir()
    (output / "study_config.json").write_text(json.dumps({"model": str(tiny_model.resolve()), "per_task": 5}))
    with pytest.raises(SystemExit, match="per_task"):
        run(study, tiny_model, output, "--workers", "0")


def test_unavailable_methods_are_refused(study, tiny_model, tmp_path):
    with pytest.raises(SystemExit):
        study.main(["--model", str(tiny_model), "--output", str(tmp_path), "--methods", "pvc"])
