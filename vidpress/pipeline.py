"""VideoQA: ask questions about a video with any supported VLM and any presses.

load + sample → frame presses → processor + chunked vision encoder → token presses → LLM inputs of the kept
tokens → segmented prefill with layer/kv presses → greedy decoding → Answer with statistics.
"""

from __future__ import annotations

import contextlib
import copy
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin
from transformers.cache_utils import Cache

from vidpress.adapters import EncodedVideo, LLMInputs, VideoAdapter, adapter_for
from vidpress.attention import AttentionWork, counting_work, lower_right_chunks, use_per_layer_sdpa
from vidpress.fast import decode_attention, enable_fast_vision, reserve
from vidpress.generation import greedy_decode, next_position, prefill, segment_bounds
from vidpress.presses.base import Press, PressContext, as_press_list
from vidpress.video import Video, load_video

DEFAULT_FPS = 2.0
DEFAULT_MAX_FRAMES = 256


@dataclass
class AnswerStats:
    """What one answer cost and what the presses kept."""

    frames_sampled: int = 0  # decoded from the video; visual_tokens_before is what they would cost
    frames_kept: int = 0
    kept_frames: list[int] = field(default_factory=list)
    visual_tokens_before: int = 0
    visual_tokens_after: int = 0
    llm_input_length: int = 0
    kv_length_per_layer: list[int] = field(default_factory=list)
    prefill_tokens_per_layer: list[int] = field(default_factory=list)  # query tokens each layer's prefill attention took
    prefill_pairs_per_layer: list[int] = field(default_factory=list)  # query-key pairs it scored (vidpress.attention)
    seconds: dict[str, float] = field(default_factory=dict)
    peak_memory_gib: float = 0.0
    press: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Answer:
    """The generated text, its token ids and the statistics of the run."""

    text: str
    token_ids: list[int]
    stats: AnswerStats


