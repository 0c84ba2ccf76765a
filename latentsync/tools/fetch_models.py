"""python -m latentsync.tools.fetch_models --models DIR [--version 1.5|1.6] [--face-backend insightface|offline]
[--no-syncnet]
                                         [--training]

Find every official file under DIR (a ComfyUI-style models/ folder) or download it: the lip-sync set and the
SyncNet-v2 weights for sync scoring (skip those with --no-syncnet). Exit status 0 when the whole set is ready, 1 with
one clear message per missing file otherwise. ``--training`` also fetches the frozen networks that U-Net training
needs (StableSyncNet, VideoMAE-v2 for TREPA, LPIPS' VGG16) into DIR/latentsync/auxiliary/.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..hub import ModelNotFoundError, locate_model_set, locate_syncnet_v2
from ..process_exit import exit_with


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m latentsync.tools.fetch_models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--version", choices=["1.5", "1.6"], default="1.5")
    p.add_argument("--face-backend", choices=["insightface", "offline"], default="insightface")
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--no-syncnet", action="store_true", help="skip the SyncNet-v2 weights (only used for sync scoring)")
    p.add_argument("--training", action="store_true", help="also fetch the frozen networks U-Net training uses")
    args = p.parse_args(argv)
    args.models.mkdir(parents=True, exist_ok=True)
    try:
        found = locate_model_set(args.models, version=args.version, download=not args.no_download,
                                 include_insightface=args.face_backend == "insightface")
    except ModelNotFoundError as e:
        print(f"[fetch_models] {e}", file=sys.stderr)
        return 1
    if found.is_tiny:
        print(f"[fetch_models] {args.models} is a tiny random model set, not the official weights", file=sys.stderr)
        return 1
    for name in ("unet", "whisper", "vae", "mask", "insightface_dir"):
        print(f"[fetch_models] {name}: {getattr(found, name)}")
    if not args.no_syncnet:
        try:
            print(f"[fetch_models] syncnet_v2: {locate_syncnet_v2(args.models, download=not args.no_download)}")
        except ModelNotFoundError as e:
            print(f"[fetch_models] {e}", file=sys.stderr)
            return 1
    if args.training:
        from ..hub import TRAINING_FILES, locate_training_file

        failed = 0
        for which in TRAINING_FILES:
            try:
                print(f"[fetch_models] {which}: {locate_training_file(args.models, which, not args.no_download)}")
            except ModelNotFoundError as e:
                print(f"[fetch_models] {e}", file=sys.stderr)
                failed += 1
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    exit_with(main())
