"""python -m latentsync --video IN --audio IN --out OUT.mp4 — lip-sync a video to an audio track."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

DEFAULT_MODELS = Path("models")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m latentsync", description=__doc__)
    p.add_argument("--video", type=Path, required=True, help="input video (any format PyAV reads)")
    p.add_argument("--audio", type=Path, required=True, help="input audio (wav, mp3, m4a, or a video's audio track)")
    p.add_argument("--out", type=Path, required=True, help="output .mp4 (H.264 + AAC)")
    p.add_argument("--version", choices=["1.5", "1.6"], default="1.5", help="1.5: 256 px, 1.6: 512 px")
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS,
                   help="models root laid out like ComfyUI's models/ folder (default: ./models)")
    p.add_argument("--face-backend", choices=["auto", "insightface", "offline"], default="auto",
                   help="auto (default): insightface when buffalo_l is in --models or can be downloaded, else offline")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=1247)
    p.add_argument("--no-deepcache", action="store_true")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--no-download", action="store_true", help="only use files already in --models")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .hub import ModelNotFoundError
    from .runner import run_lipsync

    if args.steps < 1:
        print("error: --steps must be at least 1", file=sys.stderr)
        return 2
    try:
        run_lipsync(video=args.video, audio=args.audio, out=args.out, version=args.version, models=args.models,
                    face_backend=args.face_backend, steps=args.steps, guidance=args.guidance, seed=args.seed,
                    deepcache=not args.no_deepcache, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
                    download=not args.no_download, log=(lambda *a: None) if args.quiet else _log)
    except (ModelNotFoundError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


_T0 = time.monotonic()


def _log(message: str) -> None:
    print(f"[latentsync {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
