"""StableSyncNet: the audio-visual sync critic LatentSync trains with (released as `stable_syncnet.pt`).

Two independent `DownEncoder2D` CNNs embed a Wav2Lip mel window `(B, 1, 80, 52)` and the lower half of 16 RGB
frames `(B, 48, 128, 256)` into `(B, D)` vectors, L2-normalised; their cosine is read as the probability that the
two are in sync (`sync_loss`). Built from our configs in `latentsync/configs/syncnet/`; the state-dict names are
the official ones, so the released checkpoint loads unchanged.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from .checkpoint import CheckpointError, load_state_dict_file, save_unet_checkpoint
from .syncnet_blocks import AttentionBlock2D, DownsampleFactor, ResnetBlock2D

SYNCNET_CONFIGS = ("syncnet_16_pixel_attn", "syncnet_16_pixel", "syncnet_16_latent")
RELEASED_CONFIG = "syncnet_16_pixel_attn"  # the architecture of the released stable_syncnet.pt
_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "syncnet"


class DownEncoder2D(nn.Module):
    """conv_in 3x3 -> per level a `ResnetBlock2D` (optionally followed by an `AttentionBlock2D`) -> GroupNorm -> ReLU.

    `down_blocks` is one ModuleList with the attention blocks interleaved after their level's resnet, as the
    official module (so indices shift after each attention block).
    """

    def __init__(self, in_channels: int, block_out_channels: Sequence[int],
                 downsample_factors: Sequence[DownsampleFactor], attn_blocks: Sequence[int] | None = None,
                 dropout: float = 0.0, norm_num_groups: int = 32, layers_per_block: int | None = None):
        super().__init__()
        del layers_per_block  # accepted for config compatibility; one resnet per level, as the official module
        n = len(block_out_channels)
        attn_blocks = list(attn_blocks) if attn_blocks is not None else [0] * n
        if not (len(downsample_factors) == len(attn_blocks) == n):
            raise ValueError("block_out_channels, downsample_factors and attn_blocks must have the same length "
                             f"({n}, {len(downsample_factors)}, {len(attn_blocks)})")
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, stride=1, padding=1)
        self.down_blocks = nn.ModuleList()
        out_ch = block_out_channels[0]
        for width, factor, attn in zip(block_out_channels, downsample_factors, attn_blocks):
            in_ch, out_ch = out_ch, int(width)
            self.down_blocks.append(ResnetBlock2D(in_ch, out_ch, factor, norm_num_groups, dropout=dropout))
            if attn:
                self.down_blocks.append(AttentionBlock2D(out_ch, norm_num_groups=norm_num_groups, dropout=dropout))
        self.norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[-1], eps=1e-6)
        self.act_out = nn.ReLU()
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.act_out(self.norm_out(x))


class StableSyncNet(nn.Module):
    """`forward(image_sequences (B, C_v, H, W), audio_sequences (B, 1, 80, 52)) -> (vision_embeds, audio_embeds)`,
    both `(B, D)` and L2-normalised (non-negative: the encoders end in a ReLU)."""

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        config = dict(config.get("model", config))
        self._config = copy.deepcopy(config)
        # Registration order = official state-dict order: audio first.
        self.audio_encoder = DownEncoder2D(**config["audio_encoder"])
        self.visual_encoder = DownEncoder2D(**config["visual_encoder"])

    @property
    def config(self) -> dict[str, Any]:
        return copy.deepcopy(self._config)

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.audio_encoder.gradient_checkpointing = enabled
        self.visual_encoder.gradient_checkpointing = enabled

    def embed(self, image_sequences: torch.Tensor, audio_sequences: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised embeddings `(B, D)` of both encoders."""
        vision = self.visual_encoder(image_sequences)
        audio = self.audio_encoder(audio_sequences)
        return vision.reshape(vision.shape[0], -1), audio.reshape(audio.shape[0], -1)

    def forward(self, image_sequences: torch.Tensor, audio_sequences: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        vision, audio = self.embed(image_sequences, audio_sequences)
        return F.normalize(vision, p=2, dim=1), F.normalize(audio, p=2, dim=1)


def sync_loss(vision_embeds: torch.Tensor, audio_embeds: torch.Tensor, labels: torch.Tensor | None = None
              ) -> torch.Tensor:
    """Per-sample `BCE(cosine(v, a), y)` (official `cosine_loss`), y = 1 (in sync) when `labels` is None.

    The cosine of the ReLU'd, normalised embeddings lies in [0, 1] and is used directly as a probability.
    """
    cos = F.cosine_similarity(vision_embeds.float(), audio_embeds.float()).unsqueeze(1)
    if labels is None:
        labels = torch.ones_like(cos)
    return F.binary_cross_entropy(cos, labels.float().reshape(cos.shape), reduction="none").squeeze(1)


def syncnet_config(name: str) -> dict[str, Any]:
    """The `model:` section (audio_encoder / visual_encoder) of our config `name`."""
    if name not in SYNCNET_CONFIGS:
        raise ValueError(f"unknown StableSyncNet config {name!r}; choose one of {', '.join(SYNCNET_CONFIGS)}")
    data = yaml.safe_load((_CONFIG_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    return data["model"]


def syncnet_input_spec(name: str) -> dict[str, Any]:
    """The `data:` section of config `name` (frames, resolution, lower_half, latent_space)."""
    if name not in SYNCNET_CONFIGS:
        raise ValueError(f"unknown StableSyncNet config {name!r}; choose one of {', '.join(SYNCNET_CONFIGS)}")
    return yaml.safe_load((_CONFIG_DIR / f"{name}.yaml").read_text(encoding="utf-8"))["data"]


def load_syncnet_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """State dict of a StableSyncNet file: official `{"state_dict": ..., "global_step": ...}`, a bare dict or
    `.safetensors`; pickles are read with `weights_only=True` (unsafe content raises `CheckpointError`)."""
    return load_state_dict_file(path, "StableSyncNet")


def load_stable_syncnet(path: str | os.PathLike, config: Mapping[str, Any] | str = RELEASED_CONFIG,
                        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> StableSyncNet:
    """Build StableSyncNet (config name or `model:` mapping) and load `path` strictly; eval mode, frozen."""
    cfg = syncnet_config(config) if isinstance(config, str) else config
    with torch.device("meta"):
        net = StableSyncNet(cfg)
    state = load_syncnet_state_dict(path)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{path} does not fit the StableSyncNet config: {len(missing)} missing "
                         f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
                         f"{len(shapes)} shape mismatches {shapes[:3]}")
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval().requires_grad_(False)


def save_syncnet_checkpoint(net: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike,
                            global_step: int | None = None) -> Path:
    """Official format `{"state_dict": ..., "global_step": ...}` (or a flat `.safetensors`), written atomically."""
    return save_unet_checkpoint(net, path, global_step=global_step)
