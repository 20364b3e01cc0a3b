"""Where a decode step's time goes: torch.profiler over VideoQA's greedy decoding on a benchmark architecture.

    python scripts/profile_decode.py --arch qwen2_5_vl_7b --frames 1024 --press pivotkv --tokens 16

Builds the architecture with random weights (vidpress.bench, nothing downloaded), answers one question on a
synthetic 2 fps video, and profiles only the decoding loop (``greedy_decode``): it prints the wall ms per
token, the step's byte floor at the chip's measured copy bandwidth, and the top operators by GPU time and
by CPU time, so launch overhead (CPU time per step well above GPU time) shows next to memory-bound kernels.
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
    parser.add_argument("--tokens", type=int, default=16, help="new tokens to decode (the profile covers all of them)")
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
    decode = pipeline.greedy_decode
    seen: dict = {}

    def profiled_decode(*decode_args, **decode_kwargs):
        with profile(activities=activities) as profiler:
            start = time.perf_counter()
            tokens = decode(*decode_args, **decode_kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seen["seconds"] = time.perf_counter() - start
        seen["profiler"], seen["tokens"] = profiler, tokens
        return tokens

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "video.mp4"
        write_synthetic_video(path, args.frames, *arch.frame_size)
        qa.ask(str(path), "Warm up.", fps=FPS, max_frames=8, max_new_tokens=2)
        pipeline.greedy_decode = profiled_decode
        try:
            answer = qa.ask(str(path), "What happens?", press=presses, fps=FPS, max_frames=args.frames, max_new_tokens=args.tokens)
        finally:
            pipeline.greedy_decode = decode

    steps = max(1, len(seen["tokens"]) - 1)  # the first token comes from the prefill's logits
    floor_ms = 1000 * decode_step_bytes(model, answer.stats.kv_length_per_layer) / measure_peaks(device, dtype).bandwidth
    print(f"{args.arch}, {args.frames} frames, presses {args.press or []}, fast_decode={args.fast_decode}: "
          f"{1000 * seen['seconds'] / steps:.1f} ms per step over {steps} steps (profiler on), byte floor {floor_ms:.1f} ms, "
          f"KV entries per layer {answer.stats.kv_length_per_layer[0]}")
    averages = seen["profiler"].key_averages()
    if device.type == "cuda":
        print(averages.table(sort_by="self_cuda_time_total", row_limit=args.rows))
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
