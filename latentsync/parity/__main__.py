"""python -m latentsync.parity KIND FIXTURE  — compare our implementation with a golden fixture."""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from ..process_exit import exit_with

KINDS = ("unet", "whisper", "audio", "affine", "scheduler", "loop", "syncnet_v2")
KINDS += ("stable_syncnet", "wav2lip_mel", "train_math")  # training (issue 9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latentsync.parity", description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("fixture", type=Path)
    args = parser.parse_args(argv)
    if not args.fixture.is_file():
        print(f"fixture not found: {args.fixture}", file=sys.stderr)
        return 2
    module = importlib.import_module(f".{args.kind}", __package__)
    results = module.check(args.fixture)
    for r in results:
        print(r.line())
    if not results:
        print("no comparisons were made", file=sys.stderr)
        return 1
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    exit_with(main())
