"""End-to-end frames per second and per-stage busy time of the streamed pipeline, serial against overlapped.

    python -m bench.pipeline [--frames 48] [--device-seconds 0.2] [--before ../pipeline-before] [--json OUT]

Input: the shared 350x350 clip (45 frames, ping-ponged to --frames) scaled to a 1080p close-up (1300 px high, cropped
to 1080 and centred on a black 1920x1080 canvas: the head is about 1,000 px tall, the detector's box about 860 px),
encoded once to an MP4 with the shared speech covering it. The tiny random model set (made in a temporary folder unless --models is given), the
offline face detector, one sampling step, CFG 1.5, DeepCache.

Runs, each in this process through `LipSyncPipeline.run` into a `VideoWriter`:
  model        the tiny set's U-Net and VAE, serial (`overlap=False`) and overlapped
  stand-in     the U-Net and VAE replaced by a device stand-in that holds for --device-seconds per window of 16
               256 px faces (scaled with the face area; 0.2 s is about an H100 with DeepCache) and leaves the host
               free (it sleeps), serial and overlapped
For each: frames/s end to end, and the busy seconds of each stage: decode, detect, the rest of the producer (align,
audio windows), the model, paste-back, encode. The host-side limit is the frame rate of the slowest
stage (frames / its busy seconds); with the stand-in, overlapped should reach at least 80 % of it.

--before DIR: the command line end to end (`python -m latentsync ... --steps 1`, process start included) in this
checkout and in DIR (a checkout of the code before issue 13: `git worktree add --detach DIR 80d02c7`), alternated
--repeat times, on the same input and the same models (without --models: the tiny set DIR's own make_tiny writes,
which both read): frames/s of each and the ratio.

Timings are measured, never asserted (tests/test_bench_smoke.py runs `--quick`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from bench.stages import closeup_1080p, default_media, log

REPO_ROOT = Path(__file__).resolve().parents[1]
HD_SIZE = (1080, 1920)
CLOSEUP_HEIGHT = 1300  # the 350 px clip scaled so that the head is ~1,000 px tall at 1080p (detector box ~860 px)
STAND_IN_WINDOW_S = 0.2


# ---------------------------------------------------------------------------------------------------------------
# input


def make_input(folder: Path, num_frames: int, size: tuple[int, int], closeup_height: int) -> tuple[Path, Path, int]:
    """The close-up video and its speech (cut or padded to the video): (video, audio, frames)."""
    from latentsync.video_io import read_audio, read_video, write_video
    from latentsync.audio.resample import to_mono_16k

    video_in, audio_in = default_media()
    clip = read_video(video_in)
    frames = clip.frames.numpy()
    cycle = np.concatenate([frames, frames[::-1]])
    frames = cycle[np.arange(num_frames) % len(cycle)]
    video = folder / f"closeup_{size[0]}p_{num_frames}.mp4"
    write_video(video, closeup_1080p(frames, size, closeup_height), clip.fps, preset="veryfast")
    wave, rate = read_audio(audio_in)
    samples = round(num_frames / clip.fps * 16000)
    wave = to_mono_16k(wave, rate)[:samples]
    wave = torch.nn.functional.pad(wave, (0, max(0, samples - wave.shape[0])))
    audio = folder / "speech.wav"
    _write_wav(audio, wave.numpy(), 16000)
    return video, audio, num_frames


def _write_wav(path: Path, wave: np.ndarray, rate: int) -> None:
    import wave as wave_module

    pcm = (np.clip(wave, -1, 1) * 32767).astype("<i2")
    with wave_module.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


# ---------------------------------------------------------------------------------------------------------------
# stage timers and the device stand-in


class Clock:
    """Busy seconds per named stage, added up from any thread."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def timed(self, key: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0


