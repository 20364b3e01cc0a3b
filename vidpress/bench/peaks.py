"""The device's measured peaks: dense matmul FLOP/s and memory copy bandwidth, taken once per run."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Peaks:
    """Measured peaks of one device.

    Attributes
    ----------
    device : the device's name (``torch.cuda.get_device_name`` or "cpu").
    flops : matmul FLOP/s in the run's dtype.
    bandwidth : bytes/s of a large device-to-device copy (read + write).
    """

    device: str
    flops: float
    bandwidth: float


def _seconds(fn, repeats: int, device: torch.device) -> float:
    """Mean wall-clock seconds of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


def _matmul_flops(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / _seconds(lambda: torch.mm(a, b), repeats, device)


def _copy_bandwidth(device: torch.device, nbytes: int, repeats: int) -> float:
    source = torch.empty(nbytes // 4, device=device, dtype=torch.float32)
    target = torch.empty_like(source)
    return 2 * nbytes / _seconds(lambda: target.copy_(source), repeats, device)  # each byte read and written


def measure_peaks(device: torch.device, dtype: torch.dtype) -> Peaks:
    """Time a large square matmul and a large copy on ``device`` (sizes shrink on CPU to stay quick)."""
    on_gpu = device.type == "cuda"
    size, nbytes, repeats = (8192, 2**30, 20) if on_gpu else (512, 2**25, 3)
    return Peaks(
        device=torch.cuda.get_device_name(device) if on_gpu else "cpu",
        flops=_matmul_flops(device, dtype, size, repeats),
        bandwidth=_copy_bandwidth(device, nbytes, repeats),
    )
