"""XComp's supervised compression tuning (SCT) on vidpress-tiny: LP-Comp before and after tuning.

    python scripts/sct_demo.py --output runs/sct-demo     # defaults sized for about 4 minutes on one GPU and 16 cores

1. writes a synthetic training set (mp4 files and a JSONL of SCT records whose answer is the option's text,
   as vidpress-tiny answers) and a held-out set (seeds >= 2**31, never drawn for training);
2. evaluates the base model on the held-out questions, without a press and with LP-Comp (training-free);
3. runs SCT (``vidpress.train.train_sct``: full fine-tuning with LP-Comp active, bf16 autocast on GPU);
4. reloads the tuned model with ``VideoQA.from_pretrained`` and evaluates it with LP-Comp and without a press.

``report.json`` and ``report.md`` in ``--output`` hold the loss curve and the accuracy per task. The pieces
shared with ``scripts/pvc_demo.py`` (arguments, data, evaluation, reports) live here.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

from vidpress import Video, VideoQA, load_video
from vidpress.eval.answers import extract_letter
from vidpress.presses import LPCompPress, Press
from vidpress.synth import TASKS, SynthSample, make_sample, prompt
from vidpress.train import SCTConfig, train_sct
from vidpress.train.objective import LOG
from vidpress.video.write import write_video

DEFAULT_MODEL = "vidpress/assets/vidpress-tiny"
HELD_OUT_SEED = 2**31  # held-out seeds start here; training seeds stay below
SIDE = 112  # frame side of the suite vidpress-tiny was trained on: 4 x 4 merged tokens per temporal unit
LOADER_WORKERS = 6  # DataLoader workers decoding training videos at most: enough to keep up with the tiny model on a GPU
MAX_NEW_TOKENS = 8  # an option's text and the end-of-turn token (3 tokens with vidpress-tiny's tokenizer), with room
UNIT_TOKENS = 16  # visual tokens per temporal unit (2 frames) of a SIDE px frame: 4 x 4 merged patches
LPCOMP_TOKENS = UNIT_TOKENS  # LP-Comp's frame N1 (16 consecutive visual tokens, as in XComp) is one temporal unit
T = TypeVar("T")
R = TypeVar("R")


# -- arguments ---------------------------------------------------------------------------------------------
def demo_parser(doc: str, *, output: str, lr: float) -> argparse.ArgumentParser:
    """The arguments of both demos; they differ in the default output folder and learning rate."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="VLM folder or hub name (vidpress-tiny's layout: 112 px, 16 tokens per unit)")
    parser.add_argument("--output", type=Path, default=Path(output), help="folder for the data, the training run and the reports")
    parser.add_argument("--train-samples", type=int, default=2000, help="synthetic training questions (tasks in turn)")
    parser.add_argument("--eval-per-task", type=int, default=30, help="held-out questions per task")
    parser.add_argument("--frames", type=int, default=128, help="frames of every video, trained and evaluated at all of them")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated synthetic tasks")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: one epoch over the training set)")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per optimizer step")
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate (cosine schedule after a 3%% warmup)")
    parser.add_argument("--device", help="evaluation device (default: cuda when available); training runs where accelerate puts it")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help=f"processes rendering and decoding videos (at most {LOADER_WORKERS} DataLoader workers)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the questions and the training")
    return parser


# -- data --------------------------------------------------------------------------------------------------
def training_samples(tasks: Sequence[str], count: int, frames: int, seed: int) -> list[SynthSample]:
    """``count`` questions on ``frames``-frame videos, the tasks in turn, on seeds below :data:`HELD_OUT_SEED`."""
    first = seed * count
    if first + count > HELD_OUT_SEED:
        raise ValueError(f"seed {seed} with {count} samples reaches the held-out seeds")
    return [make_sample(tasks[i % len(tasks)], frames, seed=first + i, height=SIDE, width=SIDE) for i in range(count)]


def held_out_samples(tasks: Sequence[str], per_task: int, frames: int, seed: int) -> list[SynthSample]:
    """``per_task`` questions of every task, task after task, on seeds from :data:`HELD_OUT_SEED` up (never drawn for training)."""
    in_order = [task for task in tasks for _ in range(per_task)]
    first = HELD_OUT_SEED + seed * len(in_order)
    return [make_sample(task, frames, seed=first + i, height=SIDE, width=SIDE) for i, task in enumerate(in_order)]


