"""Time one 16-frame chunk of the real-size U-Net (random weights) on this machine.

Each case runs in a fresh subprocess so that its peak memory (max RSS) is its own.

    python -m bench.unet_chunk --sizes 256 512 --dtypes fp32 bf16

Cases per (size, dtype):
  forward_cfg      one U-Net forward of the CFG batch (2 x 16 frames), the full network
  shallow_cfg      one DeepCache cached step (only the shallowest branch recomputed)
  loop20           the 20-step DDIM loop with CFG, DeepCache off  (measured, or computed with --estimate-loops)
  loop20_deepcache the same with DeepCache (interval 3: 7 full + 13 cached steps)
With --estimate-loops the loops are not run but computed from the measured per-step times
(20 x forward, 7 x forward + 13 x shallow); the table says which figures were computed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

FRAMES = 16
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
CASES = ("forward_cfg", "shallow_cfg", "loop20", "loop20_deepcache")
STEPS = 20
DEEPCACHE_INTERVAL = 3


def full_steps(steps: int = STEPS, interval: int = DEEPCACHE_INTERVAL) -> int:
    """How many of `steps` denoising steps run the whole U-Net with DeepCache every `interval` steps
    (step i is full when i % interval == 0; interval <= 1 = DeepCache off, every step full)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if interval <= 1:
        return steps
    return len(range(0, steps, interval))


def estimate_loops(forward_s: float, shallow_s: float, steps: int = STEPS,
                   interval: int = DEEPCACHE_INTERVAL) -> dict[str, float]:
    """The 20-step loop times computed from one full CFG forward and one cached (shallow) CFG step:
    loop20 = steps x forward; loop20_deepcache = full x forward + (steps - full) x shallow (7 + 13 for 20 / 3).
    Scheduler and guidance arithmetic are not counted (negligible next to a forward)."""
    full = full_steps(steps, interval)
    return {"loop20": steps * forward_s, "loop20_deepcache": full * forward_s + (steps - full) * shallow_s}


def load_results(path: str | os.PathLike) -> list[dict]:
    """The JSON lines written by `--json` (one result dict per line; blank lines ignored)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON line written by bench.unet_chunk --json ({e})") from e
    return rows


def find_result(rows: list[dict], size: int, dtype: str, case: str) -> dict | None:
    """The last (most recent) result for (size, dtype, case), or None."""
    found = None
    for r in rows:
        if r.get("size") == size and r.get("dtype") == dtype and r.get("case") == case:
            found = r
    return found


def run_case(size: int, dtype_name: str, case: str, threads: int | None) -> dict:
    import torch

    from latentsync.config import unet_config
    from latentsync.models.unet_3d import UNet3DConditionModel
    from latentsync.sampling.ddim import make_scheduler
    from latentsync.sampling.deepcache import DeepCache
    from latentsync.sampling.denoise import denoise_window

    if threads:
        torch.set_num_threads(threads)
    dtype = getattr(torch, DTYPES[dtype_name])
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    unet = UNet3DConditionModel.from_config(unet_config("stage2_512" if size == 512 else "stage2")).to(dtype).eval()
    build_s = time.perf_counter() - t0
    lat = size // 8
    x = torch.randn(1, 4, FRAMES, lat, lat, generator=gen).to(dtype)
    mask = (torch.rand(1, 1, FRAMES, lat, lat, generator=gen) > 0.4).to(dtype)
    masked = torch.randn(1, 4, FRAMES, lat, lat, generator=gen).to(dtype)
    ref = torch.randn(1, 4, FRAMES, lat, lat, generator=gen).to(dtype)
    audio = torch.randn(1, FRAMES, 50, 384, generator=gen).to(dtype)
    result = {"size": size, "dtype": dtype_name, "case": case, "frames": FRAMES, "threads": torch.get_num_threads(),
              "build_s": build_s}
    with torch.inference_mode():
        if case in ("forward_cfg", "shallow_cfg"):
            sample = torch.cat([x, mask, masked, ref], dim=1).repeat(2, 1, 1, 1, 1)
            ctx = torch.cat([torch.zeros_like(audio), audio])
            t = torch.tensor(951)
            # One untimed call of the same kind first: the first call of a process pays one-time costs
            # (kernel selection, allocator growth) that a 20-step loop pays only once.
            cache = None
            if case == "shallow_cfg":
                cache = DeepCache(interval=3)
                cache.begin_step(0)
                unet(sample, t, ctx, deep_cache=cache)  # the full step that fills the cache
                cache.begin_step(1)
                unet(sample, t, ctx, deep_cache=cache)  # warm-up cached step
                cache.begin_step(2)
            else:
                unet(sample, t, ctx)  # warm-up full step
            result["warmup_calls"] = 1
            t0 = time.perf_counter()
            out = unet(sample, t, ctx, deep_cache=cache)
            result["seconds"] = time.perf_counter() - t0
            result["finite"] = bool(torch.isfinite(out).all())
        else:
            interval = 3 if case == "loop20_deepcache" else 1
            t0 = time.perf_counter()
            out = denoise_window(unet, make_scheduler(), x, mask, masked, ref, audio, guidance_scale=1.5,
                                 num_inference_steps=20, deepcache_interval=interval)
            result["seconds"] = time.perf_counter() - t0
            result["finite"] = bool(torch.isfinite(out).all())
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.unet_chunk", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--estimate-loops", action="store_true", help="compute the 20-step loops from per-step times")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="append results as JSON lines to this file")
    p.add_argument("--one", nargs=3, metavar=("SIZE", "DTYPE", "CASE"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.one:
        print(json.dumps(run_case(int(args.one[0]), args.one[1], args.one[2], args.threads)))
        return 0
    rows = []
    for size in args.sizes:
        for dt in args.dtypes:
            measured = {}
            for case in args.cases:
                if case.startswith("loop") and args.estimate_loops:
                    continue
                cmd = [sys.executable, "-m", "bench.unet_chunk", "--one", str(size), dt, case]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy())
                r = json.loads(out.stdout.strip().splitlines()[-1])
                measured[case] = r
                rows.append(r)
                print(f"{size:4d} {dt:5s} {case:18s} {r['seconds']:9.2f} s  peak RSS {r['peak_rss_gib']:.2f} GiB",
                      flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(r) + "\n")
            if args.estimate_loops and "forward_cfg" in measured and "shallow_cfg" in measured:
                loops = estimate_loops(measured["forward_cfg"]["seconds"], measured["shallow_cfg"]["seconds"])
                for case, secs in loops.items():
                    r = {"size": size, "dtype": dt, "case": case, "frames": FRAMES, "seconds": secs, "computed": True,
                         "peak_rss_gib": measured["forward_cfg"]["peak_rss_gib"]}
                    rows.append(r)
                    print(f"{size:4d} {dt:5s} {case:18s} {secs:9.2f} s  (computed from per-step times)", flush=True)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
