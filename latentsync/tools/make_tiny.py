"""Write a complete, randomly initialised LatentSync model set (tests, offline demos).

``python -m latentsync.tools.make_tiny --out DIR [--resolution 256|512] [--seed N]``

The official layout file for file, under the official names (see `latentsync.hub`), so that anything written for
the official set (the shipped workflows included) runs on it unchanged::

    latentsync/v1.5/latentsync_unet.pt                       (256; v1.6 for 512) {"state_dict": ...}
    latentsync/whisper/tiny.pt                               OpenAI format, 4 layers x 384 (official feature shape)
    latentsync/mask.png                                      synthetic mouth mask (NOT the official one)
    vae/vae-ft-mse-840000-ema-pruned.safetensors             a random TAESD (what ComfyUI's Load VAE reads) and a
                                                             narrow random SD VAE (what latentsync.vae reads) in one
                                                             file, see `latentsync.tools.tiny_vae`

plus files the official set does not have::

    latentsync/v1.x/unet_config.yaml                         the tiny U-Net's architecture
    (EXTRA_FILES below)                                      more random models the tools and tests need
    TINY_MODEL_SET.txt                                       marker: random weights (hub sets ``is_tiny``), written last

Sizes: U-Net widths (32, 32, 32, 32), 1 layer per block, one attention head (~1.2 M parameters: the head count
changes no weight; 8 heads of 4 channels made the CPU's attention kernels 2.6x slower per call); the audio condition keeps the
official shape (16 frames x 50 tokens x 384) so the pipeline runs on exactly the tensor shapes of the real model.
All weights come from one private `torch.Generator(seed)`; the global RNG is left as it was. Existing files in
``--out`` are never overwritten (the tool refuses and names them).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from torch import nn

from .. import hub
from ..process_exit import exit_with

UNET_TINY: dict[str, Any] = {
    "block_out_channels": [32, 32, 32, 32],
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "attention_head_dim": 1,  # heads (legacy diffusers naming): 1 head of 32 channels, see the module doc
    "motion_module_kwargs": {"num_attention_heads": 1},
    "cross_attention_dim": 384,
    "in_channels": 13,
    "out_channels": 4,
}
VAE_TINY: dict[str, Any] = {  # 8x downscale like SD's VAE, 8 channels per level
    "block_out_channels": [8, 8, 8, 8],  # 32 (SD's group count) made a 16-frame window 6x slower on the CPU
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,  # not readable from the shapes: saved in the file's metadata (latentsync.tools.tiny_vae)
    "latent_channels": 4,
    "in_channels": 3,
    "out_channels": 3,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}
WHISPER_TINY = {"n_audio_state": 384, "n_audio_layer": 4, "n_audio_head": 6}
RESOLUTION_VERSION = {256: "1.5", 512: "1.6"}


@dataclass(frozen=True)
class TinyExtra:
    """A file beyond the official layout: where it goes under the models root and how to write it (``write(path,
    generator)`` writes ``path``; the caller renames it into place)."""

    relpath: str
    write: Callable[[Path, torch.Generator], None]


def write_syncnet_v2(path: Path, generator: torch.Generator) -> None:
    """Random SyncNet-v2 (real architecture and size) as a plain state dict, like the official syncnet_v2.model."""
    from ..eval.syncnet_v2 import SyncNetV2

    net = randomize_(_build(SyncNetV2), generator)
    torch.save(net.state_dict(), path)


# Random models the official set does not contain but tools and tests need (append new ones here).
EXTRA_FILES: list[TinyExtra] = [
    TinyExtra(hub.SYNCNET_V2_FILE.relpath, write_syncnet_v2),
]


def randomize_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Overwrite every parameter from ``generator``: weights N(0, 1/fan_in), norm gains 1 + N(0, 0.1^2),
    biases N(0, 0.02^2). Zero-initialised layers (motion-module outputs) become random too, so a tiny model
    exercises every path. Buffers (e.g. positional tables) are kept."""
    with torch.no_grad():
        for sub in module.modules():
            is_norm = isinstance(sub, (nn.GroupNorm, nn.LayerNorm, nn.modules.batchnorm._BatchNorm))
            for name, p in sub.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
                if p.ndim >= 2:
                    p.copy_(noise / p[0].numel() ** 0.5)
                elif is_norm and name == "weight":
                    p.copy_(1.0 + 0.1 * noise)
                else:
                    p.copy_(0.02 * noise)
    return module