class TimedSource:
    def __init__(self, source, clock: Clock):
        self.source, self.clock = source, clock
        self.timing, self.frame_size = source.timing, source.frame_size

    def __len__(self):
        return len(self.source)

    def read(self, start, stop):
        return self.clock.timed("decode", self.source.read, start, stop)

    def keyframe_before(self, index):
        return self.source.keyframe_before(index)

    @property
    def frames_decoded(self):
        return self.source.frames_decoded


class TimedDetector:
    def __init__(self, detector, clock: Clock):
        self.detector, self.clock = detector, clock

    def detect(self, frame):
        return self.clock.timed("detect", self.detector.detect, frame)


class TimedSink:
    def __init__(self, sink, clock: Clock):
        self.sink, self.clock = sink, clock

    def write(self, frames, starts=None):
        self.clock.timed("encode", self.sink.write, frames, starts)


class StandInUNet(torch.nn.Module):
    """Predicts zero noise at once: the device stand-in's hold is in `StandInCodec.decode` (once per window)."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # gives the pipeline a device, dtype

    def forward(self, sample, timestep, encoder_hidden_states=None, **kwargs):
        return torch.zeros_like(sample[:, :4])


class StandInCodec:
    """The VAE and U-Net of a window on a device: returns zero latents and mid-grey faces; decode holds for
    `window_seconds` per 16 faces at 256 px (scaled with the face area) without using the host (it sleeps)."""

    def __init__(self, window_seconds: float):
        self.window_seconds = float(window_seconds)

    def encode(self, images):
        n, _, r, _ = images.shape
        return torch.zeros((n, 4, r // 8, r // 8))

    def decode(self, latents):
        n, _, h, _ = latents.shape
        time.sleep(self.window_seconds * (n / 16) * (h * 8 / 256) ** 2)
        return torch.zeros((n, 3, h * 8, h * 8))


class TimedCodec:
    def __init__(self, codec, clock: Clock):
        self.codec, self.clock = codec, clock

    def encode(self, images):
        return self.clock.timed("model", self.codec.encode, images)

    def decode(self, latents):
        return self.clock.timed("model", self.codec.decode, latents)


class TimedUNet(torch.nn.Module):
    def __init__(self, unet, clock: Clock):
        super().__init__()
        self.unet, self.clock = unet, clock

    def forward(self, *args, **kwargs):
        return self.clock.timed("model", self.unet, *args, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# one in-process run


def run_once(video: Path, audio: Path, models: Path, resolution: int, overlap: bool, stand_in: float | None,
             out_dir: Path, preset: str, steps: int, parts: dict) -> dict:
    from latentsync.pipeline import LipSyncPipeline
    from latentsync.video_io import VideoFileSource, VideoWriter, read_audio

    clock = Clock()
    unet, codec = parts["unet"], parts["codec"]
    if stand_in is not None:
        unet, codec = StandInUNet(), StandInCodec(stand_in)
    pipe = LipSyncPipeline(TimedUNet(unet, clock), TimedCodec(codec, clock), parts["whisper"],
                           TimedDetector(parts["detector"], clock), parts["mask"], resolution)
    wave, rate = read_audio(audio)
    out = out_dir / f"out_{'overlap' if overlap else 'serial'}_{'standin' if stand_in is not None else 'model'}.mp4"
    t0 = time.perf_counter()
    with ExitStack() as stack:
        source = stack.enter_context(VideoFileSource(video))
        plan = pipe.plan(source.timing, wave, rate, "cut_off")
        writer = stack.enter_context(VideoWriter(out, plan.fps, source.frame_size, audio=wave, sample_rate=rate,
                                                 overwrite=True, preset=preset))
        report = pipe.run(TimedSource(source, clock), plan, wave, rate, TimedSink(writer, clock), steps=steps,
                          guidance=1.5, overlap=overlap)
        writer.close()
    wall = time.perf_counter() - t0
    n = len(plan)
    busy = report.stage_seconds
    stages = {
        "decode": clock.seconds.get("decode", 0.0),
        "detect": clock.seconds.get("detect", 0.0),
        "align + audio": busy["prepare"] - clock.seconds.get("decode", 0.0) - clock.seconds.get("detect", 0.0),
        "model": clock.seconds.get("model", 0.0),
        "paste back": busy["finish"] - clock.seconds.get("encode", 0.0),
        "encode": clock.seconds.get("encode", 0.0),
    }
    threads = {"producer": busy["prepare"], "model (caller)": busy["model"], "finisher": busy["finish"]}
    slowest = max(threads, key=threads.get)
    return {"overlap": overlap, "stand_in_window_s": stand_in, "frames": n, "seconds": wall, "fps": n / wall,
            "stage_seconds": stages, "thread_seconds": threads, "slowest": slowest,
            "limit_fps": n / threads[slowest], "decoded_frames": report.decoded_frames,
            "faces": report.coverage()["processed"]}


def load_parts(models: Path, resolution: int) -> dict:
    from latentsync.audio.whisper_encoder import WhisperAudioEncoder
    from latentsync.face.detector import create_face_detector
    from latentsync.face.mask import synthetic_mouth_mask
    from latentsync.hub import VAE_NAME, read_unet_config
    from latentsync.models.checkpoint import load_unet
    from latentsync.vae import VAECodec, load_vae

    unet = load_unet(models / "latentsync/v1.5/latentsync_unet.pt",
                     config=read_unet_config(models / "latentsync/v1.5/unet_config.yaml")).eval()
    return {"unet": unet, "codec": VAECodec(load_vae(models / "vae" / VAE_NAME)),
            "whisper": WhisperAudioEncoder.from_file(models / "latentsync/whisper/tiny.pt", device="cpu"),
            "detector": create_face_detector("offline"), "mask": synthetic_mouth_mask(resolution)}


# ---------------------------------------------------------------------------------------------------------------
# the command line, before against after


def cli_run(checkout: Path, video: Path, audio: Path, models: Path, out: Path, steps: int) -> float:
    """Wall seconds of `python -m latentsync` in `checkout` (process start included)."""
    cmd = [sys.executable, "-m", "latentsync", "--video", str(video), "--audio", str(audio), "--out", str(out),
           "--models", str(models), "--face-backend", "offline", "--steps", str(steps), "--device", "cpu",
           "--no-download", "--overwrite", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(checkout))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(checkout), env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{checkout}: python -m latentsync failed:\n{proc.stderr[-3000:]}")
    return seconds


def before_after(before: Path, video: Path, audio: Path, frames: int, models: Path, out_dir: Path, steps: int,
                 repeat: int) -> dict:
    runs: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(repeat):  # alternated, so both see the same machine load
        for name, checkout in (("before", before), ("after", REPO_ROOT)):
            runs[name].append(cli_run(checkout, video, audio, models, out_dir / f"cli_{name}.mp4", steps))
            log(f"  command line {name:6s} run {i + 1}: {runs[name][-1]:.1f} s ({frames / runs[name][-1]:.2f} fps)")
    best = {k: min(v) for k, v in runs.items()}
    return {"before_checkout": str(before), "frames": frames, "seconds": runs,
            "fps": {k: frames / v for k, v in best.items()}, "speedup": best["before"] / best["after"]}


# ---------------------------------------------------------------------------------------------------------------
# tables and main


def table(results: list[dict]) -> str:
    head = ["run", "frames/s", "limit frames/s", "of limit"] + list(results[0]["stage_seconds"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        name = (f"{'overlapped' if r['overlap'] else 'serial'}, "
                f"{'stand-in %.2f s/window' % r['stand_in_window_s'] if r['stand_in_window_s'] is not None else 'tiny models'}")
        cells = [name, f"{r['fps']:.2f}", f"{r['limit_fps']:.2f} ({r['slowest']})", f"{100 * r['fps'] / r['limit_fps']:.0f} %"]
        cells += [f"{s:.2f} s" for s in r["stage_seconds"].values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=48, help="frames of the close-up video (default 48: 3 windows)")
    p.add_argument("--height", type=int, default=HD_SIZE[0], help="frame height (width 16:9; default 1080)")
    p.add_argument("--resolution", type=int, default=256, help="face size R of the pipeline (tiny set: 256)")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--device-seconds", type=float, default=STAND_IN_WINDOW_S,
                   help="the stand-in's hold per window of 16 faces at 256 px (default 0.2, about an H100)")
    p.add_argument("--preset", default="veryfast", help="H.264 preset of the output (default veryfast)")
    p.add_argument("--models", type=Path, default=None, help="a tiny model set (default: made in a temp folder)")
    p.add_argument("--before", type=Path, default=None,
                   help="a checkout of the code before issue 13 (git worktree add --detach DIR 80d02c7): the command "
                        "line is timed there and here")
    p.add_argument("--repeat", type=int, default=2, help="command-line runs per checkout with --before")
    p.add_argument("--skip-model", action="store_true", help="only the stand-in runs")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: --frames 20 --height 360 --resolution 64 --device-seconds 0.02")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.frames, args.height, args.resolution, args.device_seconds = 20, 360, 64, 0.02
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (args.height, round(args.height * 16 / 9) // 2 * 2)
    closeup = round(CLOSEUP_HEIGHT * args.height / HD_SIZE[0])
    log(f"bench.pipeline: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}; {args.frames} frames {size[1]}x{size[0]} close-up, R={args.resolution}, "
        f"{args.steps} step(s), preset {args.preset}")
    doc: dict = {"frames": args.frames, "frame_hw": list(size), "resolution": args.resolution, "steps": args.steps,
                 "preset": args.preset, "quick": args.quick, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        tmp = Path(tmp)
        models = args.models
        if models is None:
            from latentsync.tools.make_tiny import make_tiny_model_set

            models = tmp / "models"
            make_tiny_model_set(models, resolution=256, seed=0)
        video, audio, frames = make_input(tmp, args.frames, size, closeup)
        parts = load_parts(models, args.resolution)
        plans = ([] if args.skip_model else [(None, False), (None, True)]) + [(args.device_seconds, False),
                                                                                 (args.device_seconds, True)]
        for stand_in, overlap in plans:
            r = run_once(video, audio, models, args.resolution, overlap, stand_in, tmp, args.preset, args.steps, parts)
            doc["runs"].append(r)
            log(f"  {'overlapped' if overlap else 'serial    '} {'stand-in' if stand_in is not None else 'model   '}"
                f" {r['fps']:6.2f} fps (limit {r['limit_fps']:.2f}: {r['slowest']}); decoded {r['decoded_frames']}")
        log("")
        log(table(doc["runs"]))
        stand = [r for r in doc["runs"] if r["stand_in_window_s"] is not None and r["overlap"]]
        if stand:
            log(f"\nwith the device stand-in, overlapped reaches {100 * stand[0]['fps'] / stand[0]['limit_fps']:.0f} % "
                "of the host-side limit (goal: at least 80 %)")
        if args.before is not None:
            if args.models is None and args.resolution != 256:
                raise SystemExit("--before needs the 256 px tiny set (drop --quick)")
            cli_models = models
            if args.models is None:  # older code cannot read a newer tiny set (its VAE's group count): both sides run
                from bench.memory import make_models  # on the set the older checkout writes

                cli_models = tmp / "models_before"
                make_models(args.before.resolve(), cli_models)
            doc["command_line"] = before_after(args.before.resolve(), video, audio, frames, cli_models, tmp,
                                               args.steps, args.repeat)
            cl = doc["command_line"]
            log(f"\ncommand line, {frames} frames: before {cl['fps']['before']:.2f} fps, after {cl['fps']['after']:.2f} "
                f"fps: {cl['speedup']:.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
