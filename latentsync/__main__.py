"""python -m latentsync --video IN [--audio IN] --out OUT.mp4 — lip-sync a video to an audio track.

The video is streamed: decoded, lip-synced and encoded 16 frames at a time, so memory does not grow with its length.
The output appears under its name only when complete; on an error or Ctrl-C nothing is left behind.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

DEFAULT_MODELS = Path("models")
DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    from .face.gaps import DEFAULT_MAX_GAP
    from .timeline import LENGTH_MODE_ALIASES, LENGTH_MODES

    p = argparse.ArgumentParser(prog="python -m latentsync", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, required=True, help="input video (any format PyAV reads)")
    p.add_argument("--audio", type=Path, default=None,
                   help="input audio (wav, mp3, m4a, or a video's audio track); default: the video's own audio")
    p.add_argument("--out", type=Path, required=True, help="output .mp4 (H.264 + AAC)")
    p.add_argument("--version", choices=["1.5", "1.6"], default="1.5", help="1.5: 256 px, 1.6: 512 px")
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS,
                   help="models root laid out like ComfyUI's models/ folder (default: ./models)")
    p.add_argument("--face-backend", choices=["auto", "insightface", "offline"], default="auto",
                   help="auto (default): insightface when buffalo_l is in --models or can be downloaded, else offline")
    p.add_argument("--face-selection", choices=["largest", "index"], default="largest",
                   help="which face when there are several (then tracked): the largest, or the --face-index-th "
                        "from the left")
    p.add_argument("--face-index", type=int, default=0)
    p.add_argument("--length-mode", choices=[*LENGTH_MODES, *LENGTH_MODE_ALIASES], default="pingpong",
                   help="when audio and video differ in length: pingpong (default, official; also called bounce), "
                        "loop, cut_off (the shorter), silence (whole video, silence after the audio), freeze (hold "
                        "the last frame)")
    p.add_argument("--max-gap", type=int, default=DEFAULT_MAX_GAP,
                   help="bridge detection gaps of up to this many frames by interpolating the alignment "
                        f"(default {DEFAULT_MAX_GAP}; 0: off); longer gaps pass through unchanged")
    p.add_argument("--strict-faces", action="store_true",
                   help="fail on the first frame without a face instead of passing it through")
    p.add_argument("--report", type=Path, default=None,
                   help="write a JSON report: frames, length mode, which frames were processed / bridged / passed")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=1247)
    p.add_argument("--no-deepcache", action="store_true")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--dtype", choices=list(DTYPES), default="auto",
                   help="auto: fp16 on recent GPUs, fp32 on the CPU; bf16/fp16 that the CPU runs badly become fp32")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-download", action="store_true", help="only use files already in --models")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .hub import ModelLoadError, ModelNotFoundError
    from .runner import run_lipsync
    from .video_io import OutputError

    if args.steps < 1:
        print("error: --steps must be at least 1", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but PyTorch sees no CUDA GPU", file=sys.stderr)
        return 2
    try:
        run_lipsync(video=args.video, audio=args.audio, out=args.out, version=args.version, models=args.models,
                    face_backend=args.face_backend, steps=args.steps, guidance=args.guidance, seed=args.seed,
                    deepcache=not args.no_deepcache, device=device, download=not args.no_download,
                    log=(lambda *a: None) if args.quiet else _log, length_mode=args.length_mode,
                    max_gap=args.max_gap, strict_faces=args.strict_faces, report=args.report,
                    dtype=DTYPES[args.dtype], overwrite=args.overwrite, face_selection=args.face_selection,
                    face_index=args.face_index)
    except (ModelNotFoundError, ModelLoadError, FileNotFoundError, FileExistsError, IsADirectoryError, ValueError,
            OutputError) as e:
        print(f"error: {e.strerror if isinstance(e, OutputError) and e.strerror else e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled: nothing was written", file=sys.stderr)
        return 130
    return 0


_T0 = time.monotonic()


def _log(message: str) -> None:
    print(f"[latentsync {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
