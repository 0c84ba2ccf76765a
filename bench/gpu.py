"""GPU benchmark, ready for the first GPU: the official U-Net against ours, then our whole pipeline at 1080p.

    python -m bench.gpu --official DIR --json gpu.json        # on a CUDA machine, one process, < 8 min on an H100
    python -m bench.gpu --tiny --device cpu --json out.json   # the tiny CPU configuration CI runs (seconds)

Needs: this repository's requirements (torch with CUDA, diffusers, einops, opencv, PyAV, onnxruntime for the
offline face detector) and, for the official side, a checkout of https://github.com/bytedance/LatentSync given by
`--official` (only its `latentsync/models/*.py` are imported, under a private package name, with its logging helper
replaced: none of its data, audio or video code is loaded). The official DeepCache rows also need the `DeepCache`
package (`pip install DeepCache==0.1.1`); without it they are reported as skipped, with the reason.

Part 1, for each dtype (fp16, bf16) and size (256 px = v1.5, 512 px = v1.6), with the same random weights in both
U-Nets (the official constructor's init, then every tensor moved by 2 % noise so no path is zero):
  cfg_forward     one forward of the guidance batch (2 x 16 frames): median, p10, p90 of 20 timed calls after
                  3 warm-up calls, CUDA events
  deepcache_step  one DeepCache cached step (interval 3, branch 0) after a full step, same statistics
  window20        a 20-step DDIM window with guidance and DeepCache (3 timed windows after one warm-up), and
                  window20_no_deepcache the same without it
  peak memory above the weights of one cfg_forward; max |difference| between the two U-Nets' outputs
  and, for ours, the activation estimate ComfyUI is given (`latentsync.models.activation_memory`) / measured peak.
Part 2: our pipeline on the shared clip scaled to 1080p (real-size random models: the U-Net, the SD-1.5 VAE,
Whisper tiny, the offline RetinaFace): frames/s per stage (busy time of each stage) and end to end, serial and,
when the pipeline has the `overlap` option, overlapped.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_PACKAGE = "_latentsync_official"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
FRAMES = 16
INTERVAL = 3  # DeepCache
# --tiny: the stage-2 layout (four levels: the official code places the up path's motion modules for exactly
# four) at width 32, one layer per block, Whisper's real audio width
TINY_UNET = dict(layers_per_block=1, cross_attention_dim=384)


# ---------------------------------------------------------------------------------------------------------------
# the official U-Net, imported from a checkout


def import_official_unet(checkout: Path):
    """The official `UNet3DConditionModel` class from `checkout/latentsync/models/unet.py`, imported as the private
    package `_latentsync_official` (so it cannot clash with ours); `latentsync.utils.util`, which pulls in the
    official data and video code, is replaced by the one helper the model files use."""
    root = Path(checkout).expanduser().resolve() / "latentsync"
    if not (root / "models" / "unet.py").is_file():
        raise FileNotFoundError(f"{checkout} is not a checkout of bytedance/LatentSync "
                                f"({root / 'models' / 'unet.py'} not found)")
    if OFFICIAL_PACKAGE not in sys.modules:
        package = types.ModuleType(OFFICIAL_PACKAGE)
        package.__path__ = [str(root)]
        utils = types.ModuleType(f"{OFFICIAL_PACKAGE}.utils")
        utils.__path__ = []
        util = types.ModuleType(f"{OFFICIAL_PACKAGE}.utils.util")
        util.zero_rank_log = lambda logger, message: None  # the official helper logs on rank 0 only
        sys.modules.update({OFFICIAL_PACKAGE: package, utils.__name__: utils, util.__name__: util})
    return importlib.import_module(f"{OFFICIAL_PACKAGE}.models.unet").UNet3DConditionModel


def build_pair(config: dict, official_cls, device: str, dtype: torch.dtype, seed: int = 0):
    """(official U-Net or None, ours) with the same weights in `dtype` on `device`, eval mode."""
    from latentsync.models import UNet3DConditionModel
    from latentsync.models.checkpoint import load_state_dict_into_unet

    generator = torch.Generator().manual_seed(seed)
    official = None
    if official_cls is not None:
        torch.manual_seed(seed)  # the official init draws from the global generator
        official = official_cls(**config)
        state = official.state_dict()
    else:
        with torch.device("meta"):
            state = UNet3DConditionModel(**config).state_dict()
        state = {k: torch.randn(v.shape, generator=generator) / max(1, v[0].numel()) ** 0.5 if v.dim() > 1
                 else torch.zeros(v.shape) for k, v in state.items() if not k.endswith(".pe")}
    def moved(tensor: torch.Tensor) -> torch.Tensor:
        scale = 0.02 * (tensor.float().std().item() if tensor.numel() > 1 else 1.0) or 0.02
        return tensor.float() + scale * torch.randn(tensor.shape, generator=generator)

    state = {k: v if k.endswith(".pe") or not v.is_floating_point() else moved(v) for k, v in state.items()}
    if official is not None:
        torch.nn.Module.load_state_dict(official, state, strict=True)  # the official override is never strict
        official = official.to(device=device, dtype=dtype).eval().requires_grad_(False)
    with torch.device("meta"):
        ours = UNet3DConditionModel(**config)
    load_state_dict_into_unet(ours, {k: v.clone() for k, v in state.items()}, device=device, dtype=dtype)
    return official, ours.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------
# timing


class Timer:
    """Seconds of one call: CUDA events on a GPU, perf_counter on a CPU."""

    def __init__(self, device: str):
        self.cuda = torch.device(device).type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def summary(seconds: list[float]) -> dict:
    ordered = sorted(seconds)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]

    return {"median_s": statistics.median(ordered), "p10_s": pct(0.10), "p90_s": pct(0.90), "calls": len(ordered)}


def repeat(timer: Timer, fn: Callable[[], object], calls: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    return summary([timer(fn) for _ in range(calls)])


def peak_above(device: str, fn: Callable[[], object]) -> int | None:
    """Bytes allocated at the peak of `fn` above what was allocated before (CUDA only)."""
    if torch.device(device).type != "cuda":
        return None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


# ---------------------------------------------------------------------------------------------------------------
# part 1: the U-Nets


def official_deepcache(official, scheduler):
    """DeepCache 0.1.1's helper around the official U-Net as `scripts/inference.py` uses it, or (None, reason)."""
    try:
        from DeepCache import DeepCacheSDHelper
    except ImportError:
        return None, "DeepCache is not installed (pip install DeepCache==0.1.1)"
    helper = DeepCacheSDHelper(pipe=types.SimpleNamespace(unet=official, scheduler=scheduler))
    helper.set_params(cache_interval=INTERVAL, cache_branch_id=0)
    return helper, None


