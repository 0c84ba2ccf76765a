"""Choices that hurt: a dtype the device runs badly, and how long a window takes on a CPU.

bf16 on a CPU is fast only with bf16 dot-product instructions (x86: AVX-512-BF16 or AMX; Arm: the BF16
extension). Without them PyTorch emulates it: measured on an AVX2-only AMD EPYC, one U-Net call in bf16 took about
30 times as long as in fp32. fp16 on a CPU is emulated everywhere. Both are replaced by fp32, with a warning.

The per-window estimate comes from the figures measured by `bench/` (README, "Measured figures"): 2 cores of an
Intel CPU with AVX-512-BF16, torch 2.14.1, 16 frames, real-size models.
"""
from __future__ import annotations

import math
import platform
from collections.abc import Callable

import torch

# seconds on 2 cores: one U-Net forward with CFG (2 x 16 frames), one DeepCache-cached step, VAE encode (masked +
# reference face) and decode per frame -- bench.unet_chunk and bench.stages
MEASURED = {
    (256, torch.float32): dict(forward=51.2, cached=5.4, vae_encode=3.15, vae_decode=3.53),
    (256, torch.bfloat16): dict(forward=26.5, cached=2.4, vae_encode=1.59, vae_decode=1.71),
    (512, torch.float32): dict(forward=260.3, cached=24.6, vae_encode=13.2, vae_decode=14.0),
    (512, torch.bfloat16): dict(forward=143.8, cached=15.0, vae_encode=6.8, vae_decode=7.3),
}
MEASURED_THREADS = 2
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 /proc/cpuinfo flags
_ARM_BF16_FLAGS = ("bf16",)  # aarch64 /proc/cpuinfo "Features"


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_fast_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU multiplies bf16 natively (AVX-512-BF16 / AMX on x86, BF16 on Arm); Apple silicon too."""
    flags = cpu_flags() if flags is None else flags
    if any(f in flags for f in _BF16_FLAGS):
        return True
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return platform.system() == "Darwin" or any(f in flags for f in _ARM_BF16_FLAGS)
    return False


def safe_dtype(dtype: torch.dtype, device: torch.device | str, log: Callable[[str], None] | None = None,
               fast_bf16: bool | None = None) -> torch.dtype:
    """`dtype`, unless the device runs it badly: bf16 on a CPU without native bf16, fp16 on any CPU -> fp32; bf16 on
    Apple's MPS before macOS 14 (which refuses it) -> fp16 (with a warning through `log`)."""
    device = torch.device(device)
    if device.type == "mps" and dtype == torch.bfloat16 and not torch.backends.mps.is_macos_or_newer(14, 0):
        if log is not None:
            log("WARNING: bfloat16 requested on MPS, using float16 instead: MPS supports bf16 from macOS 14 on")
        return torch.float16
    if device.type != "cpu":
        return dtype
    reason = None
    if dtype == torch.float16:
        reason = "fp16 is emulated on CPUs (very slow, and some operations are missing)"
    elif dtype == torch.bfloat16 and not (cpu_has_fast_bf16() if fast_bf16 is None else fast_bf16):
        reason = ("this CPU has no native bf16 (AVX-512-BF16 / AMX); emulated bf16 ran the U-Net about 30x slower "
                  "than fp32 in our measurements")
    if reason is None:
        return dtype
    if log is not None:
        log(f"WARNING: {str(dtype).replace('torch.', '')} requested on the CPU, using float32 instead: {reason}")
    return torch.float32


def window_seconds(resolution: int, dtype: torch.dtype = torch.float32, steps: int = 20, deepcache_interval: int = 3,
                   guidance: float = 1.5, threads: int | None = None, frames: int = 16) -> float:
    """Estimated CPU seconds for one window of `frames` frames (all stages), scaled from the measured figures to
    `threads` (default: torch's thread count) assuming linear scaling."""
    key = (512 if resolution > 256 else 256, torch.bfloat16 if dtype == torch.bfloat16 else torch.float32)
    m = MEASURED[key]
    interval = max(1, int(deepcache_interval))
    full = steps if interval <= 1 else math.ceil(steps / interval)
    unet = full * m["forward"] + (steps - full) * m["cached"]
    if guidance <= 1.0:
        unet /= 2  # no classifier-free guidance: one batch instead of two
    vae = frames * (m["vae_encode"] + m["vae_decode"])
    threads = threads or torch.get_num_threads()
    return (unet * frames / 16 + vae) * MEASURED_THREADS / max(1, threads)


def describe_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cpu_time_warning(resolution: int, dtype: torch.dtype, steps: int, deepcache_interval: int, guidance: float,
                     windows: int, threads: int | None = None) -> str:
    """The message printed before a CPU run starts: how long one window and the whole video will take."""
    per = window_seconds(resolution, dtype, steps, deepcache_interval, guidance, threads)
    version = "1.6 (512 px)" if resolution > 256 else "1.5 (256 px)"
    return (f"LatentSync {version} on the CPU: one 16-frame window takes about {describe_duration(per)} "
            f"({steps} steps, {torch.get_num_threads() if threads is None else threads} threads, "
            f"{str(dtype).replace('torch.', '')}; from the figures measured on 2 cores), so this video "
            f"({windows} windows) about {describe_duration(per * windows)}"
            + (". Version 1.5 (256 px) is about 5x faster on a CPU." if resolution > 256 else "."))
