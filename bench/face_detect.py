"""The offline RetinaFace on this machine: onnxruntime vs torch, one frame per call vs a batch per call.

    python -m bench.face_detect [--frames 16] [--repeat 3] [--device cuda] [--threads N] [--json OUT]

Inputs: the first --frames frames of the shared 350x350 clip (detected at their size), the same frames scaled to a
1920x1080 pillarbox (`bench.stages.to_1080p`; the detector shrinks them 3x to 640x360) and the 1080p close-up
(`bench.stages.closeup_1080p`). Cases, each on the CPU:

  onnxruntime, frame     `RetinaFaceDetector.detect` per frame (what the CPU pipeline runs)
  onnxruntime, batch     `RetinaFaceDetector.detect_batch` of all frames in one onnxruntime run
  torch, frame           `RetinaFaceTorchDetector.detect` per frame
  torch, batch           `RetinaFaceTorchDetector.detect_batch` of all frames in one forward

and with --device (e.g. cuda, mps) the two torch cases again on that device, synchronised before the clock stops.
Each case: one untimed warm-up call, then the median of --repeat passes over all frames; ms per frame. The result
decides which runtime `latentsync.face.detector.offline_runtime` takes on the CPU. Timings are measured, never
asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_case(detector, frames: torch.Tensor, batch: bool, repeat: int, device: torch.device,
              warmup: bool = True) -> float:
    """Median seconds per frame over `repeat` passes (after one warm-up pass)."""
    arrays = [f.numpy() for f in frames]

    def one_pass():
        if batch:
            detector.detect_batch(frames)
        else:
            for a in arrays:
                detector.detect(a)
        _sync(device)

    if warmup:
        one_pass()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / len(frames)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.face_detect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16, help="frames per input (a batch of this many)")
    p.add_argument("--repeat", type=int, default=3, help="timed passes per case (the median is reported)")
    p.add_argument("--device", default=None, help="also time the torch cases on this device (cuda, cuda:1, mps)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (onnxruntime picks its own)")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 frame, 1 pass, no warm-up (figures mean nothing)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.frames, args.repeat = 1, 1
    if args.frames < 1 or args.repeat < 1:
        raise SystemExit("--frames and --repeat must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    from bench.stages import closeup_1080p, default_media, load_inputs, to_1080p
    from latentsync.face.retinaface_backend import RetinaFaceDetector
    from latentsync.face.retinaface_torch_backend import RetinaFaceTorchDetector

    video, audio = default_media()
    clip = load_inputs(video, audio, args.frames)[0]
    inputs = {"clip 350x350": clip, "1080p": to_1080p(clip),
              "1080p close-up": torch.from_numpy(closeup_1080p(clip.numpy()))}
    cpu = torch.device("cpu")
    runtimes = [("onnxruntime", "cpu", RetinaFaceDetector()), ("torch", "cpu", RetinaFaceTorchDetector("cpu"))]
    if args.device and torch.device(args.device).type != "cpu":
        runtimes.append(("torch", args.device, RetinaFaceTorchDetector(args.device)))

    print(f"# offline RetinaFace: {args.frames} frames, median of {args.repeat}"
          + (" (QUICK smoke run: figures mean nothing)" if args.quick else ""))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}", flush=True)
    rows = []
    for runtime, device, detector in runtimes:
        dev = torch.device(device)
        for batch in (False, True):
            row = {"runtime": runtime, "device": device, "call": "batch" if batch else "frame"}
            for name, frames in inputs.items():
                row[name] = time_case(detector, frames, batch, args.repeat, dev if runtime == "torch" else cpu,
                                      warmup=not args.quick)
            rows.append(row)
            print(f"  {runtime} {device} {row['call']}: "
                  + ", ".join(f"{k} {row[k] * 1e3:.1f} ms" for k in inputs), flush=True)
    print()
    print("| runtime | device | call | " + " | ".join(f"{k} (ms/frame)" for k in inputs) + " |")
    print("|---|---|---|" + "---|" * len(inputs))
    for row in rows:
        print(f"| {row['runtime']} | {row['device']} | {row['call']} | "
              + " | ".join(f"{row[k] * 1e3:.1f}" for k in inputs) + " |")
    if args.json:
        doc = {"frames": args.frames, "repeat": args.repeat, "quick": args.quick, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "rows": rows}
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
