"""Supervised compression tuning (XComp SCT) on tiny models: data, labels, loss, training, checkpoints, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from vidpress import VideoQA, load_video
from vidpress.adapters import adapter_for
from vidpress.generation import prefill
from vidpress.presses import PressContext
from vidpress.presses.lpcomp import LPCompPress
from vidpress.synth import make_suite, write_suite
from vidpress.train import (
    IGNORE,
    SCTConfig,
    answer_loss,
    compressed,
    conversation_from_record,
    enable_gradient_checkpointing,
    encode_conversation,
    freeze_vision_tower,
    read_conversations,
    train_sct,
)
from vidpress.train.checkpoint import STATE, latest_checkpoint
from vidpress.video.write import write_video
from tests.helpers import random_frames

FRAMES = 4  # 2 temporal units of 16 tokens (112 x 112 frames) in every tiny family


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    """annotations.jsonl of the synthetic suite: 2 needle questions on 16-frame 112 x 112 videos."""
    return write_suite(make_suite(["needle"], [16], 2, seed=0), tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory) -> Path:
    """A JSONL of one multi-turn and one single-turn record on random videos."""
    folder = tmp_path_factory.mktemp("chat")
    for seed in range(2):
        write_video(folder / f"v{seed}.mp4", random_frames(8, 112, 112, seed=seed), fps=4)
    records = [
        {"video": "v0.mp4", "conversations": [
            {"role": "user", "content": "What object appeared in the video?"}, {"role": "assistant", "content": "a red circle"},
            {"role": "user", "content": "Which appeared first?"}, {"role": "assistant", "content": "the blue square"}]},
        {"video": "v1.mp4", "question": "How many times did the red circle appear?", "answer": "two"},
    ]
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def fresh(path: Path):
    model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32, attn_implementation="sdpa")
    processor = AutoProcessor.from_pretrained(str(path))
    return model, processor, adapter_for(model, processor)


# -- records and labels ----------------------------------------------------------------------------------
def test_record_formats(tmp_path):
    synth = conversation_from_record({"video": "a.mp4", "question": "Q?", "options": ["x", "y"], "answer": "B"}, tmp_path)
    assert synth.video == tmp_path / "a.mp4"
    assert synth.turns == (("user", "Q?\nA. x\nB. y\nAnswer with the option's letter from the given choices directly."), ("assistant", "B"))
    llava = conversation_from_record({"video": "/abs/b.mp4", "conversations": [
        {"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "That."}]}, tmp_path)
    assert llava.video == Path("/abs/b.mp4") and llava.turns == (("user", "What?"), ("assistant", "That."))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"video": "a.mp4", "question": "Q?", "answer": "A"}) + "\n"
                   + json.dumps({"video": "a.mp4", "conversations": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                                                                     {"role": "assistant", "content": "z"}]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*alternate"):
        read_conversations(bad)
    with pytest.raises(ValueError, match="unknown turn role"):
        conversation_from_record({"video": "a", "conversations": [{"role": "system", "content": "x"}]}, tmp_path)


def test_labels_mark_the_answers_only(tiny_qa, family, chat_data):
    adapter = tiny_qa[family].adapter
    conversation = read_conversations(chat_data)[0]
    video = load_video(conversation.video, num_frames=FRAMES)
    sample = encode_conversation(adapter, video, conversation.turns)
    ids = sample.inputs["input_ids"][0]
    tokenizer = adapter.processor.tokenizer
    labeled = sample.labels != IGNORE
    assert torch.equal(sample.labels[labeled], ids[labeled])
    spans = torch.diff(labeled.int(), prepend=torch.tensor([0])).eq(1).nonzero().squeeze(1).tolist()
    answers = [tokenizer.decode(ids[s:][: int(labeled[s:].int().argmin())]) for s in spans]
    assert answers == ["a red circle<|im_end|>", "the blue square<|im_end|>"]
    prompt = adapter.prepare(video, conversation.turns[0][1])["input_ids"][0]
    assert torch.equal(ids[: len(prompt)], prompt), "training prompt differs from the inference prompt"
    assert "Which appeared first?" in tokenizer.decode(ids[len(prompt):])
    assert sample.inputs["mm_token_type_ids"].shape == sample.inputs["input_ids"].shape
    assert sample.unit_counts.tolist() == [16, 16] and int(sample.is_video.sum()) == 32


# -- the training forward --------------------------------------------------------------------------------
def test_training_forward_matches_inference_prefill(tiny_qa, family, synth_data):
    """The first answer token's logits in training (model's own forward + hooks) equal VideoQA's prefill with the press."""
    qa = tiny_qa[family]
    conversation = read_conversations(synth_data)[0]
    video = load_video(conversation.video, num_frames=FRAMES)
    press = LPCompPress()
    sample = encode_conversation(qa.adapter, video, conversation.turns)
    encoded = qa.adapter.encode(qa.adapter.prepare(video, conversation.turns[0][1]))
    inputs = qa.adapter.build_inputs(encoded)
    context = PressContext(adapter=qa.adapter, question="", encoded=encoded, inputs=inputs)
    with torch.no_grad():
        expected = prefill(qa.adapter, inputs, qa.adapter.new_cache(), [(0, len(inputs), True)], [press], context)
        with compressed(qa.adapter, sample, press) as final_keep:
            first = int((sample.labels != IGNORE).nonzero()[0]) - 1  # the position predicting the first answer token
            row = int(final_keep[:first].sum())
            logits = qa.model(**sample.inputs, use_cache=False, logits_to_keep=torch.tensor([row])).logits[:, 0]
            loss, count = answer_loss(qa.model, sample, final_keep)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    assert count == 2 and final_keep.sum() < len(final_keep)
    with torch.no_grad():
        plain_loss, _ = answer_loss(qa.model, sample, None)
    assert abs(float(loss) - float(plain_loss)) > 1e-4, "the press did not act in the training forward"


