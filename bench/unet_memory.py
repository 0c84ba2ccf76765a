"""Activation memory of the U-Net: one forward and one denoising window, by resolution, frames, classifier-free
guidance batch and feed-forward chunking.

    python -m bench.unet_memory [--sizes 256 512] [--frames 16] [--dtype float16] [--json FILE]
    python -m bench.unet_memory --rss [--repo PATH ...] [--config stage2] [--size 256] [--dtype float32]

Default (seconds, any machine): the real-size U-Net is built on the meta device (no memory, no arithmetic) and run
under a dispatch mode that counts the bytes of every tensor the forward creates, freed when the tensor dies: the
peak of live activation bytes, which is what `torch.cuda.max_memory_allocated()` minus the weights reports on a GPU
(minus kernel workspaces and allocator rounding). Attention is counted as a fused kernel (flash / memory-efficient
SDPA, the GPU path: no tokens x tokens matrix). Each case is printed with `latentsync.models.activation_memory`'s
estimate (what the ComfyUI nodes tell ComfyUI's memory manager) and their ratio.

`--rss`: the old measurement, a real forward in a fresh process per `--repo` (weights zero-filled), reporting the
peak resident memory minus the weights (ru_maxrss; minutes per forward on a CPU).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

REPO_ROOT = Path(__file__).resolve().parents[1]
GIB = 1024 ** 3
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class FusedAttention(TorchFunctionMode):
    """`F.scaled_dot_product_attention` as a fused kernel allocates it: only its output."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            q, _k, v = args[:3]
            return q.new_empty(*q.shape[:-1], v.shape[-1])
        return func(*args, **(kwargs or {}))


