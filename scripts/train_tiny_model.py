"""Train vidpress-tiny from scratch on the synthetic suite (seeded), evaluate it, and save it.

    python scripts/train_tiny_model.py --minutes 8 --output vidpress/assets/vidpress-tiny

A small Qwen2.5-VL (the stock transformers class) with a tokenizer trained on the suite's language learns
to answer needle, counting, ordering, localisation and multi-hop questions from 112x112 frames (16 visual
tokens per 2 frames). Training data are generated on the fly in DataLoader workers; the evaluation runs the
saved checkpoint through VideoQA at 256 frames and writes the accuracy per task as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vidpress import Video, VideoQA
from vidpress.adapters import adapter_for, model_inputs
from vidpress.eval.answers import extract_letter
from vidpress.fast import enable_fast_vision
from vidpress.synth import TASKS, make_sample, prompt, synth_vocabulary_corpus
from vidpress.tiny import DEFAULT_CORPUS, build_config, build_processor, build_tokenizer



def sample_video(sample) -> Video:
    """The synthetic sample as a Video (frames rendered in memory)."""
    return Video.from_array(sample.array(), sample.fps)


def training_example(adapter, sample, answer_with: str = "letter") -> dict[str, torch.Tensor]:
    """Processor inputs of the question prompt followed by the answer and EOS; labels on the answer only.

    ``answer_with``: "letter" answers the multiple-choice prompt with the option's letter; "option" answers it
    with the option's text (graded by vidpress.eval's letter extraction, which maps an option's text to its
    letter); "name" asks the bare question and answers with the option's text.
    """
    text = sample.question if answer_with == "name" else prompt(sample)
    inputs = model_inputs(adapter.prepare(sample_video(sample), text))
    tokenizer = adapter.processor.tokenizer
    target = sample.answer if answer_with == "letter" else sample.answer_text
    answer = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt_ids = inputs["input_ids"][0]
    inputs["input_ids"] = torch.cat([prompt_ids, torch.tensor(answer)])[None]
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"][0], torch.zeros(len(answer), dtype=torch.long)])[None]
    inputs["labels"] = torch.cat([torch.full_like(prompt_ids, -100), torch.tensor(answer)])[None]
    return dict(inputs)


def collate(examples: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad the token fields; concatenate the video fields."""
    length = max(e["input_ids"].shape[1] for e in examples)
    pads = {"input_ids": pad_id, "attention_mask": 0, "mm_token_type_ids": 0, "labels": -100}
    batch = {
        key: torch.cat([torch.nn.functional.pad(e[key], (0, length - e[key].shape[1]), value=value) for e in examples])
        for key, value in pads.items()
    }
    for key in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
        batch[key] = torch.cat([e[key] for e in examples])
    return batch


class SynthStream(IterableDataset):
    """Endless batches of same-length synthetic questions, different per worker and seed."""

    def __init__(self, adapter, batch_size: int, seed: int, tasks: list[str], lengths: list[int], side: int, answer_with: str):
        self.adapter, self.batch_size, self.seed = adapter, batch_size, seed
        self.tasks, self.lengths, self.side, self.answer_with = tasks, lengths, side, answer_with

    def __iter__(self):
        torch.set_num_threads(1)
        worker = get_worker_info()
        rng = random.Random(self.seed * 1000 + (worker.id if worker else 0))
        pad_id = self.adapter.processor.tokenizer.pad_token_id
        while True:
            length = rng.choice(self.lengths)
            samples = [
                make_sample(rng.choice(self.tasks), length, seed=rng.randrange(2**31), height=self.side, width=self.side)
                for _ in range(self.batch_size)
            ]
            yield collate([training_example(self.adapter, s, self.answer_with) for s in samples], pad_id)


def evaluate(
    qa: VideoQA, tasks: list[str], num_frames: int, per_task: int, seed: int, side: int, answer_with: str = "letter"
) -> dict[str, float]:
    """Accuracy per task on held-out seeds (never drawn in training: seeds >= 2**31)."""
    accuracy = {}
    for index, task in enumerate(tasks):
        correct = 0
        for k in range(per_task):
            sample = make_sample(task, num_frames, seed=2**31 + seed * 100_000 + index * 1000 + k, height=side, width=side)
            if answer_with == "name":
                answer = qa.ask(sample_video(sample), sample.question, max_new_tokens=8)
                correct += answer.text == sample.answer_text
            else:
                answer = qa.ask(sample_video(sample), prompt(sample), max_new_tokens=8)
                correct += extract_letter(answer.text, sample.options) == sample.answer
        accuracy[task] = correct / per_task
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("vidpress/assets/vidpress-tiny"))
    parser.add_argument("--minutes", type=float, default=8.0, help="training time budget")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--eval-per-task", type=int, default=40)
    parser.add_argument("--eval-frames", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=Path, help="continue from this saved checkpoint")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated synth tasks to train and evaluate")
    parser.add_argument("--lengths", default="64,128,256", help="comma-separated training video lengths (frames)")
    parser.add_argument("--side", type=int, default=112, help="frame side in pixels")
    parser.add_argument("--answer-with", choices=("letter", "option", "name"), default="option",
                        help="answer the multiple-choice prompt with the letter or the option's text, or the bare question with the name")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    lengths = [int(n) for n in args.lengths.split(",")]

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    if args.init:  # continue training a saved checkpoint
        processor = AutoProcessor.from_pretrained(args.init)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.init, dtype=torch.float32, attn_implementation="sdpa")
    else:
        tokenizer = build_tokenizer(DEFAULT_CORPUS + synth_vocabulary_corpus(), vocab_size=640)
        processor = build_processor("qwen2_5_vl", tokenizer, max_side=args.side)
        config = build_config("qwen2_5_vl", tokenizer, hidden_size=args.hidden_size, num_layers=args.layers,
                              vision_hidden_size=128, vision_depth=4)
        config.get_text_config().initializer_range = 0.02
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, attn_implementation="sdpa")
    model.to(device)
    enable_fast_vision(model)  # batched window attention: the stock encoder loops over windows in Python
    adapter = adapter_for(model, processor)
    loader = DataLoader(SynthStream(adapter, args.batch_size, args.seed, tasks, lengths, args.side, args.answer_with), batch_size=None, num_workers=args.workers,
                        prefetch_factor=4 if args.workers else None, persistent_workers=bool(args.workers))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    budget = args.minutes * 60
    log = []
    model.train()
    start = time.monotonic()
    for step, batch in enumerate(loader):
        elapsed = time.monotonic() - start
        if step >= args.max_steps or elapsed > budget:
            break
        progress = max(step / args.max_steps, elapsed / budget)  # the cosine ends with whichever budget ends first
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step < 5:
            log.append({"step": step, "loss": loss.item(), "lr": lr, "seconds": time.monotonic() - start})
            print(json.dumps(log[-1]), flush=True)
    model.eval()
    args.output.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(args.output)
    processor.save_pretrained(args.output)

    qa = VideoQA.from_pretrained(args.output, device=device, dtype=torch.float32)
    enable_fast_vision(qa.model)
    accuracy = evaluate(qa, tasks, args.eval_frames, args.eval_per_task, args.seed, args.side, args.answer_with)
    report = {"steps": step, "final_loss": log[-1]["loss"] if log else None, "eval_frames": args.eval_frames,
              "eval_per_task": args.eval_per_task, "accuracy": accuracy, "chance": 0.25, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "log": log}
    (args.output / "training_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({"accuracy": accuracy, "steps": step}))


if __name__ == "__main__":
    main()
