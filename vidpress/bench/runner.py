"""Run the benchmark: per architecture and frame count, plain transformers and every vidpress variant.

Rows of one (architecture, frames) pair read the same synthetic mp4 (2 fps, every frame sampled):

- ``transformers``: the stock path, timed here: ``load_video`` (file decode), the processor, then one
  ``model.generate`` (greedy, stock SDPA in the LLM and the vision tower). Vision seconds come from hooks
  on the vision tower; first-token and per-token times from a logits processor called at every step.
- ``vidpress`` and ``vidpress + <press>``: ``VideoQA.ask`` on the file, with its own stage seconds and peak
  memory (vision seconds again from the tower hooks), on the batched vision attention when ``fast_vision``
  decoding into reserved KV buffers when ``fast_decode``, and the processor on the GPU when ``fast_preprocess``.

Every row records the LLM tokens, KV-cache size, and each stage's floor (FLOPs or bytes, see
:mod:`vidpress.bench.floors`) as a fraction of the device's measured peaks. A row that runs out of GPU
memory is recorded as OOM and the run goes on.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from transformers import BatchFeature, LogitsProcessor, LogitsProcessorList

from vidpress.adapters import model_inputs
from vidpress.bench.archs import Arch, build_model, get_arch
from vidpress.bench.floors import decode_step_bytes, kv_bytes, prefill_flops, vision_flops
from vidpress.bench.peaks import Peaks, measure_peaks
from vidpress.bench.video import FPS, write_synthetic_video
from vidpress.fast import fast_vision, stock_vision
from vidpress.pipeline import VideoQA
from vidpress.presses import Press
from vidpress.video import load_video

QUESTION = "What happens in the video? Describe the moving squares."
STOCK = "transformers"
VIDPRESS = "vidpress"
WARMUP_FRAMES = 8
COMPILE_WARMUP_FRAMES = 512  # two default encoder chunks of 448x252 Qwen2.5-VL frames


@dataclass
class Settings:
    """What to run.

    Attributes
    ----------
    archs : architecture names (see :data:`vidpress.bench.archs.ARCHS`).
    frames : frame counts (frames sampled at 2 fps from a video that long).
    presses : (label, presses) pairs, each a vidpress row besides the press-free one.
    fast_vision : run the vidpress rows on the fast vision path (:mod:`vidpress.fast.vision`).
    compile_vision : with it, the vision blocks under ``torch.compile`` (compiled during the warm-up, which
        then also answers on a video of :data:`COMPILE_WARMUP_FRAMES` frames, or the shortest, so the rows'
        chunk shapes are compiled before timing).
    fast_decode : decode the vidpress rows into reserved KV buffers (:mod:`vidpress.fast.decode`); False keeps
        the stock dynamic cache, for comparison.
    fast_prefill : prefill chunks of the vidpress rows through ``causal_lower_right`` (``VideoQA(fast_prefill=...)``).
    fast_preprocess : the processor of the vidpress rows on the GPU: True always, None only for the streamed
        chunks of videos it does not resize (``VideoQA(fast_preprocess=...)``); the transformers rows always
        run it on the CPU, transformers' default.
    stream_preprocess : stream the processor of the vidpress rows chunk by chunk, overlapped with the vision
        encoder (``VideoQA(stream_preprocess=...)``); their "preprocess s" is then the time not hidden.
    max_new_tokens : greedy tokens per answer (decode ms/token is averaged over them).
    stock_max_frames : skip the transformers row above this many frames (None: never skip).
    plain_max_frames : skip the press-free vidpress row above this many frames (None: never skip).
    device : "cuda", "cpu"... (None: CUDA when available).
    video_dir : where the synthetic mp4 files are written once (None: a temporary folder).
    """

    archs: Sequence[str]
    frames: Sequence[int]
    presses: Sequence[tuple[str, Press | Sequence[Press]]] = ()
    fast_vision: bool = True
    compile_vision: bool = False
    fast_decode: bool = True
    fast_prefill: bool = True
    fast_preprocess: bool | None = None
    stream_preprocess: bool = True
    max_new_tokens: int = 32
    stock_max_frames: int | None = None
    plain_max_frames: int | None = None
    device: str | None = None
    video_dir: Path | None = None

    def __post_init__(self) -> None:
        for name in self.archs:
            get_arch(name)
        if not self.frames or min(self.frames) < 2:
            raise ValueError(f"frames must be counts of at least 2, got {list(self.frames)}")
        if self.compile_vision and not self.fast_vision:
            raise ValueError("--compile-vision compiles the fast vision path: it needs --fast-vision")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Row:
    """One measured configuration; seconds are wall-clock, floors are at the device's measured peaks."""

    arch: str
    frames: int
    method: str
    llm_tokens: int = 0
    kv_gib: float = 0.0
    decode_s: float = 0.0  # reading and decoding the video file
    preprocess_s: float = 0.0  # the processor (resize, normalise, patchify), the prompt, vidpress's positions
    vision_s: float = 0.0
    select_s: float = 0.0  # token-stage presses: QC-Comp's scoring passes, DPSelect, ToMe, building the LLM inputs
    prefill_s: float = 0.0  # the LLM only
    prefill_tflop: float = 0.0  # the prefill's FLOPs: each layer's own tokens and query-key pairs
    first_token_s: float = 0.0  # preprocess + vision + select + prefill
    ms_per_token: float | None = None
    peak_gib: float = 0.0
    vision_floor_s: float = 0.0
    prefill_floor_s: float = 0.0
    decode_floor_ms: float = 0.0
    new_tokens: int = 0
    same_tokens_as_stock: bool | None = None
    note: str = ""
    token_ids: list[int] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not self.note

    @staticmethod
    def _fraction(floor: float, measured: float | None) -> float | None:
        return floor / measured if measured else None

    @property
    def vision_fraction(self) -> float | None:
        return self._fraction(self.vision_floor_s, self.vision_s)

    @property
    def prefill_fraction(self) -> float | None:
        return self._fraction(self.prefill_floor_s, self.prefill_s)

    @property
    def decode_fraction(self) -> float | None:
        return self._fraction(self.decode_floor_ms, self.ms_per_token)


