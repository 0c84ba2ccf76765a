"""python -m latentsync --video IN [--audio IN] --out OUT.mp4 — lip-sync a video to an audio track.

The video is streamed: decoded, lip-synced and encoded 16 frames at a time, so memory does not grow with its length.
The output appears under its name only when complete; on an error or Ctrl-C nothing is left behind.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .process_exit import exit_with


def build_parser() -> argparse.ArgumentParser:
    from .options import LipSyncOptions, ModelOptions

    p = argparse.ArgumentParser(prog="python -m latentsync", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, required=True, help="input video (any format PyAV reads)")
    p.add_argument("--audio", type=Path, default=None,
                   help="input audio (wav, mp3, m4a, or a video's audio track); default: the video's own audio")
    p.add_argument("--out", type=Path, required=True, help="output .mp4 (H.264 + AAC)")
    ModelOptions.add_arguments(p)
    LipSyncOptions.add_arguments(p)
    p.add_argument("--report", type=Path, default=None,
                   help="write a JSON report: frames, length mode, which frames were processed / bridged / passed")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                   help="a LoRA file of the U-Net (training.train_unet with lora.rank > 0) merged into the weights "
                        "with STRENGTH (default 1; 0: the base U-Net); repeat for several")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true")
    return p


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors the command line reports as one line (`error_text`): bad input, missing model, unwritable
    output. Anything else is a bug and keeps its traceback."""
    from .dependencies import MissingDependencyError
    from .hub import ModelLoadError, ModelNotFoundError
    from .video_io import OutputError

    return (ModelNotFoundError, ModelLoadError, FileNotFoundError, FileExistsError, IsADirectoryError, ValueError,
            OutputError, MissingDependencyError)


def error_text(e: BaseException) -> str:
    from .video_io import OutputError

    return str(e.strerror if isinstance(e, OutputError) and e.strerror else e)


def main(argv: list[str] | None = None, own_process: bool = False) -> int:
    """The command line; `own_process`: this process is the command's own (`python -m latentsync`), so its memory
    allocator may be tuned for the CPU (`latentsync.cpu_allocator`), never when called from another program."""
    from .dependencies import MissingDependencyError, require_opencv

    try:
        require_opencv()  # before the parser, whose defaults come from modules that import cv2
    except MissingDependencyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    from .models.lora import parse_lora_spec
    from .options import LipSyncOptions, ModelOptions, OptionError
    from .runner import run_lipsync

    try:
        options = LipSyncOptions.from_args(args)
        model = ModelOptions.from_args(args).replace(loras=tuple(parse_lora_spec(spec) for spec in args.lora))
        device = model.resolved_device()
    except (OptionError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log = (lambda *a: None) if args.quiet else _log
    if own_process and device == "cpu":
        from .cpu_allocator import keep_freed_memory_in_heap

        log(keep_freed_memory_in_heap())
    try:
        run_lipsync(video=args.video, audio=args.audio, out=args.out, options=options, model=model,
                    log=log, report=args.report, overwrite=args.overwrite)
    except user_errors() as e:
        print(f"error: {error_text(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled: nothing was written", file=sys.stderr)
        return 130
    return 0


_T0 = time.monotonic()


def _log(message: str) -> None:
    print(f"[latentsync {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    exit_with(main(own_process=True))
