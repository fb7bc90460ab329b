"""Device choice and the clock: CUDA when available, else the CPU."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA if available else CPU; ``cuda`` without a GPU is an error naming the choices."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; valid here: auto, cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on ``device`` (no-op on the CPU) before a clock is read."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """Seconds from a monotonic clock, read after synchronising ``device``."""
    synchronize(device)
    return time.perf_counter()


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)`` (None: leave torch's setting)."""
    before = torch.get_num_threads()
    if count is not None:
        if count < 1:
            raise ValueError(f"torch threads must be a positive int, got {count}")
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reset_peak_memory(device: torch.device) -> None:
    """Start counting the peak memory allocated on ``device`` (CUDA; nothing elsewhere)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> float:
    """Bytes allocated on ``device`` at the peak since :func:`reset_peak_memory` (CUDA's
    ``max_memory_allocated``); NaN on a device without such a counter (the CPU)."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    return math.nan