def unet_inputs(config: dict, size: int, frames: int, device: str, dtype: torch.dtype, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    lat = size // 8
    x = torch.randn(1, 4, frames, lat, lat, generator=g)
    mask = (torch.rand(1, 1, frames, lat, lat, generator=g) > 0.4).float()
    masked, ref = torch.randn(1, 4, frames, lat, lat, generator=g), torch.randn(1, 4, frames, lat, lat, generator=g)
    audio = torch.randn(1, frames, 50, config["cross_attention_dim"], generator=g)
    cast = dict(device=device, dtype=dtype)
    return [t.to(**cast) for t in (x, mask, masked, ref, audio)]


def official_window(official, helper, scheduler, x, mask, masked, ref, audio, steps: int, guidance: float = 1.5):
    """The official loop (golden_loop.pt's recipe) around the official U-Net, with its DeepCache helper if given."""
    if helper is not None:
        helper.enable()
    try:
        scheduler.set_timesteps(steps, device=x.device)
        cond = torch.cat([torch.zeros_like(audio), audio]).flatten(0, 1)
        extra = [torch.cat([t, t]) for t in (mask, masked, ref)]
        for t in scheduler.timesteps:
            unet_input = torch.cat([torch.cat([x, x]), *extra], dim=1)
            eps = official(unet_input, t, encoder_hidden_states=cond).sample
            uncond, audio_eps = eps.chunk(2)
            x = scheduler.step(uncond + guidance * (audio_eps - uncond), t, x, eta=0.0).prev_sample
    finally:
        if helper is not None:
            helper.disable()
    return x


def bench_unets(config: dict, official_cls, size: int, dtype_name: str, device: str, frames: int, calls: int,
                warmup: int, steps: int, windows: int) -> dict:
    from latentsync.models.activation_memory import activation_peak_bytes
    from latentsync.sampling import DeepCache, denoise_window, make_scheduler

    dtype = DTYPES[dtype_name]
    official, ours = build_pair(config, official_cls, device, dtype)
    x, mask, masked, ref, audio = unet_inputs(config, size, frames, device, dtype)
    sample = torch.cat([torch.cat([x, x]), *(torch.cat([t, t]) for t in (mask, masked, ref))], dim=1)
    ctx = torch.cat([torch.zeros_like(audio), audio])
    t = torch.tensor(951, device=device)
    timer = Timer(device)
    row: dict = {"size": size, "dtype": dtype_name, "frames": frames, "device": device}
    models = {"ours": ours} if official is None else {"official": official, "ours": ours}
    outputs = {}
    with torch.inference_mode():
        for name, unet in models.items():
            def forward(unet=unet, name=name):
                out = unet(sample, t, encoder_hidden_states=ctx if name == "ours" else ctx.flatten(0, 1))
                return out.sample if name == "official" else out

            outputs[name] = forward().float()
            entry = {"cfg_forward": repeat(timer, forward, calls, warmup), "peak_above_weights": peak_above(
                device, forward)}
            if name == "ours":
                cache = DeepCache(INTERVAL)
                cache.begin_step(0)
                ours(sample, t, ctx, deep_cache=cache)  # the full step that fills the cache

                def cached_step():
                    cache.begin_step(1)  # not a full step: only the shallowest branch runs
                    return ours(sample, t, ctx, deep_cache=cache)

                entry["deepcache_step"] = repeat(timer, cached_step, calls, warmup)
                for key, interval in (("window20", INTERVAL), ("window20_no_deepcache", 1)):
                    entry[key] = summary([timer(lambda i=interval: denoise_window(
                        ours, make_scheduler(), x, mask, masked, ref, audio, num_inference_steps=steps,
                        deepcache_interval=i)) for _ in range(windows + 1)][1:])
                estimate = activation_peak_bytes(size, frames, dtype, window=False)
                entry["activation_estimate"] = estimate
                if entry["peak_above_weights"]:
                    entry["estimate_over_measured"] = estimate / entry["peak_above_weights"]
            else:
                scheduler = make_scheduler()
                helper, reason = official_deepcache(official, scheduler)
                entry["window20_no_deepcache"] = summary([timer(lambda: official_window(
                    official, None, scheduler, x, mask, masked, ref, audio, steps)) for _ in range(windows + 1)][1:])
                if helper is None:
                    entry["deepcache_step"] = entry["window20"] = {"skipped": reason}
                else:
                    entry["window20"] = summary([timer(lambda: official_window(
                        official, helper, scheduler, x, mask, masked, ref, audio, steps))
                        for _ in range(windows + 1)][1:])
                    entry["deepcache_step"] = {"skipped": "measured inside window20 only (the helper keys its "
                                                          "cache on the scheduler's step)"}
            row[name] = entry
    if "official" in outputs:
        row["max_abs_diff"] = (outputs["official"] - outputs["ours"]).abs().max().item()
        row["output_abs_max"] = outputs["official"].abs().max().item()
        if isinstance(row["official"]["cfg_forward"], dict) and "median_s" in row["official"]["cfg_forward"]:
            row["speed_ratio_ours_over_official"] = (row["official"]["cfg_forward"]["median_s"]
                                                     / row["ours"]["cfg_forward"]["median_s"])
    del official, ours
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return row


# ---------------------------------------------------------------------------------------------------------------
# part 2: the whole pipeline


class StageClock:
    """Busy seconds per stage, from wrappers around the pipeline's parts (each stage runs in one thread at a time,
    so the sums are its busy time whether the pipeline overlaps stages or not). On a GPU the model stages are
    synchronised before their clock stops."""

    def __init__(self, device: str):
        self.seconds: dict[str, float] = {}
        self.cuda = torch.device(device).type == "cuda"

    def wrap(self, stage: str, fn: Callable, synchronize: bool = False) -> Callable:
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if synchronize and self.cuda:
                    torch.cuda.synchronize()
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0
        return timed


class _Timed:
    """A stand-in for one of the pipeline's parts: the listed methods (and calls, with `call_stage`) are timed;
    everything else passes through to the part."""

    def __init__(self, inner, clock: StageClock, methods: dict[str, str], call_stage: str | None = None):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_call", clock.wrap(call_stage, inner, True) if call_stage else inner)
        for method, stage in methods.items():
            object.__setattr__(self, method, clock.wrap(stage, getattr(inner, method), True))

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __setattr__(self, name, value):
        setattr(self._inner, name, value)

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)