@dataclass
class Result:
    """A whole run: the device's peaks, the rows, and the settings."""

    peaks: Peaks
    rows: list[Row]
    settings: Settings
    dtype: str


class VisionClock:
    """Hooks on a vision tower summing its wall-clock seconds and FLOPs, and the peak memory seen after it."""

    def __init__(self, visual: torch.nn.Module, device: torch.device):
        self.visual, self.device = visual, device
        self.seconds = self.flops = self.peak_bytes = 0.0
        self._start = 0.0
        self._handles = [
            visual.register_forward_pre_hook(self._before, with_kwargs=True),
            visual.register_forward_hook(self._after),
        ]

    def reset(self) -> None:
        self.seconds = self.flops = self.peak_bytes = 0.0

    def _before(self, module, args, kwargs) -> None:
        grid = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
        self.flops += vision_flops(module, grid)
        self._start = _now(self.device)

    def _after(self, module, args, output) -> None:
        self.seconds += _now(self.device) - self._start
        self.peak_bytes = max(self.peak_bytes, _peak_bytes(self.device))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class _StepClock(LogitsProcessor):
    """Records the (synchronised) time at which generate produces each token's logits."""

    def __init__(self, device: torch.device):
        self.device, self.times = device, []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.times.append(_now(self.device))
        return scores


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _peak_bytes(device: torch.device) -> float:
    """Peak GPU memory allocated; the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@contextlib.contextmanager
def _stock_llm_attention(qa: VideoQA) -> Iterator[None]:
    """Put the LLM back on stock SDPA (VideoQA switches it to ``vidpress_sdpa``) for the transformers row."""
    text_config = qa.model.config.get_text_config()
    previous = text_config._attn_implementation
    text_config._attn_implementation = "sdpa"
    try:
        yield
    finally:
        text_config._attn_implementation = previous


def _per_token_ms(seconds: float, tokens: int) -> float | None:
    """Milliseconds per decode step: ``tokens`` tokens take ``tokens - 1`` steps after the prefill's."""
    return 1000 * seconds / (tokens - 1) if tokens > 1 else None