class LiveTensorPeak(TorchDispatchMode):
    """Counts the storage bytes of the tensors created inside it while they live; `peak` is the most at once.
    Tensors that exist before (`exclude`: weights, inputs) are not counted, nor views of them."""

    def __init__(self, exclude=()):
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self._exclude = {StorageWeakRef(t.untyped_storage()).cdata for t in exclude}
        self.current = 0
        self.peak = 0

    def _sweep(self) -> None:
        for key, (ref, nbytes) in list(self._live.items()):
            if ref.expired():
                del self._live[key]
                self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._sweep()
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata not in self._live and ref.cdata not in self._exclude:
                    self._live[ref.cdata] = (ref, storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


class _ShapeOnlyDDIM:
    """What `denoise_window` needs of a scheduler, for meta tensors (diffusers indexes its CPU tables with the
    timestep): three steps of 951/601/251, the update allocating what DDIM's arithmetic allocates."""

    def set_timesteps(self, steps: int, device=None) -> None:
        self.timesteps = torch.linspace(951, 1, steps).round().long()

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        return sample

    def step(self, eps: torch.Tensor, timestep, sample: torch.Tensor, eta: float = 0.0):
        x0 = (sample - 0.5 * eps) * 2.0
        return type("Out", (), {"prev_sample": x0 * 0.5 + eps * 0.5})()


@dataclass
class Case:
    size: int
    frames: int = 16
    dtype: str = "float16"
    cfg_batch: str = "joint"  # or "sequential"; guidance 1.5 in both
    ff_chunks: int = 1
    what: str = "forward"  # "forward": one full U-Net call (batch 2, or 1 when sequential); "window": 3 DDIM
    # steps with DeepCache (interval 3: one full step and two cached ones, the cache held between them)
    config: str | None = None  # default: stage2 (256 px) / stage2_512


def meta_unet(config: str | dict, dtype: torch.dtype):
    from latentsync.config import unet_config
    from latentsync.models.unet_3d import UNet3DConditionModel

    with torch.device("meta"):
        return UNet3DConditionModel(**(unet_config(config) if isinstance(config, str) else config)).to(dtype).eval()


def traced_peak(case: Case, unet=None) -> int:
    """Peak live activation bytes of `case` (see the module's text), on the meta device."""
    from latentsync.sampling.denoise import denoise_window

    dtype = DTYPES[case.dtype]
    if unet is None:
        unet = meta_unet(case.config or ("stage2_512" if case.size > 256 else "stage2"), dtype)
    lat = case.size // 8
    f = case.frames
    cross = unet.config["cross_attention_dim"]
    meta = dict(device="meta", dtype=dtype)
    inputs: list[torch.Tensor]
    if case.what == "forward":
        batch = 1 if case.cfg_batch == "sequential" else 2
        sample = torch.zeros(batch, unet.config["in_channels"], f, lat, lat, **meta)
        audio = torch.zeros(batch, f, 50, cross, **meta)
        inputs = [sample, audio]
    elif case.what == "window":
        latents = torch.zeros(1, 4, f, lat, lat, **meta)
        mask = torch.zeros(1, 1, f, lat, lat, **meta)
        masked, ref = torch.zeros_like(latents), torch.zeros_like(latents)
        audio = torch.zeros(1, f, 50, cross, **meta)
        inputs = [latents, mask, masked, ref, audio]
    else:
        raise ValueError(f"unknown case kind {case.what!r} (forward or window)")
    tracker = LiveTensorPeak(exclude=[*unet.parameters(), *unet.buffers(), *inputs])
    with torch.no_grad(), unet.feed_forward_chunks(case.ff_chunks), FusedAttention(), tracker:
        if case.what == "forward":
            unet(inputs[0], torch.tensor(500), encoder_hidden_states=inputs[1])
        else:
            denoise_window(unet, _ShapeOnlyDDIM(), *inputs, guidance_scale=1.5, num_inference_steps=3,
                           deepcache_interval=3, cfg_batch=case.cfg_batch)
    return tracker.peak


def estimate(case: Case) -> int:
    from latentsync.models.activation_memory import activation_peak_bytes

    return activation_peak_bytes(case.size, case.frames, DTYPES[case.dtype], cfg_batch=case.cfg_batch,
                                 ff_chunks=case.ff_chunks, window=case.what == "window")


def cases(sizes, frames: int, dtype: str) -> list[Case]:
    out = []
    for what in ("forward", "window"):
        for size in sizes:
            for cfg_batch in ("joint", "sequential"):
                for chunks in (1, 4):
                    out.append(Case(size, frames, dtype, cfg_batch, chunks, what))
    return out


# ---------------------------------------------------------------------------------------------------------------
# --rss: a real forward in a fresh process

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


def measure_rss(repo: Path, config: str, dtype: str, frames: int, size: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, config, dtype, str(frames), str(size)], cwd=str(repo),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"forward in {repo} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main_rss(args) -> int:
    rows = []
    print("| code | weights resident | peak resident | peak - weights (activations) | forward time |")
    print("|---|---|---|---|---|")
    for repo in args.repo:
        r = measure_rss(repo.resolve(), args.config, args.dtype, args.frames, args.size)
        r["repo"] = str(repo)
        rows.append(r)
        print(f"| {repo} | {r['weights_rss'] / GIB:.2f} GiB | {r['peak'] / GIB:.2f} GiB | "
              f"{r['activations'] / GIB:.2f} GiB | {r['seconds']:.0f} s |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"config": args.config, "dtype": args.dtype, "frames": args.frames,
                                         "size": args.size, "runs": rows}, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.unet_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="face sizes in pixels (latent = /8)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                   help="default: float16 (traced), float32 (--rss)")
    p.add_argument("--config", default=None, help="U-Net config (default: stage2 at 256 px, stage2_512 above)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--rss", action="store_true", help="measure a real forward's resident memory instead (slow)")
    p.add_argument("--repo", type=Path, nargs="+", default=[REPO_ROOT], help="with --rss: checkouts to compare")
    p.add_argument("--size", type=int, default=256, help="with --rss: the face size")
    args = p.parse_args(argv)
    if args.rss:
        args.dtype = args.dtype or "float32"
        args.config = args.config or "stage2"
        return main_rss(args)
    dtype = args.dtype or "float16"
    rows = []
    print(f"| what | size | CFG batch | FF chunks | traced peak ({dtype}, {args.frames} frames) | estimate | "
          "estimate / traced |")
    print("|---|---|---|---|---|---|---|")
    unets = {}
    for case in cases(args.sizes, args.frames, dtype):
        case.config = args.config
        name = case.config or ("stage2_512" if case.size > 256 else "stage2")
        if name not in unets:
            unets[name] = meta_unet(name, DTYPES[dtype])
        peak = traced_peak(case, unets[name])
        est = estimate(case)
        rows.append({**asdict(case), "traced_peak": peak, "estimate": est})
        print(f"| {case.what} | {case.size} | {case.cfg_batch} | {case.ff_chunks} | {peak / GIB:.3f} GiB | "
              f"{est / GIB:.3f} GiB | {est / peak:.2f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"dtype": dtype, "frames": args.frames, "cases": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
