"""Which torch device to run on: an NVIDIA GPU (`cuda`), Apple silicon's GPU (`mps`) or the CPU."""
from __future__ import annotations

import torch

DEVICES = ("cpu", "cuda", "mps")


def device_available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return torch.backends.mps.is_available()
    return kind == "cpu"


def default_device() -> str:
    """cuda when PyTorch sees an NVIDIA GPU, else mps on Apple silicon, else cpu."""
    return next(kind for kind in ("cuda", "mps", "cpu") if device_available(kind))


def unavailable_reason(kind: str) -> str | None:
    """None when `kind` can be used; else why not, for the user."""
    if kind not in DEVICES:
        return f"unknown device {kind!r}; choose one of {', '.join(DEVICES)}"
    if device_available(kind):
        return None
    if kind == "cuda":
        return "--device cuda, but PyTorch sees no CUDA GPU"
    return "--device mps, but PyTorch sees no MPS device (Apple silicon with macOS 12.3 or newer and an arm64 Python)"