def _build(factory: Callable[[], nn.Module]) -> nn.Module:
    # Module constructors draw their default init from the global RNG: fork it so the caller's state is untouched.
    with torch.random.fork_rng(devices=[]):
        return factory()


def _temp_sibling(path: Path, suffix: str = ".part") -> Path:
    """A fresh hidden name beside ``path`` (created by the caller with normal, umask-respecting permissions)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")


def _normalise_modes(paths: list[Path], like: Path) -> None:
    """safetensors writes 0600 files; give them the permissions of a normally created file (umask respected)."""
    mode = like.stat().st_mode & 0o777
    for p in paths:
        os.chmod(p, mode)


def _atomic_bytes(path: Path, write: Callable[[Path], None]) -> None:
    tmp = _temp_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def tiny_unet_config() -> dict[str, Any]:
    from ..models.unet_3d import resolve_unet_config

    return resolve_unet_config(UNET_TINY)


def write_unet(folder: Path, generator: torch.Generator) -> Path:
    from ..models.checkpoint import save_unet_checkpoint
    from ..models.unet_3d import UNet3DConditionModel

    config = tiny_unet_config()
    unet = randomize_(_build(lambda: UNet3DConditionModel(**config)), generator)
    path = save_unet_checkpoint(unet, folder / "latentsync_unet.pt")
    text = "# tiny random LatentSync U-Net (latentsync.tools.make_tiny); flat model config\n"
    text += yaml.safe_dump(config, sort_keys=True)
    _atomic_bytes(folder / hub.UNET_CONFIG_NAME, lambda p: p.write_text(text, encoding="utf-8"))
    return path


def write_whisper(path: Path, seed: int) -> Path:
    from ..audio.whisper_encoder import save_random_whisper_checkpoint

    def write(tmp: Path) -> None:
        with torch.random.fork_rng(devices=[]):
            save_random_whisper_checkpoint(tmp, seed=seed, **WHISPER_TINY)
        # OpenAI's own checkpoints store fp16 tensors; do the same (half the size; the loader casts to float32).
        ckpt = torch.load(tmp, map_location="cpu", weights_only=True)
        ckpt["model_state_dict"] = {
            k: v.half() if v.is_floating_point() else v for k, v in ckpt["model_state_dict"].items()
        }
        torch.save(ckpt, tmp)

    _atomic_bytes(path, write)
    return path


def write_vae(path: Path, generator: torch.Generator) -> Path:
    """The VAE file under its official name (two random VAEs in one file, see `latentsync.tools.tiny_vae`)."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    from .tiny_vae import save_tiny_vae_file

    sd_vae = randomize_(_build(lambda: AutoencoderKL(**VAE_TINY)), generator)
    taesd = randomize_(_build(AutoencoderTiny), generator)
    _atomic_bytes(path, lambda tmp: save_tiny_vae_file(tmp, sd_vae, taesd))
    return path


