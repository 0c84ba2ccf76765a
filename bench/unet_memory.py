"""Peak CPU memory of one real-size U-Net forward with classifier-free guidance (2 x 16 frames), in a fresh process.

    python -m bench.unet_memory [--repo PATH ...] [--config stage2] [--dtype fp32] [--json FILE]

For each `--repo` (default: this checkout; give a worktree of an older commit to compare), a subprocess builds the
U-Net from that checkout's code and config (weights zero-filled: the values do not change the memory), records its
resident memory with the weights loaded, runs one forward under `torch.no_grad()` and reports the peak resident
memory (ru_maxrss) and the peak minus the weights, i.e. what the activations cost. The issue this bench was written
for: the up path kept every skip connection alive until the end of the forward; the official code frees each one
once it has been used.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GIB = 1024 ** 3

_CHILD = r"""
import json, resource, sys, time, torch
from latentsync.config import unet_config
from latentsync.models.unet_3d import UNet3DConditionModel
name, dtype, frames, size = sys.argv[1], getattr(torch, sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def rss():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:"))
with torch.device("meta"):
    unet = UNet3DConditionModel(**unet_config(name))
unet = unet.to_empty(device="cpu").to(dtype).eval()
with torch.no_grad():
    for p in unet.parameters():
        p.zero_()
    for b in unet.buffers():
        b.zero_()
latent = size // 8
sample = torch.zeros(2, 13, frames, latent, latent, dtype=dtype)
audio = torch.zeros(2, frames, 50, 384, dtype=dtype)
weights = rss()
base_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.time()
with torch.no_grad():
    out = unet(sample, torch.tensor(500), encoder_hidden_states=audio)
seconds = time.time() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"weights_rss": weights, "peak": peak, "activations": peak - weights, "seconds": seconds,
                  "peak_before_forward": base_peak, "shape": list(out.shape)}))
"""


def measure(repo: Path, config: str, dtype: str, frames: int, size: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, config, dtype, str(frames), str(size)], cwd=str(repo),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"forward in {repo} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.unet_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, nargs="+", default=[REPO_ROOT])
    p.add_argument("--config", default="stage2", help="stage2 (1.5, 256 px) or stage2_512 (1.6)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=256, help="face size in pixels (latents are size/8)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows = []
    print(f"| code | weights resident | peak resident | peak - weights (activations) | forward time |")
    print("|---|---|---|---|---|")
    for repo in args.repo:
        r = measure(repo.resolve(), args.config, args.dtype, args.frames, args.size)
        r["repo"] = str(repo)
        rows.append(r)
        print(f"| {repo} | {r['weights_rss'] / GIB:.2f} GiB | {r['peak'] / GIB:.2f} GiB | "
              f"{r['activations'] / GIB:.2f} GiB | {r['seconds']:.0f} s |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"config": args.config, "dtype": args.dtype, "frames": args.frames,
                                         "size": args.size, "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
