"""The lmms-eval plugin: the entry point registers model "vidpress", and lmms-eval runs it in-process on a local
task in its YAML format built from the synthetic suite. Skipped when lmms_eval is not importable."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

pytest.importorskip("lmms_eval")

from lmms_eval.evaluator import simple_evaluate  # noqa: E402
from lmms_eval.models import MODEL_REGISTRY_V2  # noqa: E402
from lmms_eval.models.registry_v2 import ModelRegistryV2  # noqa: E402
from lmms_eval.tasks import TaskManager  # noqa: E402

from vidpress import VideoQA  # noqa: E402
from vidpress.eval import load_task  # noqa: E402
from vidpress.eval.lmms_task import write_lmms_task  # noqa: E402
from vidpress.lmms_eval_plugin import VidpressLMMS, manifest, parse_presses  # noqa: E402
from vidpress.presses import UniformFramePress  # noqa: E402
from vidpress.synth import make_suite, write_suite  # noqa: E402

ENTRY_POINT = EntryPoint(name="vidpress", value="vidpress.lmms_eval_plugin:manifest", group="lmms_eval.models")


def test_entry_point_registers_the_vidpress_model(monkeypatch):
    registry = ModelRegistryV2()
    monkeypatch.setattr(registry, "_select_entry_points", lambda group: [ENTRY_POINT] if group == "lmms_eval.models" else [])
    registry.load_entrypoint_manifests()
    assert registry.get_model_class("vidpress") is VidpressLMMS


def test_press_arguments():
    assert parse_presses("uniform", "num_frames:5") == [UniformFramePress(5)]
    assert parse_presses("uniform", "uniform.num_frames:3;") == [UniformFramePress(3)]
    assert parse_presses(None, None) == []
    with pytest.raises(ValueError, match="no parameter"):
        parse_presses("uniform", "frames:5")


def test_lmms_eval_runs_vidpress_on_a_synthetic_task(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    write_suite(make_suite(["needle", "ordering"], [48], 1, seed=1, height=32, width=32), tmp_path / "suite")
    benchmark, samples = load_task("synth", tmp_path / "suite", None, tmp_path)
    write_lmms_task(samples, benchmark, tmp_path / "tasks", name="vidpress_synth_test")
    MODEL_REGISTRY_V2.register_manifest(manifest(), overwrite=True)  # what the installed entry point does
    model = tiny_checkpoints["qwen2_vl"]
    results = simple_evaluate(
        model="vidpress",
        model_args=f"pretrained={model},num_frames=4,press=uniform,press_args=num_frames:2",
        tasks=["vidpress_synth_test"],
        task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False),
        batch_size=1,
        device="cpu",
        log_samples=True,
    )
    scores = results["results"]["vidpress_synth_test"]
    assert 0.0 <= scores["accuracy,none"] <= 1.0 and 0.0 <= scores["unparseable,none"] <= 1.0
    logged = sorted(results["samples"]["vidpress_synth_test"], key=lambda s: s["doc_id"])
    qa = VideoQA.from_pretrained(model, device="cpu")
    expected = [
        qa.ask(s.video, benchmark.prompt(s), press=[UniformFramePress(2)], num_frames=4, max_new_tokens=benchmark.max_new_tokens).text
        for s in samples
    ]
    assert [entry["resps"][0][0].strip() for entry in logged] == [text.strip() for text in expected]
