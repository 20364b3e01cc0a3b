"""The accuracy-vs-budget study of vidpress-tiny on the synthetic suite: every number of docs/study.

    python scripts/accuracy_study.py --model vidpress/assets/vidpress-tiny --output docs/study

It measures, on held-out seeds (>= 2**31, never drawn in training):

1. the accuracy of each method per task (needle, counting, ordering) and video length (256 to 4096 frames)
   at an EQUAL visual-token budget, that of ``--budget-frames`` (256) uncompressed frames; at 256 frames
   that budget compresses nothing, so there every method also runs at ``--fractions`` (1/8) of it;
2. a needle-depth sweep: needle questions on ``--depth-frames`` (1024) frames with the needle at each of
   ``--depths``, every method at the budget.

Outputs in ``--output``: ``results.jsonl`` (one row per method, task, length, depth and fraction; a rerun
skips the rows already there), ``study.md`` (the tables and the issue targets), ``accuracy_vs_frames.png``,
``needle_depth.png``, and ``study_config.json`` (the settings that move the numbers: a rerun into the same
folder with other settings is refused).

The budget
----------
B is the number of visual tokens the LLM keeps per decoder layer, on average over its layers: the visual
KV-cache entries after the prefill (``visual_kv`` in the rows, from Answer.stats). For frame and token
presses it is the number of visual tokens in the LLM input. KV presses (PivotKV, ReTaKe, AdaReTaKe) still
prefill every visual token, chunk by chunk, and keep B of them in the cache. LP-Comp thins the video inside
the decoder (layer 0 always sees its whole input), so its budget is its average over the layers, a measure
of LLM compute. B = ceil(budget_frames / 2) x 16 = 2048 for vidpress-tiny (112 px frames: 16 visual tokens
per temporal unit of 2 frames, 8 per frame).

How each method meets B on a video of U temporal units (V = 16 U visual tokens), with r = min(1, B / V)
and u = B // 16 the whole units within the budget:

- ``full``: no press; all V tokens (the uncompressed reference, over budget above 256 frames).
- ``uniform``: UniformFramePress(num_frames=2u).
- ``dpselect``: DPSelectPress(keep_ratio=u / U): u time steps per token position (async, as released).
- ``tome``: ToMePress(tokens_per_frame=t), VideoChat-Flash's clip merge (4 units per clip) of every unit to t = B // U
  tokens (at least 1; 2 at 2048 frames, 1 at 4096), on B // t uniformly sampled units when even one token per
  unit would exceed B.
- ``pivotkv``: PivotKVPress(ratio=r): each 32-frame chunk keeps int(r x its length) entries per layer.
- ``retake``: ReTaKePress(ratio=r): DPSelect pivots (keep_ratio 1) protected by PivotKV at r (the preset's
  defaults otherwise: no position reforge).
- ``adaretake``: AdaReTaKePress(max_input_length=int(r x P)), P the uncompressed LLM input length, so that
  its base ratio max_input_length / P is r; chunks and layers then share the r x V entries unevenly, and the
  floors and rounding of those budgets can overshoot B (by 4% at 4096 frames on vidpress-tiny: see ``visual_kv``).
- ``lpcomp`` (training-free): LPCompPress(tokens_per_frame=16), one LP-Comp frame per temporal unit, with
  the released cosine schedule (16, 12, 9, 5, 2, 1 tokens per unit in 6 layers: 7.5 of 16 on average) on
  n uniformly sampled units, n the most units whose average over layers, n x sum(schedule) / layers, stays
  within B (273 units = 546 frames at B = 2048).
- ``qccomp``: QCCompPress(n_select=2u): the frames the question attends to most; its scored layers
  (6, 24) of 28, as released, are rescaled by the press to the model's depth (layers 1-4 of 6).
- ``xcomp``: XCompPress(n_select=2n, tokens_per_frame=16): QC-Comp chooses the n units lpcomp samples uniformly.
- ``lpcomp-sct`` (with ``--sct-model``): lpcomp's mapping with the LP-Comp the model was tuned with (its
  sct_config.json: tokens per frame, schedule, kept tokens), on the SCT-tuned model.
- ``pvc`` (with ``--pvc-checkpoint``): PVCPress(tokens_per_frame=t, checkpoint=...) on B // t uniformly
  sampled units (all of them when they fit), t the tokens per unit the add-on was trained with (its
  pvc_train_config.json; 4 in scripts/pvc_demo.py); without that file, t = B // U (at least 1) on every frame.

Speed: ``--procs`` processes (default 4 on a GPU) answer side by side on the one device, since the tiny
model leaves it idle between kernel launches; each gets whole groups of samples (balanced by frames x
questions). CPU workers (``--workers``, shared among them) render each sample once, ahead of the device, and
run the processor on every frame set its methods feed the model (the whole video, the uniform subsets). The
methods of a sample then answer from those inputs (the adapter's prepare is served from them) and, unless a
press acts on the encoder (PVC), from one run of the vision encoder per frame set (its encode is served from
the first). So ``seconds`` in the rows (wall time per question) leaves the processor out, counts a shared
encoding in the first method that needed it (``full`` at each sample's start) and, with several processes,
shares the device: the methods' costs are better compared with ``vidpress bench``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import multiprocessing
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, BatchFeature

from vidpress import Video, VideoQA
from vidpress.adapters import EncodedVideo, VideoAdapter, adapter_for
from vidpress.eval.answers import extract_letter
from vidpress.eval.journal import Journal, read_records, repair
from vidpress.eval.plots import _pyplot, _save
from vidpress.pipeline import Answer, AnswerStats
from vidpress.presses import (
    AdaReTaKePress,
    DPSelectPress,
    LPCompPress,
    PivotKVPress,
    Press,
    PVCPress,
    QCCompPress,
    ReTaKePress,
    ToMePress,
    UniformFramePress,
    XCompPress,
    as_press_list,
)
from vidpress.pvc.training import CONFIG as PVC_TRAIN_CONFIG
from vidpress.synth import TASKS, SynthSample, make_sample, prompt

SIDE = 112  # frame side in pixels, as vidpress-tiny is trained
MAX_NEW_TOKENS = 8
HELD_OUT_SEED = 2**31
ENCODE_CHUNK_FRAMES = 1024  # frames per vision-encoder call (the adapters' default, 64, is for big models)
RESULTS, REPORT, CONFIG = "results.jsonl", "study.md", "study_config.json"
SCT_CONFIG = "sct_config.json"  # written by vidpress.train.sct next to the tuned model
TARGET_FRACTION, TARGET_KEEP = 1 / 8, 0.95
TARGET_LONG_FRAMES, TARGET_MARGIN = 2048, 0.15  # the second issue target: needle accuracy over uniform at >= 2048 frames

RowKey = tuple[str, str, int, float | None, float]  # method, task, length, depth, fraction


# -- budgets and methods -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFacts:
    """What the budget mapping needs to know of the model: decoder layers, frames per unit, tokens per unit."""

    layers: int
    patch: int
    unit_tokens: int

    @classmethod
    def of(cls, adapter: VideoAdapter) -> ModelFacts:
        """Measured with the processor on one temporal unit of blank SIDE x SIDE frames."""
        patch = adapter.temporal_patch_size
        probe = Video.from_array(np.zeros((patch, SIDE, SIDE, 3), dtype=np.uint8), fps=1.0)
        tokens = int((adapter.prepare(probe, "")["input_ids"] == adapter.video_token_id).sum())
        return cls(layers=len(adapter.decoder_layers), patch=patch, unit_tokens=tokens)


@dataclass(frozen=True)
class Budget:
    """The visual tokens a method may keep on one video: ``tokens``, for ``frames`` frames whose uncompressed
    LLM input is ``prompt_length`` tokens long."""

    tokens: int
    frames: int
    prompt_length: int
    facts: ModelFacts

    @classmethod
    def of(cls, facts: ModelFacts, budget_frames: int, fraction: float, frames: int, prompt_length: int) -> Budget:
        """``fraction`` of the tokens of ``budget_frames`` uncompressed frames."""
        tokens = int(fraction * -(-budget_frames // facts.patch) * facts.unit_tokens)
        return cls(tokens=tokens, frames=frames, prompt_length=prompt_length, facts=facts)

    @property
    def units(self) -> int:
        return -(-self.frames // self.facts.patch)

    @property
    def ratio(self) -> float:
        """r: the kept fraction of the video's visual tokens."""
        return min(1.0, self.tokens / (self.units * self.facts.unit_tokens))

    @property
    def unit_budget(self) -> int:
        """u: the whole temporal units within the budget (at least one)."""
        return max(1, self.tokens // self.facts.unit_tokens)


def uniform_units(units: int, budget: Budget) -> list[Press]:
    """A UniformFramePress down to ``units`` temporal units, or nothing when the video has no more."""
    return [UniformFramePress(num_frames=units * budget.facts.patch)] if units < budget.units else []


def lpcomp_press(budget: Budget) -> LPCompPress:
    return LPCompPress(tokens_per_frame=budget.facts.unit_tokens)


def lpcomp_units(budget: Budget, press: LPCompPress) -> int:
    """n: the most temporal units whose LP-Comp average over layers stays within the budget."""
    facts = budget.facts
    schedule = press.layer_schedule(facts.unit_tokens, facts.layers)
    return max(1, min(budget.units, budget.tokens * facts.layers // sum(schedule)))


def full(budget: Budget) -> list[Press]:
    return []


def uniform(budget: Budget) -> list[Press]:
    return [UniformFramePress(num_frames=budget.unit_budget * budget.facts.patch)]


def dpselect(budget: Budget) -> list[Press]:
    return [DPSelectPress(keep_ratio=min(1.0, budget.unit_budget / budget.units))]


def pivotkv(budget: Budget) -> list[Press]:
    return [PivotKVPress(ratio=budget.ratio)]


def retake(budget: Budget) -> list[Press]:
    return [ReTaKePress(ratio=budget.ratio)]


def adaretake(budget: Budget) -> list[Press]:
    return [AdaReTaKePress(max_input_length=max(1, int(budget.ratio * budget.prompt_length)))]


def lpcomp(budget: Budget, press: LPCompPress | None = None) -> list[Press]:
    press = press or lpcomp_press(budget)
    return [*uniform_units(lpcomp_units(budget, press), budget), press]


def qccomp(budget: Budget) -> list[Press]:
    return [QCCompPress(n_select=budget.unit_budget * budget.facts.patch)]


def xcomp(budget: Budget) -> list[Press]:
    frames = lpcomp_units(budget, lpcomp_press(budget)) * budget.facts.patch
    return [XCompPress(n_select=frames, tokens_per_frame=budget.facts.unit_tokens)]


def tokens_per_unit(budget: Budget, trained: int | None = None) -> int:
    """t: ``trained`` or B // U (at least 1) tokens per temporal unit, at most the unit's own."""
    return min(budget.facts.unit_tokens, trained or max(1, budget.tokens // budget.units))


def tome(budget: Budget) -> list[Press]:
    per_unit = tokens_per_unit(budget)
    return [*uniform_units(budget.tokens // per_unit, budget), ToMePress(tokens_per_frame=per_unit)]


def pvc(budget: Budget, checkpoint: str, trained_tokens: int | None) -> list[Press]:
    per_unit = tokens_per_unit(budget, trained_tokens)
    return [*uniform_units(budget.tokens // per_unit, budget), PVCPress(tokens_per_frame=per_unit, checkpoint=checkpoint)]


def tuned_lpcomp(sct_model: Path) -> LPCompPress:
    """The LP-Comp an SCT model was tuned with (its sct_config.json; SCT's defaults without one)."""
    path = sct_model / SCT_CONFIG
    config = json.loads(path.read_text()) if path.exists() else {}
    return LPCompPress(**{key: config[key] for key in ("tokens_per_frame", "schedule", "keep") if key in config})


def trained_tokens(pvc_checkpoint: Path) -> int | None:
    """Tokens per temporal unit a PVC add-on was trained with (its pvc_train_config.json), None without one."""
    path = pvc_checkpoint / PVC_TRAIN_CONFIG
    return json.loads(path.read_text())["tokens_per_frame"] if path.exists() else None


@dataclass(frozen=True)
class Method:
    """A compared method: its presses for a budget, which model answers, and how its budget is met."""

    name: str
    build: Callable[[Budget], list[Press]]
    rule: str
    model: str = "base"  # "base" (--model) or "sct" (--sct-model)
    checkpoint: str | None = None  # the trained weights it needs (--sct-model, --pvc-checkpoint), recorded in its rows


BASE_METHODS = (
    Method("full", full, "no press: every visual token (the uncompressed reference)"),
    Method("uniform", uniform, "UniformFramePress(num_frames=2u)"),
    Method("dpselect", dpselect, "DPSelectPress(keep_ratio=u/U), async"),
    Method("tome", tome, "uniform B//t units + ToMePress(tokens_per_frame=t), t = B//U (at least 1): clips of 4 units merged"),
    Method("pivotkv", pivotkv, "PivotKVPress(ratio=r): KV entries per layer, every 32-frame chunk"),
    Method("retake", retake, "ReTaKePress(ratio=r): DPSelect pivots + PivotKV at r"),
    Method("adaretake", adaretake, "AdaReTaKePress(max_input_length=int(r*P)): base ratio r, shared unevenly over "
           "chunks and layers (their floors and rounding can overshoot B: +4% measured at 4096 frames)"),
    Method("lpcomp", lpcomp, "uniform n units + LPCompPress(tokens_per_frame=16): average over layers within B"),
    Method("qccomp", qccomp, "QCCompPress(n_select=2u), scored layers rescaled from (6, 24) of 28"),
    Method("xcomp", xcomp, "XCompPress(n_select=2n, tokens_per_frame=16): QC-Comp's n units, then LP-Comp"),
)

SCT_RULE = "lpcomp's presses with the LP-Comp the model of --sct-model was tuned with (its sct_config.json)"
PVC_RULE = ("uniform B//t units + PVCPress(tokens_per_frame=t), t the tokens per unit the add-on of --pvc-checkpoint "
            "was trained with (without its pvc_train_config.json: t = B//U, at least 1, on every frame)")
METHOD_ORDER = (*(method.name for method in BASE_METHODS), "lpcomp-sct", "pvc")
RULES = {**{method.name: method.rule for method in BASE_METHODS}, "lpcomp-sct": SCT_RULE, "pvc": PVC_RULE}


def available_methods(sct_model: Path | None, pvc_checkpoint: Path | None) -> dict[str, Method]:
    """The base methods, plus lpcomp-sct and pvc when their checkpoints are given."""
    methods = {method.name: method for method in BASE_METHODS}
    if sct_model is not None:
        methods["lpcomp-sct"] = Method("lpcomp-sct", functools.partial(lpcomp, press=tuned_lpcomp(sct_model)), SCT_RULE,
                                       model="sct", checkpoint=str(sct_model))
    if pvc_checkpoint is not None:
        build = functools.partial(pvc, checkpoint=str(pvc_checkpoint), trained_tokens=trained_tokens(pvc_checkpoint))
        methods["pvc"] = Method("pvc", build, PVC_RULE, checkpoint=str(pvc_checkpoint))
    return methods


# -- the plan: groups of samples and the jobs run on each -----------------------------------------------------
@dataclass(frozen=True)
class Group:
    """Questions of one task on videos of one length; ``depth`` places the needle (None: random)."""

    task: str
    length: int
    depth: float | None


@dataclass(frozen=True)
class Job:
    """One method at one fraction of the budget."""

    method: str
    fraction: float


@dataclass(frozen=True)
class SampleSpec:
    """One sample of ``group`` and the jobs still to run on it."""

    group: Group
    seed: int
    jobs: tuple[Job, ...]


def sample_seed(task: str, index: int, study_seed: int) -> int:
    """Held-out seed of sample ``index`` of ``task``: the same at every length and depth (paired samples)."""
    return HELD_OUT_SEED + study_seed * 1_000_000 + TASKS.index(task) * 10_000 + index


def row_key(group: Group, job: Job) -> RowKey:
    return (job.method, group.task, group.length, group.depth, job.fraction)


def plan(args: argparse.Namespace, done: set[RowKey]) -> list[SampleSpec]:
    """The samples to answer, group after group, each with the jobs of its group not in ``done``."""
    groups: dict[Group, list[Job]] = {}
    for length in args.lengths:
        for task in args.tasks:
            groups[Group(task, length, None)] = [Job(method, 1.0) for method in args.methods]
    for task in args.tasks if args.fractions else []:
        jobs = groups.setdefault(Group(task, args.budget_frames, None), [])
        jobs += [Job(method, fraction) for method in args.methods if method != "full" for fraction in args.fractions]
        if "full" in args.methods and Job("full", 1.0) not in jobs:
            jobs.append(Job("full", 1.0))
    for depth in args.depths:
        groups[Group("needle", args.depth_frames, depth)] = [Job(method, 1.0) for method in args.methods]
    specs = []
    for group, jobs in groups.items():
        todo = tuple(job for job in jobs if row_key(group, job) not in done)
        if todo:
            seeds = [sample_seed(group.task, index, args.seed) for index in range(args.per_task)]
            specs += [SampleSpec(group, seed, todo) for seed in seeds]
    return specs


# -- rendering and processing in CPU workers ------------------------------------------------------------------
def inputs_key(video: Video, question: str) -> tuple[str, bytes]:
    """Identifies the processor inputs of one sample's question on a subset of its frames."""
    return question, np.asarray(video.frame_indices, dtype=np.int64).tobytes()


def frame_stage(video: Video, presses: list[Press]) -> Video:
    """The frames the presses' frame stage keeps, as the pipeline selects them."""
    for press in as_press_list(presses):
        kept = press.select_frames(video)
        if kept is not None:
            video = video.select(kept)
    return video


def processor_adapter(model: Path) -> VideoAdapter:
    """The model's adapter on a weightless (meta-device) float32 copy of the model: enough to run its processor
    (which casts pixel values to the model's dtype: float32, that of the answering model)."""
    with torch.device("meta"):
        weightless = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(model), dtype=torch.float32)
    return adapter_for(weightless, AutoProcessor.from_pretrained(model))


@dataclass
class Rendered:
    """A sample, its frames and the processor inputs of every frame set its jobs use (by ``inputs_key``)."""

    spec: SampleSpec
    sample: SynthSample
    frames: torch.Tensor
    inputs: dict[tuple[str, bytes], BatchFeature]


class RenderedSamples(Dataset):
    """Renders each sample and runs the processor on the frames each of its jobs keeps (in DataLoader workers)."""

    def __init__(self, specs: list[SampleSpec], model: Path, methods: dict[str, Method], budget_frames: int):
        self.specs, self.model, self.methods, self.budget_frames = specs, model, methods, budget_frames
        self.adapter: VideoAdapter | None = None
        self.facts: ModelFacts | None = None

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, index: int) -> Rendered:
        if self.adapter is None:
            self.adapter = processor_adapter(self.model)
            self.facts = ModelFacts.of(self.adapter)
        spec = self.specs[index]
        group = spec.group
        sample = make_sample(group.task, group.length, depth=group.depth, seed=spec.seed, height=SIDE, width=SIDE)
        frames = sample.array()
        video, question = Video.from_array(frames, sample.fps), prompt(sample)
        whole = self.adapter.prepare(video, question)
        inputs = {inputs_key(video, question): whole}
        for job in spec.jobs:
            budget = Budget.of(self.facts, self.budget_frames, job.fraction, len(video), whole["input_ids"].shape[1])
            kept = frame_stage(video, self.methods[job.method].build(budget))
            key = inputs_key(kept, question)
            if key not in inputs:
                inputs[key] = self.adapter.prepare(kept, question)
        return Rendered(spec, sample, torch.from_numpy(frames), inputs)


class SampleCache:
    """What the methods of one sample share, handed to the adapters instead of being recomputed: the processor
    inputs of each frame set (made by the render workers) and, for methods with no encoder stage, the vision
    encoder's output on them (the same tensors the encoder would give again)."""

    def __init__(self):
        self.inputs: dict[tuple[str, bytes], BatchFeature] = {}
        self.encoded: dict[tuple[int, int], tuple[BatchFeature, EncodedVideo]] = {}
        self.share_encoder = True

    def start(self, inputs: dict[tuple[str, bytes], BatchFeature]) -> None:
        """Serve a new sample's inputs; forget the previous sample's."""
        self.inputs, self.encoded = inputs, {}

    def install(self, adapter: VideoAdapter) -> None:
        """Route ``adapter``'s prepare and encode through the cache."""
        prepare, encode = adapter.prepare, adapter.encode

        def cached_prepare(video: Video, question: str) -> BatchFeature:
            found = self.inputs.get(inputs_key(video, question))
            return prepare(video, question) if found is None else found

        def cached_encode(inputs: BatchFeature, *args, **kwargs) -> EncodedVideo:
            if not self.share_encoder:
                return encode(inputs, *args, **kwargs)
            key = (id(adapter), id(inputs))  # the entry holds ``inputs``, so its id is not reused meanwhile
            if key not in self.encoded:
                self.encoded[key] = inputs, encode(inputs, *args, **kwargs)
            return copy.copy(self.encoded[key][1])  # presses may replace its tensors (ToMe), never edit them

        adapter.prepare, adapter.encode = cached_prepare, cached_encode


def _single_thread(worker: int) -> None:
    torch.set_num_threads(1)


def rendered_samples(
    specs: list[SampleSpec], args: argparse.Namespace, methods: dict[str, Method]
) -> Iterable[Rendered]:
    """The specs' samples in order, rendered and processed ``args.workers`` at a time ahead of the device."""
    dataset = RenderedSamples(specs, args.model, methods, args.budget_frames)
    return DataLoader(
        dataset, batch_size=None, num_workers=args.workers, worker_init_fn=_single_thread,
        prefetch_factor=2 if args.workers else None,
    )


# -- answering ------------------------------------------------------------------------------------------------
def visual_kv(stats: AnswerStats) -> float:
    """Visual KV-cache entries per decoder layer after the prefill, averaged over the layers."""
    text = stats.llm_input_length - stats.visual_tokens_after
    return float(np.mean(stats.kv_length_per_layer)) - text


@dataclass
class Tally:
    """The answers of one row so far."""

    budget_tokens: int
    correct: int = 0
    unparseable: int = 0
    visual_tokens: list[int] = field(default_factory=list)
    visual_kv: list[float] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    presses: list[dict] = field(default_factory=list)

    def add(self, answer: Answer, sample: SynthSample, seconds: float, presses: list[Press]) -> None:
        letter = extract_letter(answer.text, sample.options)
        self.correct += letter == sample.answer
        self.unparseable += letter is None
        self.visual_tokens.append(answer.stats.visual_tokens_after)
        self.visual_kv.append(visual_kv(answer.stats))
        self.frames.append(answer.stats.frames_kept)
        self.seconds.append(seconds)
        self.presses = [{type(p).__name__: asdict(p)} for p in presses]

    def row(self, key: RowKey) -> dict:
        method, task, length, depth, fraction = key
        n = len(self.seconds)
        return {
            "method": method, "task": task, "length": length, "depth": depth, "fraction": fraction,
            "budget_tokens": self.budget_tokens, "n": n, "correct": self.correct, "accuracy": self.correct / n,
            "unparseable": self.unparseable, "visual_tokens": float(np.mean(self.visual_tokens)),
            "visual_kv": float(np.mean(self.visual_kv)), "frames_kept": float(np.mean(self.frames)),
            "seconds": float(np.mean(self.seconds)), "presses": self.presses,
        }


def load_qa(model: Path, device: str | None) -> VideoQA:
    """The model in float32 on ``device`` (default: CUDA when available), its vision tower on the batched path
    (VideoQA's default) and run on ENCODE_CHUNK_FRAMES frames per call (the same features: Qwen-VL towers attend
    within each unit)."""
    qa = VideoQA.from_pretrained(model, device=device, dtype=torch.float32)
    qa.encode_chunk_frames = ENCODE_CHUNK_FRAMES
    return qa


class Answerer:
    """The models of one answering process; the methods of a sample share a SampleCache."""

    def __init__(self, args: argparse.Namespace, methods: dict[str, Method]):
        self.methods, self.budget_frames = methods, args.budget_frames
        self.qas = {"base": load_qa(args.model, args.device)}
        if any(methods[m].model == "sct" for m in args.methods):
            self.qas["sct"] = load_qa(args.sct_model, args.device)
        self.facts = ModelFacts.of(self.qas["base"].adapter)
        self.cache = SampleCache()
        for qa in self.qas.values():
            self.cache.install(qa.adapter)

    def answer_sample(self, item: Rendered, tallies: dict[RowKey, Tally], answered: Callable[[], object]) -> None:
        """Answer every job of ``item``, adding each answer to its row's tally and calling ``answered``."""
        self.cache.start(item.inputs)
        video, question = Video.from_array(item.frames.numpy(), item.sample.fps), prompt(item.sample)
        prompt_length = item.inputs[inputs_key(video, question)]["input_ids"].shape[1]
        for job in item.spec.jobs:
            method = self.methods[job.method]
            budget = Budget.of(self.facts, self.budget_frames, job.fraction, len(video), prompt_length)
            presses = method.build(budget)
            self.cache.share_encoder = not any("encoder" in press.stages for press in as_press_list(presses))
            start = time.perf_counter()
            answer = self.qas[method.model].ask(video, question, press=presses, max_new_tokens=MAX_NEW_TOKENS)
            tally = tallies.setdefault(row_key(item.spec.group, job), Tally(budget.tokens))
            tally.add(answer, item.sample, time.perf_counter() - start, presses)
            answered()


def answer_shard(args: argparse.Namespace, specs: list[SampleSpec], shard: int, parent: int | None) -> None:
    """Answer ``specs``, appending each row to results.jsonl once its group's last sample is done.

    ``shard`` places the progress bar; with a ``parent`` process id, stop when that process is gone.
    """
    methods = available_methods(args.sct_model, args.pvc_checkpoint)
    answerer = Answerer(args, methods)
    left = {spec.group: args.per_task for spec in specs}
    tallies: dict[RowKey, Tally] = {}
    bar = tqdm(total=sum(len(spec.jobs) for spec in specs), unit="question", desc=f"shard {shard}", position=shard)
    with Journal(args.output / RESULTS) as journal, bar:
        for item in rendered_samples(specs, args, methods):
            if parent is not None and os.getppid() != parent:
                return
            answerer.answer_sample(item, tallies, bar.update)
            group = item.spec.group
            left[group] -= 1
            if left[group] == 0:
                for key in (row_key(group, job) for job in item.spec.jobs):
                    row = tallies.pop(key).row(key)
                    if methods[key[0]].checkpoint is not None:
                        row["checkpoint"] = methods[key[0]].checkpoint
                    journal.append(row)
                    bar.write(describe(row))


def answer_in_process(args: argparse.Namespace, specs: list[SampleSpec], shard: int, parent: int) -> None:
    """answer_shard in a process of its own, on one CPU thread: the processes run side by side, and a forked
    child must not enter the parent's OpenMP thread pool (it would wait for threads that fork did not copy)."""
    torch.set_num_threads(1)
    answer_shard(args, specs, shard, parent)


def split(specs: list[SampleSpec], count: int) -> list[list[SampleSpec]]:
    """Up to ``count`` shards of whole groups, balanced by frames x questions (largest group to the lightest shard)."""
    cost: dict[Group, int] = {}
    for spec in specs:
        cost[spec.group] = cost.get(spec.group, 0) + spec.group.length * len(spec.jobs)
    load, owner = [0] * count, {}
    for group in sorted(cost, key=cost.get, reverse=True):
        owner[group] = load.index(min(load))
        load[owner[group]] += cost[group]
    shards = [[spec for spec in specs if owner[spec.group] == shard] for shard in range(count)]
    return [shard for shard in shards if shard]


def answer(args: argparse.Namespace, specs: list[SampleSpec]) -> None:
    """Answer ``specs`` in this process, or in ``args.procs`` processes sharing the device (and ``args.workers``)."""
    shards = split(specs, args.procs)
    if len(shards) <= 1:
        answer_shard(args, specs, 0, None)
        return
    # A tiny model leaves the GPU idle between kernel launches: processes answering side by side keep it busy.
    # CUDA needs fresh (spawned) processes; forking is faster for CPU runs.
    context = multiprocessing.get_context("fork" if args.device == "cpu" else "spawn")
    workers = max(1, args.workers // len(shards)) if args.workers else 0
    shard_args = argparse.Namespace(**{**vars(args), "workers": workers})
    processes = [context.Process(target=answer_in_process, args=(shard_args, shard, index, os.getpid()))
                 for index, shard in enumerate(shards)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [index for index, process in enumerate(processes) if process.exitcode != 0]
    if failed:
        raise SystemExit(f"answering processes {failed} failed (their rows are missing; rerun to resume)")


def describe(row: dict) -> str:
    """One printed line per finished row."""
    depth = "random" if row["depth"] is None else f"{row['depth']:.2f}"
    budget = f"{fraction_label(row['fraction']):>3} ({row['budget_tokens']} tok)"
    return (
        f"{row['method']:>10} {row['task']:>9} {row['length']:5d}f depth {depth:>6} budget {budget}: "
        f"{100 * row['accuracy']:5.1f}% of {row['n']}, visual KV/layer {row['visual_kv']:7.0f}, "
        f"{row['seconds']:.2f} s/question"
    )


# -- the report -----------------------------------------------------------------------------------------------
def fraction_label(fraction: float) -> str:
    return str(Fraction(fraction).limit_denominator(1000))


def table(header: list[str], body: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


class Rows:
    """The study's rows, looked up by key; means over tasks need every task's row."""

    def __init__(self, rows: list[dict]):
        self.by_key = {(r["method"], r["task"], r["length"], r["depth"], r["fraction"]): r for r in rows}

    def get(self, method: str, task: str, length: int, depth: float | None = None, fraction: float = 1.0
            ) -> dict | None:
        return self.by_key.get((method, task, length, depth, fraction))

    def accuracy(self, method: str, task: str, length: int, depth: float | None = None, fraction: float = 1.0
                 ) -> float | None:
        row = self.get(method, task, length, depth, fraction)
        return None if row is None else row["accuracy"]

    def mean(self, field_name: str, method: str, tasks: list[str], length: int, fraction: float = 1.0) -> float | None:
        rows = [self.get(method, task, length, None, fraction) for task in tasks]
        return None if any(r is None for r in rows) else float(np.mean([r[field_name] for r in rows]))


@dataclass
class Layout:
    """What the report shows: the methods, tasks, lengths, fractions and depths asked for now or in the rows."""

    methods: list[str]
    tasks: list[str]
    lengths: list[int]
    fractions: list[float]
    depths: list[float]

    @classmethod
    def of(cls, rows: list[dict], args: argparse.Namespace) -> Layout:
        main = [r for r in rows if r["depth"] is None and r["fraction"] == 1.0 and r["method"] != "full"]
        swept = [r for r in rows if r["depth"] is not None and r["length"] == args.depth_frames]
        return cls(
            methods=[m for m in METHOD_ORDER if m in args.methods or any(r["method"] == m for r in rows)],
            tasks=[t for t in TASKS if t in args.tasks or any(r["task"] == t for r in main)],
            lengths=sorted(set(args.lengths) | {r["length"] for r in main}),
            fractions=sorted(set(args.fractions) | {r["fraction"] for r in rows if r["fraction"] != 1.0}, reverse=True),
            depths=sorted(set(args.depths) | {r["depth"] for r in swept}),
        )


def best_press(
    rows: Rows, layout: Layout, length: int, fraction: float, exclude: tuple[str, ...], tasks: list[str]
) -> tuple[str, float] | None:
    """The method (other than ``exclude``) with the highest mean accuracy over ``tasks``, and that accuracy."""
    scores = [(rows.mean("accuracy", m, tasks, length, fraction), m) for m in layout.methods if m not in exclude]
    scores = [(score, m) for score, m in scores if score is not None]
    if not scores:
        return None
    score, method = max(scores)
    return method, score


def target_lines(rows: Rows, layout: Layout, frames: int) -> list[str]:
    """The two issue targets at a budget of ``frames`` frames, each stated as met or not met (or not computed)."""
    tasks, label = ", ".join(layout.tasks), fraction_label(TARGET_FRACTION)
    full_accuracy = rows.mean("accuracy", "full", layout.tasks, frames)
    best = best_press(rows, layout, frames, TARGET_FRACTION, ("full",), layout.tasks)
    if full_accuracy is None or best is None:
        first = (f"1. At {label} of the token budget, at {frames} frames: not computed (needs `full` and the "
                 f"{label} rows of every task).")
    else:
        kept = f"{100 * best[1] / full_accuracy:.1f}% kept; " if full_accuracy else ""
        verdict = "**met**" if best[1] >= TARGET_KEEP * full_accuracy else "**not met**"
        first = (
            f"1. At {label} of the full token budget, at {frames} frames, the best press keeps >= {TARGET_KEEP:.0%} "
            f"of the uncompressed accuracy: {verdict}. Best: `{best[0]}` {percent(best[1])}% vs full "
            f"{percent(full_accuracy)}% ({kept}mean over {tasks})."
        )
    verdicts = []
    for length in (length for length in layout.lengths if length >= TARGET_LONG_FRAMES):
        best = best_press(rows, layout, length, 1.0, ("full", "uniform"), ["needle"])
        uniform_accuracy = rows.mean("accuracy", "uniform", ["needle"], length)
        if best is not None and uniform_accuracy is not None:
            verdicts.append((length, best, uniform_accuracy))
    claim = (f"2. At {TARGET_LONG_FRAMES} frames and more, at equal budget (that of {frames} frames), the best press "
             f"beats uniform frame sampling by >= {100 * TARGET_MARGIN:.0f} points on needle questions")
    if not verdicts:
        second = f"{claim}: not computed (needs needle rows of a press and of `uniform` at those lengths)."
    else:
        met = all(best[1] - uniform_accuracy >= TARGET_MARGIN for _, best, uniform_accuracy in verdicts)
        details = "; ".join(
            f"{length} frames: `{best[0]}` {percent(best[1])}% vs uniform {percent(u)}%" for length, best, u in verdicts
        )
        second = f"{claim}: {'**met**' if met else '**not met**'} ({details})."
    return [first, second]


def setup_lines(args: argparse.Namespace, facts: ModelFacts, layout: Layout) -> list[str]:
    """How the study was run and how each method's budget is set."""
    budget = Budget.of(facts, args.budget_frames, 1.0, args.budget_frames, 0)
    schedule = lpcomp_press(budget).layer_schedule(facts.unit_tokens, facts.layers)
    scored = QCCompPress().layer_range(facts.layers)
    return [
        f"Model `{args.model}`: {facts.layers} decoder layers, {facts.unit_tokens} visual tokens per temporal unit of "
        f"{facts.patch} frames ({SIDE} px frames). {args.per_task} held-out questions per task and cell (seed "
        f"{args.seed}), greedy answers of at most {MAX_NEW_TOKENS} tokens, accuracy in % (unparseable answers are "
        "wrong).",
        "",
        f"**Budget.** B = {budget.tokens} visual tokens, those of {args.budget_frames} uncompressed frames: the visual "
        "tokens the LLM keeps per decoder layer, averaged over the layers (visual KV-cache entries after the prefill). "
        "For frame and token presses that is the visual tokens of the LLM input; KV presses prefill every token and "
        f"keep B; LP-Comp thins the video inside the decoder ({', '.join(map(str, schedule))} tokens per unit in "
        f"layers 0-{facts.layers - 1}), so for it B bounds the average over layers (LLM compute). U: the video's "
        f"temporal units, V = {facts.unit_tokens}U, r = min(1, B/V), u = B // {facts.unit_tokens}, n = the most units "
        f"with n x {sum(schedule)} / {facts.layers} <= B, P: the uncompressed LLM input length. QC-Comp scores layers "
        f"{scored.start}-{scored.stop - 1}.",
        "",
        table(["method", "presses for budget B"], [[f"`{m}`", RULES[m]] for m in layout.methods]),
    ]


def checkpoint_lines(records: list[dict]) -> list[str]:
    """Which trained weights the rows of lpcomp-sct and pvc were made with (the ``checkpoint`` of their rows)."""
    found: dict[str, dict[str, int]] = {}
    for record in records:
        if record["method"] in ("lpcomp-sct", "pvc"):
            checkpoint = record.get("checkpoint")
            name = "not recorded (rows made before rows recorded it)" if checkpoint is None else f"`{checkpoint}`"
            counts = found.setdefault(record["method"], {})
            counts[name] = counts.get(name, 0) + 1
    parts = [f"`{method}`: " + ", ".join(f"{name}, {n} rows" for name, n in counts.items())
             for method, counts in sorted(found.items(), key=lambda item: METHOD_ORDER.index(item[0]))]
    if not parts:
        return []
    return ["", "**Checkpoints** of the trained methods, as their rows record them: " + "; ".join(parts) + "."]


def length_tables(rows: Rows, layout: Layout) -> list[str]:
    """Accuracy per method x length for each task and their mean, then the mean visual tokens kept."""
    header = ["method", *(f"{length} f" for length in layout.lengths)]
    parts = []
    for task in layout.tasks:
        body = [[m, *(percent(rows.accuracy(m, task, length)) for length in layout.lengths)] for m in layout.methods]
        parts += [f"### {task}", "", table(header, body), ""]
    for title, name, show in (("mean over tasks", "accuracy", percent),
                              ("visual tokens kept per decoder layer (mean over tasks)", "visual_kv", count)):
        body = [[m, *(show(rows.mean(name, m, layout.tasks, n)) for n in layout.lengths)] for m in layout.methods]
        parts += [f"### {title}", "", table(header, body), ""]
    return parts


def fraction_table(rows: Rows, layout: Layout, frames: int) -> list[str]:
    """At ``frames`` frames (the budget's): every method at each fraction of the budget, against full."""
    header = ["method", "budget", *layout.tasks, "mean", "visual tokens/layer"]

    def line(method: str, label: str, fraction: float) -> list[str]:
        accuracies = [percent(rows.accuracy(method, task, frames, None, fraction)) for task in layout.tasks]
        mean, kv = (rows.mean(name, method, layout.tasks, frames, fraction) for name in ("accuracy", "visual_kv"))
        return [method, label, *accuracies, percent(mean), count(kv)]

    body = [line("full", "uncompressed", 1.0)] if "full" in layout.methods else []
    body += [line(m, fraction_label(f), f) for f in layout.fractions for m in layout.methods if m != "full"]
    return [table(header, body), ""]


def depth_table(rows: Rows, layout: Layout, frames: int) -> list[str]:
    header = ["method", *(f"depth {d:.2f}" for d in layout.depths)]
    body = [[m, *(percent(rows.accuracy(m, "needle", frames, d)) for d in layout.depths)] for m in layout.methods]
    return [table(header, body), ""]


def write_report(records: list[dict], args: argparse.Namespace, facts: ModelFacts) -> Path:
    """study.md and the plots, from every row in ``records``."""
    rows, layout = Rows(records), Layout.of(records, args)
    frames = args.budget_frames
    parts = ["# Accuracy vs visual-token budget (vidpress-tiny, synthetic suite)", "",
             f"Regenerate: `python scripts/accuracy_study.py --output {args.output} --per-task {args.per_task}` (add `--sct-model` and "
             "`--pvc-checkpoint` for the trained methods); runs are resumable and append to results.jsonl, so "
             f"several runs, each on a subset of methods, lengths or tasks, may have written these rows. This "
             f"page was written by `{args.command}`. A `-` marks a cell no run has measured yet.", "",
             *setup_lines(args, facts, layout), *checkpoint_lines(records), "", "## Issue targets", "", *target_lines(rows, layout, frames), "",
             "## Accuracy per task and length at the budget", "", *length_tables(rows, layout),
             "![accuracy vs frames](accuracy_vs_frames.png)", "",
             f"## {frames} frames at fractions of the budget", "", *fraction_table(rows, layout, frames)]
    plot_lengths(rows, layout, args)
    if layout.depths and any(record["depth"] is not None for record in records):
        parts += [f"## Needle depth at {args.depth_frames} frames", "", *depth_table(rows, layout, args.depth_frames),
                  "![needle accuracy vs depth](needle_depth.png)", ""]
        plot_depths(rows, layout, args.depth_frames, args.output)
    path = args.output / REPORT
    path.write_text("\n".join(parts))
    return path


def line_style(plt, methods: list[str], method: str) -> dict:
    """A colour of its own for each method; full as a dashed black reference."""
    if method == "full":
        return {"color": "black", "linestyle": "--", "marker": "o", "label": method, "zorder": 3}
    return {"color": plt.get_cmap("tab20")(methods.index(method) % 20), "marker": "o", "label": method}


def plot_lengths(rows: Rows, layout: Layout, args: argparse.Namespace) -> Path:
    """accuracy_vs_frames.png: one panel per task and their mean, one line per method."""
    plt = _pyplot()
    panels = [*layout.tasks, "mean"]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels) + 1, 3.6), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], panels):
        for m in layout.methods:
            if task == "mean":
                values = [rows.mean("accuracy", m, layout.tasks, length) for length in layout.lengths]
            else:
                values = [rows.accuracy(m, task, length) for length in layout.lengths]
            points = [(length, 100 * v) for length, v in zip(layout.lengths, values) if v is not None]
            if points:
                ax.plot(*zip(*points), **line_style(plt, layout.methods, m))
        ax.set(xscale="log", xlabel="video frames", title=task, ylim=(-2, 102))
        ax.set_xticks(layout.lengths, [str(length) for length in layout.lengths])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"accuracy (%) at a {args.budget_frames}-frame budget")
    lines = {line.get_label(): line for ax in axes[0] for line in ax.get_lines()}  # every method drawn anywhere
    axes[0][-1].legend(lines.values(), lines.keys(), fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    return _save(figure, args.output / "accuracy_vs_frames.png", plt)


def plot_depths(rows: Rows, layout: Layout, frames: int, output: Path) -> Path:
    """needle_depth.png: needle accuracy against depth, one line per method."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(7, 4))
    for m in layout.methods:
        points = [(d, 100 * a) for d in layout.depths if (a := rows.accuracy(m, "needle", frames, d)) is not None]
        if points:
            ax.plot(*zip(*points), **line_style(plt, layout.methods, m))
    ax.set(xlabel="needle depth", ylabel="accuracy (%)", ylim=(-2, 102), title=f"needle, {frames} frames, equal budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    return _save(figure, output / "needle_depth.png", plt)


# -- command line ---------------------------------------------------------------------------------------------
def _list(kind: Callable[[str], object]) -> Callable[[str], list]:
    return lambda text: [kind(item) for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("vidpress/assets/vidpress-tiny"))
    parser.add_argument("--output", type=Path, default=Path("docs/study"))
    parser.add_argument("--lengths", type=_list(int), default=[256, 1024, 2048, 4096], help="video lengths in frames")
    parser.add_argument("--tasks", type=_list(str), default=["needle", "counting", "ordering"])
    parser.add_argument("--per-task", type=int, default=30, help="questions per task and cell")
    parser.add_argument("--depths", type=_list(float), default=[0.0, 0.25, 0.5, 0.75, 1.0],
                        help="needle depths ('' skips the sweep)")
    parser.add_argument("--depth-frames", type=int, default=1024, help="video length of the needle-depth sweep")
    parser.add_argument("--budget-frames", type=int, default=256,
                        help="the budget: the visual tokens of this many frames")
    parser.add_argument("--fractions", type=_list(lambda s: float(Fraction(s))), default=[1 / 8],
                        help="fractions of the budget also run at --budget-frames frames")
    parser.add_argument("--methods", type=_list(str), default=None, help="comma list (default: all available)")
    parser.add_argument("--sct-model", type=Path, help="an LP-Comp-tuned (SCT) copy of the model: adds lpcomp-sct")
    parser.add_argument("--pvc-checkpoint", type=Path, help="a trained PVC add-on: adds pvc")
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--seed", type=int, default=0, help="offsets the held-out sample seeds")
    parser.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 2)),
                        help="CPU processes rendering samples ahead of the device, in all (0: in the answering one)")
    parser.add_argument("--procs", type=int, default=4 if torch.cuda.device_count() else 1,  # NVML: CUDA stays unused
                        help="processes answering side by side on the device (default: 4 on a GPU, else 1)")
    parser.add_argument("--report-only", action="store_true",
                        help="write study.md and the plots from the rows already in --output; answer nothing")
    args = parser.parse_args(argv)
    args.command = shlex.join(["python", "scripts/accuracy_study.py", *(sys.argv[1:] if argv is None else argv)])
    available = available_methods(args.sct_model, args.pvc_checkpoint)
    args.methods = args.methods or list(available)
    unknown = [m for m in args.methods if m not in available]
    if unknown:
        parser.error(f"unknown or unavailable methods {unknown} (lpcomp-sct needs --sct-model, pvc --pvc-checkpoint); "
                     f"available: {', '.join(available)}")
    unknown_tasks = [t for t in args.tasks if t not in TASKS]
    if unknown_tasks:
        parser.error(f"unknown tasks {unknown_tasks}; choose from {', '.join(TASKS)}")
    return args


def check_config(args: argparse.Namespace) -> None:
    """Write the settings that move every number, or refuse an output folder made with other ones."""
    settings = {"model": str(args.model), "budget_frames": args.budget_frames, "per_task": args.per_task,
                "seed": args.seed, "side": SIDE, "max_new_tokens": MAX_NEW_TOKENS, "dtype": "float32"}
    path = args.output / CONFIG
    if path.exists():
        previous = json.loads(path.read_text())
        changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
        if changed:
            raise SystemExit(f"{args.output} holds a study made with other settings {changed} (before, now): "
                             "use another --output")
    else:
        args.output.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n")


def same_checkpoint(row: dict, methods: dict[str, Method]) -> bool:
    """Whether ``row`` was made with the checkpoint its method now uses (rows of a trained method made with another
    --sct-model or --pvc-checkpoint, or before rows recorded theirs, are run again; the report shows the last row)."""
    method = methods.get(row["method"])
    return method is None or method.checkpoint is None or row.get("checkpoint") == method.checkpoint


def main(argv: list[str] | None = None) -> Path:
    """Run the missing rows of the study, then write study.md and the plots; returns study.md's path."""
    args = parse_args(argv)
    check_config(args)
    results = args.output / RESULTS
    repair(results)  # a row cut short by a kill
    methods = available_methods(args.sct_model, args.pvc_checkpoint)
    done = {(r["method"], r["task"], r["length"], r["depth"], r["fraction"]) for r in read_records(results)
            if same_checkpoint(r, methods)}
    specs = plan(args, done)
    questions = sum(len(spec.jobs) for spec in specs)
    print(f"{len(specs)} samples to answer ({questions} questions); {len(done)} rows already in {results}")
    if specs and not args.report_only:
        answer(args, specs)
    report = write_report(read_records(results), args, ModelFacts.of(processor_adapter(args.model)))
    print(f"wrote {report}")
    return report


if __name__ == "__main__":
    main()
