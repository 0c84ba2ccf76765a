"""python -m latentsync.eval sync VIDEO [--audio FILE] [--models DIR] [--face-backend insightface|offline]
[--no-download] [--json] [--plot FILE.png]  — SyncNet-v2 lip-sync score of a video (LSE-C, LSE-D, AV offset).

Exit status: 0 scored; 2 the input cannot be scored (unreadable file, no audio, no face, shorter than the 5-frame
SyncNet window: the message names the file and the reason) or the SyncNet-v2 weights cannot be had.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..devices import DEVICES, default_device, unavailable_reason
from ..process_exit import exit_with

DEFAULT_MODELS = Path("models")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m latentsync.eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="command", required=True)
    s = commands.add_parser("sync", help="lip-sync score of a video (SyncNet-v2 confidence, distance, offset)",
                            description="SyncNet-v2 lip-sync score: confidence (LSE-C, higher = better), distance "
                                        "(LSE-D, lower = better) and the audio-video offset, as the official "
                                        "LatentSync evaluation computes them.")
    s.add_argument("video", type=Path, help="the video (any format and frame rate PyAV reads)")
    s.add_argument("--audio", type=Path, default=None,
                   help="the speech to score against (default: the video's own audio track)")
    s.add_argument("--models", type=Path, default=DEFAULT_MODELS,
                   help="models root laid out like ComfyUI's models/ folder; SyncNet-v2 is "
                        "latentsync/auxiliary/syncnet_v2.model there (default: ./models)")
    s.add_argument("--face-backend", choices=["insightface", "offline"], default="insightface")
    s.add_argument("--no-download", action="store_true", help="only use files already in --models")
    s.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    s.add_argument("--plot", type=Path, default=None, help="write a PNG of the offset curve and per-frame confidence")
    s.add_argument("--device", choices=list(DEVICES), default=None,
                   help="default: cuda when available, else mps (Apple silicon) when available, else cpu")
    s.add_argument("--batch-size", type=int, default=20, help="5-frame windows per SyncNet call (default 20)")
    s.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    return p


class _Log:
    def __init__(self, quiet: bool):
        self.quiet, self.t0, self.last = quiet, time.monotonic(), -1

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[latentsync.eval {time.monotonic() - self.t0:6.1f}s] {message}", file=sys.stderr, flush=True)

    def progress(self, done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if pct // 25 != self.last // 25:
            self.last = pct
            self(f"scoring {pct:3d}% ({done}/{total} frames at 25 fps)")


def _check_plot_path(plot: Path, inputs: list[Path]) -> None:
    if not plot.parent.is_dir():
        raise FileNotFoundError(f"--plot: folder does not exist: {plot.parent}")
    if any(plot.resolve() == i.resolve() for i in inputs):
        raise ValueError(f"--plot: refusing to overwrite the input file {plot}")


def run_sync(args) -> int:
    import torch

    from ..face.detector import create_face_detector
    from ..hub import ModelNotFoundError, is_tiny_set, locate_insightface, locate_syncnet_v2
    from .files import score_file
    from .score import SyncScoreError
    from .syncnet_v2 import SyncNetLoadError, load_syncnet_v2

    log = _Log(args.quiet)
    inputs = [args.video] + ([args.audio] if args.audio is not None else [])
    for path in inputs:
        if not path.is_file():
            print(f"error: {path}: {'no such file' if not path.exists() else 'not a file'}", file=sys.stderr)
            return 2
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        if args.plot is not None:
            _check_plot_path(args.plot, inputs)
        device = args.device or default_device()
        if (reason := unavailable_reason(device)) is not None:
            print(f"error: {reason}", file=sys.stderr)
            return 2
        weights = locate_syncnet_v2(args.models, download=not args.no_download)
        if is_tiny_set(args.models):
            log("NOTE: the models folder is a TINY RANDOM model set: the figures come from random weights")
        net = load_syncnet_v2(weights, device=device)
        models_dir = locate_insightface(args.models, download=not args.no_download) \
            if args.face_backend == "insightface" else None
        detector = create_face_detector(args.face_backend, models_dir=models_dir, device=device)
    except (ModelNotFoundError, SyncNetLoadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    log(f"scoring {args.video}" + (f" against {args.audio}" if args.audio else "") + f" on {device}")
    try:
        score = score_file(args.video, args.audio, syncnet=net, detector=detector, device=device,
                           batch_size=args.batch_size, progress=log.progress)
    except SyncScoreError as e:
        name = args.audio if e.reason == "no_audio" and args.audio is not None else args.video
        print(f"error: {name}: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:  # unreadable media (the message names the file)
        print(f"error: {args.video}: cannot read it: {e}", file=sys.stderr)
        return 2

    if args.plot is not None:
        from PIL import Image

        from .plot import plot_sync

        Image.fromarray(plot_sync(score, title=f"SyncNet-v2: {args.video.name}")).save(args.plot)
        log(f"wrote {args.plot}")
    if args.json:
        out = {"video": str(args.video), "audio": str(args.audio or args.video), **score.to_dict()}
        print(json.dumps(out))
    else:
        print(f"video:       {args.video}" + (f"   audio: {args.audio}" if args.audio else ""))
        print(f"confidence:  {score.confidence:.3f}   (LSE-C, higher = better)")
        print(f"distance:    {score.distance:.3f}   (LSE-D, lower = better)")
        print(f"offset:      {score.offset_frames:+d} frames ({score.offset_seconds:+.3f} s; "
              "> 0 = audio ahead of video)")
        print(f"scored:      {score.num_frames_scored} 5-frame windows of {score.num_frames} frames at 25 fps "
              f"(face found in {score.frames_with_face})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sync":
        return run_sync(args)
    return 2  # unreachable: argparse requires a command


if __name__ == "__main__":
    exit_with(main())