class ArchBench:
    """The rows of one architecture: a VideoQA on its random-weight model, a vision clock, the run's peaks."""

    def __init__(self, qa: VideoQA, arch: Arch, settings: Settings, peaks: Peaks):
        self.qa, self.arch, self.settings, self.peaks = qa, arch, settings, peaks
        self.device = qa.adapter.device
        self.clock = VisionClock(qa.model.model.visual, self.device)

    def stock(self, path: Path, frames: int, max_new_tokens: int) -> Row:
        """The plain transformers row: decode, processor, one greedy ``model.generate``."""
        device, clock = self.device, self.clock
        start = time.perf_counter()
        video = load_video(path, fps=FPS, max_frames=frames)
        decode_s = time.perf_counter() - start
        start = time.perf_counter()
        adapter = self.qa.adapter
        device_of_processor, adapter.preprocess_device = adapter.preprocess_device, None
        try:
            inputs = adapter.prepare(video, QUESTION)
        finally:
            adapter.preprocess_device = device_of_processor
        inputs = BatchFeature(model_inputs(inputs)).to(device)
        preprocess_s = time.perf_counter() - start
        length = inputs["input_ids"].shape[1]
        steps = _StepClock(device)
        clock.reset()
        _reset_peak(device)
        with _stock_llm_attention(self.qa), stock_vision(self.qa.model):
            start = _now(device)
            output = self.qa.model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, logits_processor=LogitsProcessorList([steps])
            )
        tokens = output[0, length:].tolist()
        first = steps.times[0] - start
        return Row(
            arch=self.arch.name, frames=frames, method=STOCK, llm_tokens=length, decode_s=decode_s,
            preprocess_s=preprocess_s, vision_s=clock.seconds, prefill_s=first - clock.seconds,
            first_token_s=preprocess_s + first, ms_per_token=_per_token_ms(steps.times[-1] - steps.times[0], len(tokens)),
            peak_gib=max(clock.peak_bytes, _peak_bytes(device)) / 2**30, new_tokens=len(tokens), token_ids=tokens,
            **self._floors(length, length),
        )

    def vidpress(
        self, path: Path, frames: int, press: Press | Sequence[Press] | None, max_new_tokens: int, method: str = VIDPRESS
    ) -> Row:
        """A vidpress row: ``VideoQA.ask`` on the file with ``press``, timed by its own stage statistics."""
        clock = self.clock
        clock.reset()
        _reset_peak(self.device)
        with fast_vision(self.qa.model) if self.settings.fast_vision else stock_vision(self.qa.model):
            answer = self.qa.ask(
                str(path), QUESTION, press=press, fps=FPS, max_frames=frames, max_new_tokens=max_new_tokens
            )
        stats, seconds = answer.stats, answer.stats.seconds
        return Row(
            arch=self.arch.name, frames=frames, method=method, llm_tokens=stats.llm_input_length,
            decode_s=seconds["decode"], preprocess_s=seconds["encode"] - clock.seconds, vision_s=clock.seconds,
            select_s=seconds["select"], prefill_s=seconds["prefill"],
            first_token_s=seconds["encode"] + seconds["select"] + seconds["prefill"],
            ms_per_token=_per_token_ms(seconds["generate"], len(answer.token_ids)),
            peak_gib=max(clock.peak_bytes, stats.peak_memory_gib * 2**30) / 2**30,
            new_tokens=len(answer.token_ids), token_ids=answer.token_ids,
            **self._floors(stats.prefill_tokens_per_layer, stats.kv_length_per_layer, stats.prefill_pairs_per_layer),
        )

    def _floors(self, prefill_tokens: int | list[int], kv_lengths: list[int] | int, pairs: list[int] | None = None) -> dict:
        """The KV size and the stage floors of a row (``prefill_tokens``: per decoder layer, or one count;
        ``pairs``: the query-key pairs each layer scored, default one causal pass)."""
        model, peaks = self.qa.model, self.peaks
        flops = prefill_flops(model, prefill_tokens, pairs=pairs)
        return dict(
            kv_gib=kv_bytes(model, kv_lengths) / 2**30,
            vision_floor_s=self.clock.flops / peaks.flops,
            prefill_tflop=flops / 1e12,
            prefill_floor_s=flops / peaks.flops,
            decode_floor_ms=1000 * decode_step_bytes(model, kv_lengths) / peaks.bandwidth,
        )

    def _guarded(self, frames: int, method: str, run) -> Row:
        """Run one row; running out of GPU memory gives a row noted OOM."""
        try:
            row = run()
        except torch.cuda.OutOfMemoryError:
            row = Row(arch=self.arch.name, frames=frames, method=method, note="OOM: exceeds GPU memory")
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return row

    def rows(self, video_dir: Path) -> Iterator[Row]:
        """Write the videos, warm up on a short one, then yield every row."""
        settings, tokens = self.settings, self.settings.max_new_tokens
        height, width = self.arch.frame_size
        warmups = [WARMUP_FRAMES]
        if settings.compile_vision:  # compile for the chunk shapes of the rows, not only the short video's
            warmups.append(min(COMPILE_WARMUP_FRAMES, *settings.frames))
        videos = {n: video_dir / f"synthetic_{height}x{width}_{n}.mp4" for n in [*warmups, *settings.frames]}
        for frames, path in videos.items():
            write_synthetic_video(path, frames, height, width)
        self.stock(videos[WARMUP_FRAMES], WARMUP_FRAMES, 2)
        for frames in warmups:
            self.vidpress(videos[frames], frames, None, 2)
        try:
            for frames in settings.frames:
                path, stock = videos[frames], None
                if settings.stock_max_frames is None or frames <= settings.stock_max_frames:
                    stock = self._guarded(frames, STOCK, lambda: self.stock(path, frames, tokens))
                    yield stock
                if settings.plain_max_frames is None or frames <= settings.plain_max_frames:
                    plain = self._guarded(frames, VIDPRESS, lambda: self.vidpress(path, frames, None, tokens))
                    if stock is not None and stock.ok and plain.ok:
                        plain.same_tokens_as_stock = plain.token_ids == stock.token_ids
                    yield plain
                for label, press in settings.presses:
                    method = f"{VIDPRESS} + {label}"
                    yield self._guarded(frames, method, lambda: self.vidpress(path, frames, press, tokens, method))
        finally:
            self.clock.remove()


def run_bench(settings: Settings, progress=None) -> Result:
    """Measure the device's peaks, then every row of every architecture; ``progress(row)`` after each row."""
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peaks = measure_peaks(device, dtype)
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        video_dir = settings.video_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vidpress-bench-")))
        for name in settings.archs:
            arch = get_arch(name)
            model, processor = build_model(arch, device, dtype)
            qa = VideoQA(
                model, processor, compile_vision=settings.compile_vision, fast_decode=settings.fast_decode,
                fast_prefill=settings.fast_prefill, fast_preprocess=settings.fast_preprocess,
                stream_preprocess=settings.stream_preprocess,
            )
            bench = ArchBench(qa, arch, settings, peaks)
            for row in bench.rows(video_dir):
                rows.append(row)
                if progress is not None:
                    progress(row)
            del bench, qa, model, processor
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return Result(peaks=peaks, rows=rows, settings=settings, dtype=str(dtype).removeprefix("torch."))