def pipeline_has_overlap() -> bool:
    """Hook for the overlapped pipeline: measured when `LipSyncOptions` has the `overlap` switch."""
    from latentsync.options import LipSyncOptions

    return "overlap" in LipSyncOptions.names()


def build_pipeline(size: int, device: str, dtype: torch.dtype, tiny: bool, folder: Path):
    from bench.stages import build_vae, build_whisper
    from latentsync.config import unet_config
    from latentsync.face.detector import create_face_detector
    from latentsync.face.mask import load_mask
    from latentsync.models.tiny import random_tiny_unet
    from latentsync.pipeline import LipSyncPipeline
    from latentsync.tools.make_tiny import write_mask
    from latentsync.vae import VAECodec

    if tiny:
        unet = random_tiny_unet(torch.Generator().manual_seed(0), **TINY_UNET).to(device, dtype)
    else:
        unet = build_pair(unet_config("stage2_512" if size > 256 else "stage2"), None, device, dtype)[1]
    vae = build_vae(dtype, quick=tiny).to(device)
    whisper = build_whisper(folder, quick=False)
    whisper.encoder.to(device)
    whisper.device = torch.device(device)
    mask = load_mask(write_mask(folder / "mask.png"), size)
    detector = create_face_detector("offline", device=device)
    return LipSyncPipeline(unet, VAECodec(vae), whisper, detector, mask, size, device=device)


