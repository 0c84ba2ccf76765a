"""python -m latentsync.tools.merge_lora --unet BASE --lora FILE[:STRENGTH] [--lora ...] --out OUT

Merges LoRA files (training.train_unet with lora.rank > 0) into a U-Net checkpoint and writes a full checkpoint:
`.pt` in the official format `{"global_step", "state_dict"}` or a `.safetensors` file, with the base's
`unet_config.yaml` copied beside it when it has one. The result loads anywhere a U-Net file does, without the LoRA.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .. import hub
from ..models.checkpoint import CheckpointError, load_unet_state_dict, save_unet_checkpoint
from ..models.lora import LoRAError, apply_loras, parse_lora_spec
from ..process_exit import exit_with


def merge_lora_checkpoint(unet: Path, loras: list[tuple[Path, float]], out: Path, overwrite: bool = False) -> Path:
    unet, out = Path(unet).expanduser(), Path(out).expanduser()
    if out.suffix not in (".pt", ".safetensors"):
        raise ValueError(f"--out must end in .pt or .safetensors, got {out.name}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    if out.resolve() == unet.resolve():
        raise ValueError("--out must not be the base U-Net file")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {out.parent}")
    state = load_unet_state_dict(unet)
    apply_loras(state, loras)
    save_unet_checkpoint(state, out)
    config = unet.with_name(hub.UNET_CONFIG_NAME)
    if config.is_file() and config.resolve() != out.with_name(hub.UNET_CONFIG_NAME).resolve():
        shutil.copyfile(config, out.with_name(hub.UNET_CONFIG_NAME))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latentsync.tools.merge_lora", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", required=True, type=Path,
                        help="the base U-Net checkpoint the LoRA was trained on (e.g. models/latentsync/v1.5/"
                             "latentsync_unet.pt)")
    parser.add_argument("--lora", required=True, action="append", metavar="FILE[:STRENGTH]",
                        help="a LoRA file with its strength (default 1); repeat for several, merged in order")
    parser.add_argument("--out", required=True, type=Path, help="the merged checkpoint, .pt or .safetensors")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    try:
        out = merge_lora_checkpoint(args.unet, [parse_lora_spec(s) for s in args.lora], args.out, args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, CheckpointError, LoRAError) as exc:
        print(f"merge_lora: {exc}", file=sys.stderr)
        return 2
    print(f"merged {len(args.lora)} LoRA file(s) into {out}")
    return 0


if __name__ == "__main__":
    exit_with(main())