def write_mask(path: Path) -> Path:
    from PIL import Image

    try:
        from ..face.mask import synthetic_mouth_mask
    except ImportError:  # face package not importable (e.g. cv2 missing): same shape, drawn here
        synthetic_mouth_mask = _fallback_mouth_mask
    mask = synthetic_mouth_mask(256)
    img = (mask.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    rgb = np.repeat(img[:, :, None], 3, axis=2)  # official file: 256x256 RGB, 3 identical channels, {0, 255}
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG")
    _atomic_bytes(path, lambda p: p.write_bytes(buffer.getvalue()))
    return path


def _fallback_mouth_mask(resolution: int) -> torch.Tensor:
    """(R, R) float, 1 = keep, 0 = regenerate: a lower-face box (rows 0.37R..0.95R, columns 0.04R..0.96R)."""
    r = resolution
    mask = torch.ones(r, r)
    mask[int(0.37 * r) : int(0.95 * r), int(0.04 * r) : int(0.96 * r)] = 0
    return mask


def planned_files(out: Path, resolution: int) -> list[Path]:
    """Every file the tiny set writes: the official layout, then the extras, the marker last."""
    version = RESOLUTION_VERSION[resolution]
    unet_dir = out / "latentsync" / f"v{version}"
    return [
        unet_dir / "latentsync_unet.pt",
        out / hub.WHISPER_FILE.relpath,
        out / hub.MASK_FILE.relpath,
        out / hub.VAE_FILE.relpath,
        unet_dir / hub.UNET_CONFIG_NAME,
        *(out / extra.relpath for extra in EXTRA_FILES),
        out / hub.TINY_MARKER,
    ]


def make_tiny_model_set(out: str | Path, resolution: int = 256, seed: int = 0) -> hub.ModelSet:
    """Write the tiny set under ``out`` (created if needed; existing files are refused) and return its `ModelSet`."""
    if resolution not in RESOLUTION_VERSION:
        raise ValueError(f"resolution must be 256 (v1.5) or 512 (v1.6), got {resolution}")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out must be a folder: {out}")
    planned = planned_files(out, resolution)
    existing = [str(p) for p in planned if p.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite existing files: {', '.join(existing)}")
    version = RESOLUTION_VERSION[resolution]
    unet_dir = out / "latentsync" / f"v{version}"
    for path in planned:
        path.parent.mkdir(parents=True, exist_ok=True)

    generator = torch.Generator().manual_seed(seed)
    write_unet(unet_dir, generator)
    write_vae(out / hub.VAE_FILE.relpath, generator)
    write_whisper(out / hub.WHISPER_FILE.relpath, seed)
    write_mask(out / hub.MASK_FILE.relpath)
    for extra in EXTRA_FILES:
        _atomic_bytes(out / extra.relpath, lambda tmp, extra=extra: extra.write(tmp, generator))
    _normalise_modes([p for p in planned[:-1] if p.suffix == ".safetensors"], out / hub.MASK_FILE.relpath)
    marker = (
        "TINY RANDOM MODEL SET - NOT LatentSync weights.\n"
        "Written by `python -m latentsync.tools.make_tiny`; every weight is random, the mask is synthetic.\n"
        "The pipeline runs end to end with it, but the generated mouth is noise. For tests and offline demos only.\n"
        "Files are named like the official ones (so workflows run unchanged); the VAE file holds a random TAESD\n"
        "for ComfyUI's Load VAE and a narrow random SD VAE for the library (latentsync/tools/tiny_vae.py).\n"
        f"resolution: {resolution}\nversion: {version}\nseed: {seed}\n"
    )
    _atomic_bytes(out / hub.TINY_MARKER, lambda p: p.write_text(marker, encoding="utf-8"))
    return hub.locate_model_set(out, version=version, download=False, include_insightface=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latentsync.tools.make_tiny", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="models root to write (a new or empty folder)")
    parser.add_argument("--resolution", type=int, default=256, choices=sorted(RESOLUTION_VERSION))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        models = make_tiny_model_set(args.out, args.resolution, args.seed)
    except (FileExistsError, NotADirectoryError, ValueError) as exc:
        print(f"make_tiny: {exc}", file=sys.stderr)
        return 2
    print(f"tiny random model set (v{models.version}) written to {args.out}")
    for name in ("unet", "unet_config", "whisper", "vae", "mask"):
        print(f"  {name}: {getattr(models, name)}")
    return 0


if __name__ == "__main__":
    exit_with(main())
