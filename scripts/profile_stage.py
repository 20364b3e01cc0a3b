"""Where a stage's time goes: torch.profiler over VideoQA's vision encoder, LLM prefill or decoding on a benchmark architecture.

    python scripts/profile_stage.py --arch qwen2_5_vl_7b --frames 1024 --press pivotkv --stage decode --tokens 16
    python scripts/profile_stage.py --arch qwen2_5_vl_7b --frames 1024 --press pivotkv --stage prefill
    python scripts/profile_stage.py --arch qwen2_5_vl_7b --frames 1024 --stage encode

Builds the architecture with random weights (vidpress.bench, nothing downloaded), answers one question on a
synthetic 2 fps video, and profiles only the chosen stage: ``prefill`` (the LLM prefill, chunked and pruned by
the presses), ``decode`` (the greedy loop; with the step's byte floor at the chip's measured copy
bandwidth) or ``encode`` (the adapter's chunked vision encoder). It prints the stage's wall time and the top operators by GPU time and by CPU time, so launch
overhead (CPU time well above GPU time) shows next to the kernels that bound the stage.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import vidpress.pipeline as pipeline
from vidpress.bench.archs import build_model, get_arch
from vidpress.bench.floors import decode_step_bytes
from vidpress.bench.peaks import measure_peaks
from vidpress.bench.video import FPS, write_synthetic_video
from vidpress.cli_options import build_presses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="qwen2_5_vl_7b")
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--press", action="append", help="press name (repeatable); none: no press")
    parser.add_argument("--press-arg", action="append", help="k=v or NAME.k=v, as on the vidpress command line")
    parser.add_argument("--stage", choices=["encode", "prefill", "decode"], default="decode")
    parser.add_argument("--tokens", type=int, default=16, help="new tokens to decode (a decode profile covers all of them)")
    parser.add_argument("--fast-decode", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--rows", type=int, default=20, help="operators listed per table")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    arch = get_arch(args.arch)
    model, processor = build_model(arch, device, dtype)
    qa = pipeline.VideoQA(model, processor, fast_decode=args.fast_decode)
    presses = build_presses(args.press, args.press_arg)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    owner, stage_name = {"encode": (qa.adapter, "encode"), "prefill": (pipeline, "prefill"), "decode": (pipeline, "greedy_decode")}[args.stage]
    stage = getattr(owner, stage_name)
    seen: dict = {}

    def profiled(*stage_args, **stage_kwargs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        with profile(activities=activities) as profiler:
            start = time.perf_counter()
            result = stage(*stage_args, **stage_kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seen["seconds"] = time.perf_counter() - start
        seen["profiler"] = profiler
        return result

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "video.mp4"
        write_synthetic_video(path, args.frames, *arch.frame_size)
        qa.ask(str(path), "Warm up.", fps=FPS, max_frames=8, max_new_tokens=2)
        setattr(owner, stage_name, profiled)
        try:
            answer = qa.ask(str(path), "What happens?", press=presses, fps=FPS, max_frames=args.frames, max_new_tokens=args.tokens)
        finally:
            setattr(owner, stage_name, stage)

    header = f"{args.arch}, {args.frames} frames, presses {args.press or []}, {answer.stats.llm_input_length} LLM tokens"
    if args.stage != "decode":
        print(f"{header}: {args.stage} {seen['seconds']:.2f} s (profiler on), KV entries per layer {answer.stats.kv_length_per_layer[0]}")
    else:
        steps = max(1, len(answer.token_ids) - 1)  # the first token comes from the prefill's logits
        floor_ms = 1000 * decode_step_bytes(model, answer.stats.kv_length_per_layer) / measure_peaks(device, dtype).bandwidth
        print(f"{header}, fast_decode={args.fast_decode}: {1000 * seen['seconds'] / steps:.1f} ms per step over {steps} steps "
              f"(profiler on), byte floor {floor_ms:.1f} ms, KV entries per layer {answer.stats.kv_length_per_layer[0]}")
    averages = seen["profiler"].key_averages()
    if device.type == "cuda":
        print(averages.table(sort_by="self_cuda_time_total", row_limit=args.rows))
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