def _parallel(function: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``function`` over ``items``, in ``workers`` processes (in this one when ``workers`` <= 1)."""
    if workers <= 1:
        return [function(item) for item in items]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(function, items, chunksize=max(1, len(items) // (4 * workers))))


def _render(job: tuple[SynthSample, Path]) -> None:
    """Write one sample's video to its path."""
    sample, path = job
    write_video(path, sample.array(), fps=sample.fps)


def video_path(folder: Path, sample: SynthSample) -> Path:
    """Where :func:`write_dataset` puts the video of ``sample``."""
    return folder / "videos" / f"{sample.name}.mp4"


def write_dataset(samples: Sequence[SynthSample], folder: Path, workers: int) -> Path:
    """Render ``samples`` to ``folder/videos/*.mp4`` in parallel and write ``folder/data.jsonl``; return that file.

    One training record (``vidpress.train.records``) per sample: the multiple-choice prompt as the question
    and the option's text as the answer, plus the task and seed.
    """
    _parallel(_render, [(sample, video_path(folder, sample)) for sample in samples], workers)
    records = [
        {"video": str(video_path(folder, s).relative_to(folder)), "question": prompt(s), "answer": s.answer_text, "task": s.task, "seed": s.seed}
        for s in samples
    ]
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def decode_videos(samples: Sequence[SynthSample], folder: Path, frames: int, workers: int) -> list[Video]:
    """The written videos of ``samples``, decoded in parallel (``frames`` frames each)."""
    paths = [video_path(folder, sample) for sample in samples]
    return _parallel(partial(load_video, num_frames=frames), paths, workers)


# -- evaluation and reports --------------------------------------------------------------------------------
def evaluate(qa: VideoQA, samples: Sequence[SynthSample], videos: Sequence[Video], presses: dict[str, Press | None]) -> dict[str, dict[str, float]]:
    """Accuracy per task (and ``mean``, over tasks) of each named press on the questions, graded by letter extraction."""
    correct: dict[str, Counter[str]] = {name: Counter() for name in presses}
    for sample, video in zip(samples, videos, strict=True):
        for name, press in presses.items():
            answer = qa.ask(video, prompt(sample), press=press, max_new_tokens=MAX_NEW_TOKENS)
            correct[name][sample.task] += extract_letter(answer.text, sample.options) == sample.answer
    totals = Counter(sample.task for sample in samples)
    accuracy = {}
    for name, counts in correct.items():
        per_task = {task: counts[task] / total for task, total in totals.items()}
        accuracy[name] = per_task | {"mean": sum(per_task.values()) / len(per_task)}
    return accuracy


def loss_summary(run: Path, points: int = 10) -> dict[str, Any]:
    """The training log of ``run``: steps, first and last loss, and the mean loss over ``points`` equal spans of steps."""
    losses = [json.loads(line)["loss"] for line in (run / LOG).read_text().splitlines()]
    spans = [losses[len(losses) * i // points : len(losses) * (i + 1) // points] for i in range(points)]
    curve = [round(sum(span) / len(span), 4) for span in spans if span]
    return {"steps": len(losses), "first_loss": losses[0], "last_loss": losses[-1], "curve": curve}


def write_report(output: Path, report: dict[str, Any], title: str, notes: Sequence[str]) -> None:
    """Write ``report.json`` and ``report.md`` (settings, notes, loss curve, accuracy table) in ``output``; print the means."""
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    training, accuracy, args = report["training"], report["accuracy"], report["settings"]
    names = list(accuracy)
    rows = [f"| task | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
    for task in accuracy[names[0]]:
        rows.append(f"| {task} | {' | '.join(f'{accuracy[name][task]:.2f}' for name in names)} |")
    lines = [
        f"# {title}", "",
        f"Model {args['model']}; {args['frames']}-frame {SIDE} px videos ({args['frames'] // 2} temporal units of {UNIT_TOKENS} "
        f"visual tokens); {args['train_samples']} training questions, batch {args['batch_size']}, lr {args['lr']}; tasks {args['tasks']}.",
        *notes, "",
        "## Training", "",
        f"{training['steps']} steps in {report['seconds']['train']:.0f} s; loss {training['first_loss']:.4f} (first step) "
        f"→ {training['last_loss']:.4f} (last step).",
        f"Mean loss over {len(training['curve'])} equal spans of the steps: {', '.join(f'{x:.3f}' for x in training['curve'])}.", "",
        f"## Held-out accuracy ({args['eval_per_task']} questions per task, chance 0.25)", "", *rows, "",
    ]
    (output / "report.md").write_text("\n".join(lines))
    print(json.dumps({"accuracy": {name: acc["mean"] for name, acc in accuracy.items()}, "seconds": report["seconds"]}))


@contextmanager
def timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Record the seconds the block takes as ``seconds[name]``."""
    start = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - start, 1)


def train_settings(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """The shared loop's settings (:class:`~vidpress.train.objective.TrainConfig` fields) of the arguments."""
    return dict(
        model=args.model, data=str(data), max_steps=args.steps, lr=args.lr, batch_size=args.batch_size, frames=args.frames,
        seed=args.seed, num_workers=min(args.workers, LOADER_WORKERS),
    )


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments as JSON values."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


def load_qa(model: str | Path, device: str | None) -> VideoQA:
    """``model`` for evaluation, in float32 (the tiny model is cheap; no bf16 rounding in the comparison)."""
    return VideoQA.from_pretrained(model, device=device, dtype=torch.float32)


def prepare_data(args: argparse.Namespace) -> tuple[Path, list[SynthSample], list[Video]]:
    """Write the training and held-out sets; return the training JSONL, the held-out samples and their videos."""
    tasks = args.tasks.split(",")
    data = write_dataset(training_samples(tasks, args.train_samples, args.frames, args.seed), args.output / "train", args.workers)
    held_out = held_out_samples(tasks, args.eval_per_task, args.frames, args.seed)
    write_dataset(held_out, args.output / "held-out", args.workers)
    return data, held_out, decode_videos(held_out, args.output / "held-out", args.frames, args.workers)


# -- the demo ----------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = demo_parser(__doc__, output="runs/sct-demo", lr=1e-4).parse_args(argv)
    press = LPCompPress(tokens_per_frame=LPCOMP_TOKENS)
    seconds: dict[str, float] = {}
    with timed(seconds, "data"):
        data, held_out, videos = prepare_data(args)
    with timed(seconds, "eval_base"):
        base = load_qa(args.model, args.device)
        schedule = press.layer_schedule(LPCOMP_TOKENS, len(base.adapter.decoder_layers))
        accuracy = evaluate(base, held_out, videos, {"base": None, "base+lpcomp": press})
        del base
    with timed(seconds, "train"):
        tuned_folder = train_sct(SCTConfig(output=str(args.output / "sct"), tokens_per_frame=LPCOMP_TOKENS, **train_settings(args, data)))
    with timed(seconds, "eval_tuned"):
        accuracy |= evaluate(load_qa(tuned_folder, args.device), held_out, videos, {"sct+lpcomp": press, "sct": None})

    report = {
        "demo": "sct",
        "model": args.model,
        "tuned_model": str(tuned_folder),
        "settings": settings(args),
        "lpcomp": {"tokens_per_frame": LPCOMP_TOKENS, "tokens_per_unit_by_layer": schedule},
        "training": loss_summary(tuned_folder),
        "accuracy": accuracy,
        "seconds": seconds | {"total": round(sum(seconds.values()), 1)},
    }
    notes = [
        f"LP-Comp: tokens per unit seen by each decoder layer {schedule} (frame = one temporal unit, {LPCOMP_TOKENS} tokens).",
        "Columns: base = the model without a press; base+lpcomp = LP-Comp, training-free; "
        "sct+lpcomp = after SCT, with LP-Comp; sct = after SCT, without a press.",
    ]
    write_report(args.output, report, "SCT demo: supervised compression tuning with LP-Comp", notes)
    return report


if __name__ == "__main__":
    main()