def bench_pipeline(size: int, device: str, dtype_name: str, tiny: bool, frames: int, steps: int) -> dict:
    from bench.stages import default_media, load_inputs, to_1080p
    from latentsync.options import LipSyncOptions
    from latentsync.pipeline import TensorFrameSource
    from latentsync.video_io import VideoWriter

    video, audio = default_media()
    clip, fps, wave, rate = load_inputs(video, audio, frames)
    clip = to_1080p(clip)
    results = {"size": size, "frames": frames, "frame_size": list(clip.shape[1:3]), "steps": steps,
               "dtype": dtype_name, "modes": {}}
    modes = {"serial": False, "overlapped": True} if pipeline_has_overlap() else {"serial": None}
    if not pipeline_has_overlap():
        results["overlapped"] = "not measured: this pipeline has no overlap option yet"
    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_pipeline(size, device, DTYPES[dtype_name], tiny, Path(tmp))
        for mode, overlap in modes.items():
            clock = StageClock(device)
            pipe_unet, pipe_vae, pipe_det = pipe.unet, pipe.vae_codec, pipe.face_detector
            pipe.unet = _Timed(pipe_unet, clock, {}, call_stage="unet")
            pipe.vae_codec = _Timed(pipe_vae, clock, {"encode": "vae_encode", "decode": "vae_decode"})
            pipe.face_detector = _Timed(pipe_det, clock, {m: "detect" for m in ("detect", "detect_batch")
                                                          if hasattr(pipe_det, m)})
            source = TensorFrameSource(clip, fps=fps)
            plan = pipe.plan(source.timing, wave, rate, "cut_off")
            options = LipSyncOptions(steps=steps, length_mode="cut_off")
            kwargs = options.pipeline_kwargs()
            if overlap is not None:
                kwargs["overlap"] = overlap
            out = Path(tmp) / f"{mode}.mp4"
            t0 = time.perf_counter()
            with VideoWriter(out, plan.fps, source.frame_size, audio=wave, sample_rate=rate,
                             audio_samples=plan.audio_samples(rate)) as writer:
                writer.write = clock.wrap("encode", writer.write)
                pipe.run(source, plan, wave, rate, writer, **kwargs)
                writer.close()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            total = time.perf_counter() - t0
            pipe.unet, pipe.vae_codec, pipe.face_detector = pipe_unet, pipe_vae, pipe_det
            stages = {stage: {"busy_s": s, "frames_per_s": (len(plan) / s) if s > 0 else None}
                      for stage, s in clock.seconds.items()}
            results["modes"][mode] = {"seconds": total, "frames_per_s": len(plan) / total, "stages": stages}
    return results


# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", type=Path, default=None, help="checkout of bytedance/LatentSync (omit: ours only)")
    p.add_argument("--json", type=Path, required=True, help="write every figure here")
    p.add_argument("--device", default=None, help="default: cuda")
    p.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"], choices=sorted(DTYPES))
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--calls", type=int, default=20, help="timed calls per figure")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="DDIM steps of the timed window")
    p.add_argument("--windows", type=int, default=3, help="timed windows (after one warm-up)")
    p.add_argument("--pipeline-frames", type=int, default=64, help="frames of the 1080p pipeline run")
    p.add_argument("--pipeline-steps", type=int, default=20)
    p.add_argument("--no-pipeline", action="store_true", help="part 1 only")
    p.add_argument("--tiny", action="store_true",
                   help="tiny models, 2 calls, 4 frames at 32 px, 2 steps, 8 pipeline frames: the configuration CI "
                        "runs on a CPU")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = args.device or "cuda"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU (run with --device cpu --tiny for the CI configuration)", file=sys.stderr)
        return 2
    from latentsync.config import unet_config
    from latentsync.models.tiny import tiny_unet_config

    frames = FRAMES
    if args.tiny:
        args.calls, args.warmup, args.steps, args.windows = 2, 1, 2, 1
        args.pipeline_frames, args.pipeline_steps, frames = 8, 1, 4
    official_cls = import_official_unet(args.official) if args.official else None
    t0 = time.perf_counter()
    report = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "official": str(args.official) if args.official else None,
              "tiny": args.tiny, "unet": [], "pipeline": []}
    for dtype_name in args.dtypes:
        for size in args.sizes:
            config = (tiny_unet_config(**TINY_UNET) if args.tiny
                      else unet_config("stage2_512" if size > 256 else "stage2"))
            row = bench_unets(config, official_cls, size if not args.tiny else 32, dtype_name, device, frames,
                              args.calls, args.warmup, args.steps, args.windows)
            row["size"] = size
            report["unet"].append(row)
            ours = row["ours"]["cfg_forward"]
            line = f"{size} px {dtype_name}: ours {ours['median_s'] * 1000:.1f} ms"
            if "official" in row:
                line += (f", official {row['official']['cfg_forward']['median_s'] * 1000:.1f} ms, max |diff| "
                         f"{row['max_abs_diff']:.3g}")
            print(line, flush=True)
    if not args.no_pipeline:
        for size in args.sizes:
            result = bench_pipeline(size, device, args.dtypes[0], args.tiny, args.pipeline_frames,
                                    args.pipeline_steps)
            report["pipeline"].append(result)
            for mode, r in result["modes"].items():
                print(f"pipeline {size} px {mode}: {r['frames_per_s']:.2f} frames/s end to end", flush=True)
    report["seconds"] = time.perf_counter() - t0
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