def test_vision_tower_gets_no_gradient(tiny_checkpoints, synth_data):
    model, _, adapter = fresh(tiny_checkpoints["qwen3_vl"])
    freeze_vision_tower(model, train_projector=True)
    conversation = read_conversations(synth_data)[0]
    sample = encode_conversation(adapter, load_video(conversation.video, num_frames=FRAMES), conversation.turns)
    model.train()
    with compressed(adapter, sample, LPCompPress()) as final_keep:
        loss, _ = answer_loss(model, sample, final_keep)
        loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    vision = [n for n in grads if n.startswith("model.visual.") and "merger" not in n]
    assert vision and all(grads[n] is None for n in vision)
    assert any(grads[n] is not None and grads[n].abs().sum() > 0 for n in grads if "merger" in n)
    assert all(grads[n] is not None for n in grads if "language_model.layers.3." in n)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_checkpoints, family, synth_data):
    conversation = read_conversations(synth_data)[1]
    results = []
    for checkpointing in (False, True):
        model, _, adapter = fresh(tiny_checkpoints[family])
        freeze_vision_tower(model, train_projector=False)
        if checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
        sample = encode_conversation(adapter, load_video(conversation.video, num_frames=FRAMES), conversation.turns)
        with compressed(adapter, sample, LPCompPress()) as final_keep:
            loss, _ = answer_loss(model, sample, final_keep)
            loss.backward()
        results.append((loss.detach(), [p.grad for p in model.model.language_model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# -- the trainer ------------------------------------------------------------------------------------------
def config(tiny_checkpoints, data: Path, output: Path, **overrides) -> SCTConfig:
    settings = dict(model=str(tiny_checkpoints["qwen2_vl"]), data=str(data), output=str(output), frames=FRAMES,
                    max_side=112, lr=1e-3, warmup_ratio=0.0, save_every=1)
    return SCTConfig(**settings | overrides)


def read_log(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]


def test_training_reduces_the_loss(tiny_checkpoints, chat_data, tmp_path):
    output = train_sct(config(tiny_checkpoints, chat_data, tmp_path / "run", epochs=4, save_every=100), progress=False)
    losses = [r["loss"] for r in read_log(output)]
    assert len(losses) == 8
    assert sum(losses[-2:]) < 0.5 * sum(losses[:2])
    assert (output / "model.safetensors").exists() and json.loads((output / "sct_config.json").read_text())["epochs"] == 4


def test_resume_continues_with_the_same_next_step_loss(tiny_checkpoints, synth_data, tmp_path):
    first = train_sct(config(tiny_checkpoints, synth_data, tmp_path / "a", max_steps=3), progress=False)
    assert [r["step"] for r in read_log(first)] == [1, 2, 3]
    # the same run killed after writing checkpoint 2 (and logging step 2)
    second = tmp_path / "b"
    shutil.copytree(first, second)
    shutil.rmtree(second / "checkpoint-0000003")
    (second / "log.jsonl").write_text("".join(line + "\n" for line in (first / "log.jsonl").read_text().splitlines()[:2]))
    assert json.loads((latest_checkpoint(second) / STATE).read_text())["global_step"] == 2
    resumed = train_sct(config(tiny_checkpoints, synth_data, second, max_steps=3, resume=True), progress=False)
    log = read_log(resumed)
    assert [r["step"] for r in log] == [1, 2, 3]
    assert log[2]["loss"] == pytest.approx(read_log(first)[2]["loss"], rel=1e-6)
    final = [load_file(folder / "model.safetensors") for folder in (first, resumed)]
    assert all(torch.allclose(final[0][k], final[1][k], rtol=1e-5, atol=1e-7) for k in final[0])


def test_tuned_model_answers_with_the_press(tiny_checkpoints, synth_data, tmp_path):
    output = train_sct(config(tiny_checkpoints, synth_data, tmp_path / "run", max_steps=2), progress=False)
    qa = VideoQA.from_pretrained(output, device="cpu")
    record = json.loads(synth_data.read_text().splitlines()[0])
    answer = qa.ask(synth_data.parent / record["video"], record["question"], press=LPCompPress(), num_frames=FRAMES,
                    max_side=112, max_new_tokens=3)
    assert len(answer.token_ids) >= 1 and len(set(answer.stats.kv_length_per_layer)) > 1
    reference = AutoModelForImageTextToText.from_pretrained(str(tiny_checkpoints["qwen2_vl"]))
    changed = [n for n, p in qa.model.named_parameters() if not torch.equal(p, reference.get_parameter(n))]
    assert any("language_model" in n for n in changed) and not any(n.startswith("model.visual.blocks") for n in changed)


def test_lora_training(tiny_checkpoints, synth_data, tmp_path):
    pytest.importorskip("peft")
    output = train_sct(config(tiny_checkpoints, synth_data, tmp_path / "lora", max_steps=2, lora=True, lora_rank=4), progress=False)
    assert (latest_checkpoint(output) / "adapter_model.safetensors").exists()
    resumed = train_sct(config(tiny_checkpoints, synth_data, output, max_steps=3, lora=True, lora_rank=4, resume=True), progress=False)
    assert [r["step"] for r in read_log(resumed)] == [1, 2, 3]
    qa = VideoQA.from_pretrained(resumed, device="cpu")
    assert not any("lora" in name for name, _ in qa.model.named_parameters())


def test_lora_without_peft_is_a_clear_error(tiny_checkpoints, synth_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match="pip install peft"):
        train_sct(config(tiny_checkpoints, synth_data, tmp_path / "x", max_steps=1, lora=True), progress=False)


@pytest.mark.parametrize("kwargs", [dict(lr=0), dict(batch_size=0), dict(keep="prefix"), dict(max_steps=0)])
def test_invalid_config(tiny_checkpoints, synth_data, tmp_path, kwargs):
    with pytest.raises(ValueError):
        config(tiny_checkpoints, synth_data, tmp_path, **kwargs)


def test_cli(tiny_checkpoints, synth_data, tmp_path):
    from typer.testing import CliRunner

    from vidpress.train_cli import train_app

    output = tmp_path / "cli"
    result = CliRunner().invoke(train_app, [
        "sct", "--model", str(tiny_checkpoints["qwen2_vl"]), "--data", str(synth_data), "--output", str(output),
        "--frames", str(FRAMES), "--max-side", "112", "--max-steps", "1", "--tokens-per-frame", "0", "--keep", "uniform",
        "--schedule", "16,16,4,1",
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads((output / "sct_config.json").read_text())
    assert saved["tokens_per_frame"] is None and saved["schedule"] == [16, 16, 4, 1] and saved["keep"] == "uniform"
    assert [r["step"] for r in read_log(output)] == [1]


# -- PVC through the shared loop -----------------------------------------------------------------------------------------------
def pvc_config(tiny_checkpoints, data: Path, output: Path, **overrides):
    from vidpress.pvc.training import PVCTrainConfig

    settings = dict(model=str(tiny_checkpoints["qwen2_5_vl"]), data=str(data), output=str(output), frames=FRAMES, max_side=112,
                    tokens_per_frame=4, lr=1e-2, warmup_ratio=0.0, save_every=1)
    return PVCTrainConfig(**settings | overrides)


@pytest.mark.parametrize("train_projector", [False, True])
def test_pvc_training_lowers_the_loss_and_trains_only_the_addon(tiny_checkpoints, tiny_qa, synth_data, tmp_path, train_projector):
    from vidpress.presses.pvc import PVCPress
    from vidpress.pvc import load_pvc, vision_tower
    from vidpress.pvc.training import PVCObjective
    from vidpress.train.objective import train

    # batch_size 2 = the whole data set: every step sees the same batch
    objective = PVCObjective(pvc_config(tiny_checkpoints, synth_data, tmp_path / "pvc", max_steps=4, batch_size=2,
                                        train_projector=train_projector))
    output = train(objective, progress=False)
    losses = [r["loss"] for r in read_log(output)]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert not (output / "model.safetensors").exists() and (latest_checkpoint(output) / "pvc.safetensors").exists()
    model = objective.adapter.model
    reference = AutoModelForImageTextToText.from_pretrained(str(tiny_checkpoints["qwen2_5_vl"]))
    assert all(torch.equal(p, reference.get_parameter(n)) for n, p in model.named_parameters()), "the base model changed"
    pvc = objective.trainable.pvc
    assert {p.dtype for p in pvc.parameters()} == {torch.float32}
    assert pvc.temporal[0].gate.abs().sum() > 0 and pvc.compressor.gate.abs().sum() > 0  # both start at zero
    if train_projector:
        merger = vision_tower(model).merger
        assert not torch.equal(pvc.merger.mlp[0].weight, merger.mlp[0].weight)
    else:
        assert pvc.merger is None

    qa = tiny_qa["qwen2_5_vl"]
    loaded = load_pvc(output, qa.model)
    assert all(torch.equal(p, pvc.state_dict()[n]) for n, p in loaded.state_dict().items())
    record = json.loads(synth_data.read_text().splitlines()[0])
    ask = lambda press: qa.ask(synth_data.parent / record["video"], record["question"], press=press, num_frames=FRAMES,
                               max_side=112, max_new_tokens=4).token_ids
    assert ask(PVCPress(tokens_per_frame=4, checkpoint=str(output))) != ask(PVCPress(tokens_per_frame=4))


def test_pvc_training_on_internvl(synth_data, tmp_path):
    """``vidpress train pvc`` on InternVL, whose unit is one frame and whose projector follows the pixel shuffle."""
    from vidpress.presses.pvc import PVCPress
    from vidpress.pvc.training import train_pvc
    from vidpress.tiny_families import build_tiny_internvl

    model, processor = build_tiny_internvl()
    model.save_pretrained(tmp_path / "internvl")
    processor.save_pretrained(tmp_path / "internvl")
    output = train_pvc(pvc_config({"qwen2_5_vl": tmp_path / "internvl"}, synth_data, tmp_path / "pvc", max_steps=3, batch_size=2,
                                  train_projector=True), progress=False)
    losses = [r["loss"] for r in read_log(output)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert any(name.startswith("merger.") for name in load_file(output / "pvc.safetensors"))
    qa = VideoQA.from_pretrained(tmp_path / "internvl", device="cpu")
    record = json.loads(synth_data.read_text().splitlines()[0])
    answer = qa.ask(synth_data.parent / record["video"], record["question"], press=PVCPress(tokens_per_frame=4, checkpoint=str(output)),
                    num_frames=FRAMES, max_side=112, max_new_tokens=4)
    assert answer.stats.visual_tokens_after == FRAMES * 4


def test_pvc_resume_continues_with_the_same_next_step_loss(tiny_checkpoints, synth_data, tmp_path):
    from vidpress.pvc.training import train_pvc

    first = train_pvc(pvc_config(tiny_checkpoints, synth_data, tmp_path / "a", max_steps=3, train_projector=True), progress=False)
    second = tmp_path / "b"
    shutil.copytree(first, second)
    shutil.rmtree(second / "checkpoint-0000003")
    (second / "log.jsonl").write_text("".join(line + "\n" for line in (first / "log.jsonl").read_text().splitlines()[:2]))
    resumed = train_pvc(pvc_config(tiny_checkpoints, synth_data, second, max_steps=3, train_projector=True, resume=True), progress=False)
    log = read_log(resumed)
    assert [r["step"] for r in log] == [1, 2, 3]
    assert log[2]["loss"] == pytest.approx(read_log(first)[2]["loss"], rel=1e-6)
    assert log[2]["loss"] != pytest.approx(log[1]["loss"], rel=1e-6), "degenerate test: the loss did not move"
    final = [load_file(folder / "pvc.safetensors") for folder in (first, resumed)]
    assert any(k.startswith("merger.") for k in final[0])
    assert all(torch.allclose(final[0][k], final[1][k], rtol=1e-5, atol=1e-7) for k in final[0])


def test_pvc_gradient_checkpointing_gives_the_same_losses(tiny_checkpoints, synth_data, tmp_path):
    from vidpress.pvc.training import train_pvc

    logs = [read_log(train_pvc(pvc_config(tiny_checkpoints, synth_data, tmp_path / str(on), max_steps=3, gradient_checkpointing=on),
                               progress=False)) for on in (False, True)]
    assert [r["loss"] for r in logs[1]] == pytest.approx([r["loss"] for r in logs[0]], rel=1e-4)


def test_pvc_two_processes_equal_one_process_with_both_samples(tiny_checkpoints, synth_data, tmp_path):
    """DDP over the add-on (gloo, 2 CPU processes, 1 sample each) = one process with both samples in its step."""
    from vidpress.pvc.training import train_pvc

    single = train_pvc(pvc_config(tiny_checkpoints, synth_data, tmp_path / "one", max_steps=2, batch_size=2, train_projector=True),
                       progress=False)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vidpress", "train", "pvc",
               "--model", str(tiny_checkpoints["qwen2_5_vl"]), "--data", str(synth_data), "--output", str(tmp_path / "two"),
               "--frames", str(FRAMES), "--max-side", "112", "--tokens-per-frame", "4", "--lr", "1e-2", "--warmup-ratio", "0",
               "--max-steps", "2", "--train-projector"]
    env = os.environ | {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = read_log(tmp_path / "two")
    assert [r["samples"] for r in log] == [2, 2], "not two processes"
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in read_log(single)], rel=1e-5)
    weights = [load_file(folder / "pvc.safetensors") for folder in (single, tmp_path / "two")]
    assert all(torch.allclose(weights[0][k], weights[1][k], rtol=1e-5, atol=1e-6) for k in weights[0])


@pytest.mark.parametrize("kwargs", [dict(tokens_per_frame=0), dict(layers=0), dict(lr=0)])
def test_invalid_pvc_config(tiny_checkpoints, synth_data, tmp_path, kwargs):
    with pytest.raises(ValueError):
        pvc_config(tiny_checkpoints, synth_data, tmp_path, **kwargs)


def test_pvc_cli(tiny_checkpoints, synth_data, tmp_path):
    from typer.testing import CliRunner

    from vidpress.train_cli import train_app

    runner = CliRunner()
    usage = runner.invoke(train_app, ["pvc", "--help"], terminal_width=200)
    assert usage.exit_code == 0, usage.output
    for option in ("--layers", "--tokens-per-frame", "--train-projector", "--lr", "--resume", "--max-steps", "--grad-accum"):
        assert option in usage.output
    output = tmp_path / "cli"
    result = runner.invoke(train_app, [
        "pvc", "--model", str(tiny_checkpoints["qwen2_5_vl"]), "--data", str(synth_data), "--output", str(output),
        "--frames", str(FRAMES), "--max-side", "112", "--max-steps", "1", "--layers", "1", "--tokens-per-frame", "4",
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads((output / "pvc_train_config.json").read_text())
    assert saved["layers"] == 1 and saved["tokens_per_frame"] == 4 and saved["lr"] == 1e-4 and not saved["train_projector"]
    assert json.loads((output / "pvc_config.json").read_text())["layers"] == 1
    bad = runner.invoke(train_app, ["pvc", "--model", "m", "--data", "d", "--output", str(tmp_path / "x"), "--tokens-per-frame", "0"])
    assert bad.exit_code != 0 and "tokens_per_frame" in bad.output
