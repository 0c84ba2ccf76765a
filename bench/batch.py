"""Batch lip-sync throughput: one and two processes on jobs of uneven length, and the time a crash costs.

    python -m bench.batch [--lengths 16 24 32 40 48 56 64 72] [--steps 1] [--json FILE]

Writes the tiny random model set and 8 jobs made from the shared speaking-face clip (ping-ponged to each length,
128x128, 15 fps) with the shared ARCTIC speech cut to the same length, then runs `latentsync.batch`:

  1 process     `python -m latentsync.batch`
  2 processes   `accelerate launch --multi_gpu --num_processes 2 -m latentsync.batch` (CPU processes over gloo)
  killed        the same 2-process command, one process killed (SIGKILL) once half the jobs are finished, then the
                command run again (1 process); time lost = killed run + rerun - the 2-process run.

Per run: wall time of the command, jobs per minute, and each process's working and waiting (idle) seconds from
the run's batch_report.json. Timings depend on the machine and its load: quote them with the CPU line printed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import wave as wave_module
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDIA = Path(os.environ.get("LATENTSYNC_SHARED", REPO_ROOT.parent / "shared")) / "media"
FACE_CLIP = "clip_speaking_woman_frontal_350px_15fps.mp4"
SPEECH = "speech_cmu_arctic_a0007_16k.wav"
FPS = 15


def make_jobs(folder: Path, lengths: list[int]) -> None:
    """NAME.mp4 + NAME.wav per length (frames), from the shared clip and speech."""
    import av
    import cv2
    import numpy as np
    import torch

    from latentsync.video_io import read_audio, write_video

    with av.open(str(SHARED_MEDIA / FACE_CLIP)) as c:
        frames = [cv2.resize(f.to_ndarray(format="rgb24"), (128, 128), interpolation=cv2.INTER_AREA)
                  for f in c.decode(video=0)]
    cycle = frames + frames[::-1]
    speech, rate = read_audio(SHARED_MEDIA / SPEECH)
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(lengths):
        clip = torch.from_numpy(np.stack([cycle[k % len(cycle)] for k in range(n)]))
        write_video(folder / f"job{i}_{n}f.mp4", clip, FPS)
        samples = round(n / FPS * rate)
        wave = speech[:, :samples]
        if wave.shape[1] < samples:
            wave = torch.nn.functional.pad(wave, (0, samples - wave.shape[1]))
        pcm = (wave.clamp(-1, 1) * 32767).round().to(torch.int16).numpy()
        with wave_module.open(str(folder / f"job{i}_{n}f.wav"), "wb") as w:
            w.setnchannels(pcm.shape[0])
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(np.ascontiguousarray(pcm.T).tobytes())


def command(jobs: Path, out: Path, models: Path, steps: int, processes: int) -> list[str]:
    args = ["--jobs", str(jobs), "--out", str(out), "--models", str(models), "--face-backend", "offline",
            "--no-download", "--steps", str(steps), "--guidance", "1.0", "--length-mode", "cut_off",
            "--heartbeat", "2", "--device", "cpu"]
    if processes == 1:
        return [sys.executable, "-m", "latentsync.batch", *args]
    return [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes",
            str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
            "latentsync.batch", *args]


def run(cmd: list[str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return time.monotonic() - t0


def run_and_kill(cmd: list[str], out: Path, after_jobs: int) -> float:
    """Start `cmd`, SIGKILL the process holding a claim once `after_jobs` jobs are finished; the wall time."""
    t0 = time.monotonic()
    launch = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    entries, claims = out / ".batch" / "jobs", out / ".batch" / "claims"
    try:
        while launch.poll() is None:
            if entries.is_dir() and len(list(entries.glob("*.json"))) >= after_jobs:
                for claim in claims.glob("*.claim"):
                    try:
                        os.kill(int(json.loads(claim.read_text())["pid"]), signal.SIGKILL)
                        break
                    except (FileNotFoundError, json.JSONDecodeError, ProcessLookupError):
                        continue
                else:
                    time.sleep(0.05)
                    continue
                break
            time.sleep(0.05)
        launch.wait()
    finally:
        if launch.poll() is None:
            launch.kill()
    return time.monotonic() - t0


def processes_of(out: Path) -> list[dict]:
    return json.loads((out / "batch_report.json").read_text())["processes"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 24, 32, 40, 48, 56, 64, 72],
                   help="frames of each job (15 fps)")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from latentsync.tools.make_tiny import make_tiny_model_set

    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {len(args.lengths)} jobs of "
          f"{', '.join(map(str, args.lengths))} frames at {FPS} fps, 128x128, tiny model set, {args.steps} step(s)",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        tmp = Path(tmp)
        models = tmp / "models"
        make_tiny_model_set(models, resolution=256, seed=0)
        make_jobs(tmp / "jobs", args.lengths)
        n = len(args.lengths)
        normal = {}
        for processes in (1, 2):
            out = tmp / f"out{processes}"
            wall = run(command(tmp / "jobs", out, models, args.steps, processes))
            normal[processes] = wall
            rows.append({"run": f"{processes} process{'es' if processes > 1 else ''}", "wall_s": wall,
                         "jobs_per_min": n / wall * 60, "processes": processes_of(out)})
            print(f"{rows[-1]['run']}: {wall:.1f} s", flush=True)
        out = tmp / "killed"
        killed = run_and_kill(command(tmp / "jobs", out, models, args.steps, 2), out, n // 2)
        rerun = run(command(tmp / "jobs", out, models, args.steps, 1))
        rows.append({"run": "2 processes, one killed halfway, then rerun (1 process)", "wall_s": killed + rerun,
                     "jobs_per_min": n / (killed + rerun) * 60, "processes": processes_of(out),
                     "killed_run_s": killed, "rerun_s": rerun, "lost_s": killed + rerun - normal[2]})
    print()
    print("| run | wall (s) | jobs/min | per process: working / waiting (s) | time lost (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        procs = "; ".join(f"#{p['process']}: {p['busy_s']:.1f} / {p['idle_s']:.1f}" for p in r["processes"])
        lost = f"{r['lost_s']:.1f} (killed run {r['killed_run_s']:.1f} + rerun {r['rerun_s']:.1f})" \
            if "lost_s" in r else "-"
        print(f"| {r['run']} | {r['wall_s']:.1f} | {r['jobs_per_min']:.1f} | {procs} | {lost} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
