"""The GPU demos scripts/sct_demo.py and scripts/pvc_demo.py, end to end on CPU with a random tiny Qwen2.5-VL."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from vidpress import VideoQA
from vidpress.pvc import load_pvc
from vidpress.synth import TASKS
from vidpress.synth.templates import INSTRUCTION

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import pvc_demo  # noqa: E402
import sct_demo  # noqa: E402

TASK_NAMES = ["needle", "localisation"]  # single-needle tasks: they fit in 32 frames


def tiny_args(model: Path, output: Path) -> list[str]:
    """2 training steps on 4 questions, 2 held-out questions per task, 32-frame videos."""
    return [
        "--model", str(model), "--output", str(output), "--tasks", ",".join(TASK_NAMES), "--frames", "32",
        "--train-samples", "4", "--eval-per-task", "2", "--batch-size", "2", "--steps", "2", "--workers", "2", "--device", "cpu",
    ]


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoints) -> Path:
    return tiny_checkpoints["qwen2_5_vl"]


def check_report(output: Path, report: dict, names: list[str]) -> None:
    """The reports on disk hold what main returned: 2 logged steps and an accuracy per task of every configuration."""
    assert json.loads((output / "report.json").read_text()) == report
    assert report["training"]["steps"] == 2 and len(report["training"]["curve"]) == 2
    assert list(report["accuracy"]) == names
    for accuracy in report["accuracy"].values():
        assert list(accuracy) == [*TASK_NAMES, "mean"]
        assert all(0 <= value <= 1 for value in accuracy.values())
    markdown = (output / "report.md").read_text()
    assert f"| task | {' | '.join(names)} |" in markdown and "| mean |" in markdown
    assert {"data", "train", "total"} <= set(report["seconds"])


def test_data_records_answer_with_the_option_text(tmp_path):
    train = sct_demo.training_samples(TASKS, 5, 64, seed=0)
    held_out = sct_demo.held_out_samples(TASKS, 2, 64, seed=0)
    assert max(s.seed for s in train) < sct_demo.HELD_OUT_SEED <= min(s.seed for s in held_out)
    assert [s.task for s in train] == list(TASKS) and len({s.seed for s in held_out}) == len(held_out)
    path = sct_demo.write_dataset(train[:2], tmp_path, workers=2)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for sample, record in zip(train[:2], records, strict=True):
        assert (tmp_path / record["video"]).is_file()
        assert record["answer"] == sample.answer_text and f"{sample.answer}. {sample.answer_text}" in record["question"]
        assert record["question"].endswith(INSTRUCTION)
    with pytest.raises(ValueError, match="held-out"):
        sct_demo.training_samples(TASKS, 2**30, 64, seed=2)


def test_sct_demo(tiny_model, tmp_path):
    report = sct_demo.main(tiny_args(tiny_model, tmp_path))
    check_report(tmp_path, report, ["base", "base+lpcomp", "sct+lpcomp", "sct"])
    assert report["lpcomp"]["tokens_per_unit_by_layer"][0] == 16 and report["lpcomp"]["tokens_per_unit_by_layer"][-1] == 1
    tuned = VideoQA.from_pretrained(report["tuned_model"], device="cpu")
    base = VideoQA.from_pretrained(tiny_model, device="cpu")
    tuned_weights, base_weights = dict(tuned.model.named_parameters()), dict(base.model.named_parameters())
    assert tuned_weights.keys() == base_weights.keys()
    changed = {name for name, p in tuned_weights.items() if not torch.allclose(p, base_weights[name], rtol=0, atol=1e-6)}
    assert any("language_model" in name for name in changed), "SCT did not change the LLM"
    assert not any(".blocks." in name for name in changed), "SCT changed the frozen vision encoder"


def test_pvc_demo(tiny_model, tmp_path):
    report = pvc_demo.main(tiny_args(tiny_model, tmp_path))
    check_report(tmp_path, report, ["none", "pooling", "pvc"])
    assert report["tokens_per_unit"] == {"none": 16, "pooling": 4, "pvc": 4}
    base = VideoQA.from_pretrained(tiny_model, device="cpu")
    addon = load_pvc(report["addon"], base.model)
    gates = (addon.compressor.gate, *(temporal.gate for temporal in addon.temporal))
    assert all(gate.abs().max() > 1e-6 for gate in gates), "the add-on did not train (its gates are still zero)"
