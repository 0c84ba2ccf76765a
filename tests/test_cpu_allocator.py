"""The command line's allocator setting on the CPU (`latentsync.cpu_allocator`): a freed large block is reused from the
heap without the kernel mapping it again, a user's own allocator settings are left alone, and only the command's own
process is tuned (never a program that calls `main`). Page-fault counts, not timings: the setting's whole point is
that the kernel stops mapping and zeroing the same memory for every tensor."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from latentsync import cpu_allocator
from latentsync.__main__ import main as cli_main

PROBE = """
import os, resource, sys
from latentsync.cpu_allocator import keep_freed_memory_in_heap
print(keep_freed_memory_in_heap())
import torch
def refill():  # a 64 MiB tensor written, freed, and a new one written: the page faults of the second
    a = torch.ones(16 * 2**20); del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b = torch.ones(16 * 2**20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults = [refill() for _ in range(16)]
print(max(faults[-6:]))  # steady state: the first rounds may still carve the heap into place (a few take fresh pages)
"""


def _probe(**env: str) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    environ.update(env, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=environ, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    said, faults = proc.stdout.strip().split("\n")
    return said, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only (elsewhere a no-op, tested below)")
def test_a_freed_large_block_is_reused_without_new_page_faults():
    said, untuned = _probe(MALLOC_ARENA_MAX="4")  # the user's own setting: glibc as it comes, mmap for 64 MiB
    assert said == "memory allocator: as the environment sets it (MALLOC_ARENA_MAX)"
    # every fresh 64 MiB block faults in page by page: 16,384 faults in 4 KiB pages (measured 16,385 here), at least
    # 32 where the kernel backs it with 2 MiB transparent huge pages ("always" mode); half of that as the floor
    assert untuned >= 16, untuned
    said, tuned = _probe()
    assert said == "memory allocator: large blocks kept in the heap for reuse (glibc mallopt)"
    assert tuned <= untuned // 8, (tuned, untuned)  # every round of the last six reuses the block (measured: 0)


def test_the_users_allocator_and_other_systems_are_left_alone(monkeypatch):
    assert "LD_PRELOAD" in cpu_allocator.keep_freed_memory_in_heap({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"})
    monkeypatch.setattr(sys, "platform", "darwin")
    assert cpu_allocator.keep_freed_memory_in_heap({}) == "memory allocator: the system's (not Linux)"


def test_only_the_commands_own_process_is_tuned(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cpu_allocator, "keep_freed_memory_in_heap", lambda: calls.append(1) or "tuned")
    args = ["--video", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o.mp4"), "--models", str(tmp_path),
            "--device", "cpu", "--quiet"]
    assert cli_main(args) == 2 and calls == []  # called from a program (as ComfyUI or a test would): untouched
    assert cli_main(args, own_process=True) == 2 and calls == [1]  # `python -m latentsync`
    on_cuda = args[:-2] + ["cuda", "--quiet"]  # no GPU: refused before; with one: not a CPU run
    assert cli_main(on_cuda, own_process=True) == 2 and calls == [1]
