"""Large tensors that stay in the process's heap once freed, for the command-line processes that run on the CPU.

glibc's malloc serves every block above its mmap threshold (128 KiB, raised as blocks are freed, to at most 32 MiB)
with a fresh `mmap`, returns it with `munmap`, and gives the heap's free top back beyond its trim threshold. A U-Net forward on the CPU allocates and frees such blocks thousands of times, so the kernel
maps and zeroes the same memory again each time: measured on a 2-core machine, `python -m latentsync` on 48 frames of
1080p with the tiny model set took 4.2-5.0 million page faults and 13-18 s of system time in a 31-39 s run. With large
blocks taken from the heap and the freed heap kept (`mallopt(M_MMAP_MAX, 0)`, `M_TRIM_THRESHOLD` at its maximum):
0.6-0.7 million faults, 4.3-6.3 s of system time, 26-32 s in all; the peak resident memory rises by up to 7 % (what
is freed is kept for the next window instead of given back).

Only for our own command-line processes (`python -m latentsync`, the batch runner), on Linux with glibc, when they
run on the CPU, and never inside ComfyUI, whose process is not ours. A user's own allocator settings win: with any
`MALLOC_*` variable or an `LD_PRELOAD` (jemalloc, tcmalloc) in the environment nothing is changed.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
INT_MAX = 2**31 - 1


def keep_freed_memory_in_heap(environ: dict[str, str] | None = None) -> str:
    """Tell glibc's malloc to keep large blocks in the heap; returns what was done, one line for the log."""
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return "memory allocator: the system's (not Linux)"
    own = sorted(k for k in environ if k.startswith("MALLOC_")) + (["LD_PRELOAD"] if environ.get("LD_PRELOAD") else [])
    if own:
        return f"memory allocator: as the environment sets it ({', '.join(own)})"
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):
        return "memory allocator: the system's (not glibc)"
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_MAX, 0) != 1 or mallopt(M_TRIM_THRESHOLD, INT_MAX) != 1:
        return "memory allocator: glibc refused a setting (mallopt returned 0)"
    return "memory allocator: large blocks kept in the heap for reuse (glibc mallopt)"