class VideoQA:
    """Question answering over videos with a Hugging Face VLM and optional presses.

    Parameters
    ----------
    model, processor : a supported transformers VLM (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) and its processor.
    encode_chunk_frames : frames per vision-encoder call (bounds activation memory on long videos; default:
        the adapter's, 73,728 patches a call for Qwen-VL towers, 64 frames for the others).
    fast_vision : run the Qwen-VL vision towers' window/frame attention as batched SDPA calls and
        Qwen2.5-VL's 3420-wide MLPs on zero-padded weights (vidpress.fast; the stock outputs up to rounding,
        several times faster on GPU). False keeps the stock encoder.
    compile_vision : also run the vision blocks under ``torch.compile`` (fused norms and rotations;
        vidpress.fast.vision_compile). Costs seconds of compiling at the first chunk shapes: for long videos
        and many questions. Needs ``fast_vision``.
    fast_decode : decode into KV buffers reserved after the prefill (vidpress.fast.decode: each step writes
        one entry per layer instead of copying the whole cache; same tokens), each step's state on the device
        and the steps replayed as one CUDA graph on CUDA (vidpress.fast.graph_decode). False keeps the stock
        dynamic cache, which concatenates every layer's whole cache at every step, and the stock forward per
        step (Qwen2.5-VL-7B at 2048 frames on an H200: 117 ms per token through ``generate``, 11.5 with this).
    fast_prefill : the chunks of a chunked prefill (KV presses) attend through PyTorch's
        ``causal_lower_right`` bias instead of a materialised mask with repeated KV heads (vidpress.attention:
        flash attention with grouped-query heads on CUDA; bit for bit on the CPU). PivotKV's prefill of
        Qwen2.5-VL-7B at 2048 frames on an H200: 25.5 s stock, 13.1 s with this. False keeps the stock mask.
    fast_preprocess : True runs the processor's resizing and normalisation on the model's device (the video
        processor's ``device`` argument): on an H200 the GPU resize moved a few pixels of Qwen2-VL / Qwen2.5-VL
        inputs by one grey level (0.1 % of values) and those of Qwen3-VL, LLaVA-OneVision and InternVL by up
        to 0.08, 0.20 and 0.20 after normalisation (the tiny test models' processors). None (default): only
        the streamed chunks of a video that the processor does not resize go to the GPU (no resize: the
        same values, bit for bit). False keeps everything on the CPU, as transformers does.
    stream_preprocess : run the video processor chunk by chunk in worker threads while the vision encoder
        runs on the chunks before (Qwen-VL adapters; vidpress.adapters.streamed_processing): the same pixel
        values and prompt, the processor's time hidden behind the encoder's and the whole video's pixel
        values never held at once. Where a chunk's resized size could differ from the whole video's
        (Qwen3-VL under a pixel budget that the frame count changes), the whole video is processed at once.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        *,
        encode_chunk_frames: int | None = None,
        fast_vision: bool = True,
        compile_vision: bool = False,
        fast_decode: bool = True,
        fast_prefill: bool = True,
        fast_preprocess: bool | None = None,
        stream_preprocess: bool = True,
    ):
        if compile_vision and not fast_vision:
            raise ValueError("compile_vision compiles the fast vision path: it needs fast_vision=True")
        self.adapter: VideoAdapter = adapter_for(model, processor)
        if fast_preprocess:
            self.adapter.preprocess_device = model.device
        elif fast_preprocess is None and model.device.type == "cuda":
            self.adapter.exact_preprocess_device = model.device
        use_per_layer_sdpa(model)
        if fast_vision:
            enable_fast_vision(model, "inductor" if compile_vision else None)
        self.model = model.eval()
        self.processor = processor
        self.encode_chunk_frames = encode_chunk_frames
        self.fast_decode = fast_decode
        self.fast_prefill = fast_prefill
        self.stream_preprocess = stream_preprocess

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        *,
        attn_implementation: str = "sdpa",
        fast_vision: bool = True,
        compile_vision: bool = False,
        fast_decode: bool = True,
        fast_prefill: bool = True,
        fast_preprocess: bool | None = None,
        stream_preprocess: bool = True,
        **kwargs,
    ) -> VideoQA:
        """Load a hub model name or a local folder; ``device`` defaults to CUDA when available."""
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        model = AutoModelForImageTextToText.from_pretrained(
            str(name_or_path), dtype=dtype, attn_implementation=attn_implementation, **kwargs
        ).to(device)
        processor = AutoProcessor.from_pretrained(str(name_or_path))
        return cls(
            model, processor, fast_vision=fast_vision, compile_vision=compile_vision, fast_decode=fast_decode,
            fast_prefill=fast_prefill, fast_preprocess=fast_preprocess, stream_preprocess=stream_preprocess,
        )

    # -- public API ------------------------------------------------------------------------------------
    def ask(
        self,
        video: Video | str | Path | list,
        question: str,
        *,
        press: Press | Sequence[Press] | None = None,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        max_side: int | None = None,
        max_new_tokens: int = 64,
        progress: bool = False,
    ) -> Answer:
        """Answer ``question`` about ``video`` (a path, a folder of frames, a list of images, or a Video).

        Frames: ``num_frames`` uniformly, or ``fps`` capped by ``max_frames``; with neither,
        2 fps capped at 256 frames. Decoding is greedy.
        """
        return self.ask_many(
            video, [question], press=press, num_frames=num_frames, fps=fps, max_frames=max_frames,
            max_side=max_side, max_new_tokens=max_new_tokens, progress=progress,
        )[0]

    @torch.no_grad()
    def ask_many(
        self,
        video: Video | str | Path | list,
        questions: Sequence[str],
        *,
        press: Press | Sequence[Press] | None = None,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        max_side: int | None = None,
        max_new_tokens: int = 64,
        progress: bool = False,
    ) -> list[Answer]:
        """Answer several questions about one video, encoding and prefilling the video once.

        The presses see the first question (question-conditioned presses should be run with ``ask``).
        """
        if not questions:
            raise ValueError("ask_many needs at least one question")
        presses = as_press_list(press)
        timer = _Timer()
        with timer("decode"):
            video = self._load(video, num_frames, fps, max_frames, max_side, progress)
        frames_sampled = len(video)
        for p in presses:
            kept = p.select_frames(video)
            if kept is not None:
                video = video.select(kept)

        adapter = self.adapter
        context = PressContext(adapter=adapter, question=questions[0])
        with timer("encode"), contextlib.ExitStack() as hooks:
            for p in presses:
                hooks.enter_context(p.encoder_hooks(context))
            if self.stream_preprocess and adapter.streams_pixels:
                adapter.stream_frames = self.encode_chunk_frames or adapter.default_stream_frames(video)
            try:
                prompts = [adapter.prepare(video, questions[0])]
            finally:
                adapter.stream_frames = None
            encoded = adapter.encode(prompts[0], self.encode_chunk_frames, progress=self._bar(progress, len(video), "encode"))
            for question in questions[1:]:  # after the encoder: reading a streamed prompt waits for its tokens
                prompts.append(adapter.reuse_prompt(prompts[0], questions[0], question) or adapter.prepare(video, question))
        context.encoded = encoded
        with timer("select"):  # token-stage presses (QC-Comp's scoring passes run here)
            keep = torch.ones(encoded.features.shape[:2], dtype=torch.bool)
            for p in presses:
                keep = p.select_tokens(encoded, keep, context)
            if context.renumber_positions is not None:
                positions = context.renumber_positions(encoded.inputs, keep)
                encoded = context.encoded = replace(encoded, positions=positions)
            inputs = adapter.build_inputs(encoded, keep)
        context.inputs = inputs
        kept_frames = _kept_frames(video, keep, adapter.temporal_patch_size)

        _reset_peak_memory(adapter.device)
        chunk_frames = min((p.chunk_frames for p in presses if p.chunk_frames), default=None)
        segments = segment_bounds(
            encoded, inputs, chunk_frames, adapter.temporal_patch_size, split_question=len(questions) > 1
        )
        shared = segments if len(questions) == 1 else segments[:-1]
        cache = adapter.new_cache()
        work = AttentionWork()
        with timer("prefill"), self._prefill_attention(work):
            logits = prefill(adapter, inputs, cache, shared, presses, context)

        answers = []
        for index, prompt in enumerate(prompts):
            question_inputs = inputs if index == 0 else self._with_question(encoded, prompt, keep, context)
            start = len(question_inputs)  # first token not prefilled yet
            if len(questions) > 1:
                start = int(torch.searchsorted(question_inputs.source_index, torch.tensor(encoded.question_start)))
            with timer("generate"):
                room = len(question_inputs) - start + max_new_tokens
                question_cache = self._decode_cache(cache, room, shared=index < len(prompts) - 1)
            if start < len(question_inputs):
                with timer("prefill"), self._prefill_attention(work):
                    logits = prefill(adapter, question_inputs, question_cache, [(start, len(question_inputs), False)], presses, context)
            kv_lengths = [question_cache.get_seq_length(layer) for layer in range(len(question_cache.layers))]
            backends = decode_attention(adapter.device) if self.fast_decode else contextlib.nullcontext()
            with timer("generate"), backends:
                first_position = next_position(question_inputs, context.position_shift)
                tokens = greedy_decode(adapter, logits, question_cache, first_position, max_new_tokens, on_device=self.fast_decode)
            stats = AnswerStats(
                frames_sampled=frames_sampled,
                frames_kept=len(kept_frames),
                kept_frames=kept_frames,
                visual_tokens_before=-(-frames_sampled // adapter.temporal_patch_size) * keep.shape[1],
                visual_tokens_after=int(keep.sum()),
                llm_input_length=len(question_inputs),
                kv_length_per_layer=kv_lengths,
                prefill_tokens_per_layer=list(work.tokens),
                prefill_pairs_per_layer=list(work.pairs),
                seconds=dict(timer.seconds),
                peak_memory_gib=_peak_memory_gib(adapter.device),
                press={type(p).__name__: asdict(p) for p in presses} | context.stats,
            )
            text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
            answers.append(Answer(text=text.strip(), token_ids=tokens, stats=stats))
        return answers

    # -- helpers ---------------------------------------------------------------------------------------
    @contextmanager
    def _prefill_attention(self, work: AttentionWork) -> Iterator[None]:
        """The prefill's attention: counted into ``work``; chunks over a cache through ``causal_lower_right``
        with ``fast_prefill``, else stock."""
        with counting_work(work), lower_right_chunks() if self.fast_prefill else contextlib.nullcontext():
            yield

    def _decode_cache(self, cache: Cache, room: int, *, shared: bool) -> Cache:
        """The cache to prefill a question into and decode from: ``cache`` itself, or a copy when it is
        ``shared`` with later questions; with ``fast_decode``, its layers hold ``room`` free slots."""
        if self.fast_decode:
            return reserve(cache, room, copy=shared)
        return copy.deepcopy(cache) if shared else cache

    def _load(self, video, num_frames, fps, max_frames, max_side, progress) -> Video:
        if isinstance(video, Video):
            if num_frames is not None:
                from vidpress.functional.uniform import uniform_indices
                video = video.select(uniform_indices(len(video), num_frames))
            return video
        if num_frames is None and fps is None:
            fps, max_frames = DEFAULT_FPS, max_frames or DEFAULT_MAX_FRAMES
        return load_video(
            video, num_frames=num_frames, fps=fps, max_frames=max_frames, max_side=max_side,
            progress=self._bar(progress, num_frames, "decode"),
        )

    @staticmethod
    def _bar(enabled: bool, total: int | None, description: str) -> Callable[[int], None] | None:
        """A progress callback taking the number of frames done so far (a tqdm bar), or None."""
        if not enabled:
            return None
        bar = tqdm(total=total, desc=description, unit="frame", leave=False)
        return lambda done: bar.update(done - bar.n)

    def _with_question(self, encoded: EncodedVideo, prompt, keep: torch.Tensor, context: PressContext) -> LLMInputs:
        """LLM inputs of another question on the same video (same prefix, its own question tokens)."""
        other = copy.copy(encoded)
        other.inputs = prompt
        if context.renumber_positions is None:
            other.positions = self.adapter.full_positions(prompt)[:, 0]
        else:
            other.positions = context.renumber_positions(prompt, keep)
        return self.adapter.build_inputs(other, keep)


def _kept_frames(video: Video, keep: torch.Tensor, temporal_patch: int) -> list[int]:
    """Source frame indices of the frames whose temporal unit kept at least one visual token."""
    unit_of_frame = torch.arange(len(video)) // temporal_patch
    kept = keep.any(1)[unit_of_frame]
    return [int(i) for i in torch.as_tensor(video.frame_indices)[kept]]


class _Timer:
    """Accumulates wall-clock seconds per stage, synchronising CUDA so GPU work is counted."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        _sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            _sync()
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA; the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
