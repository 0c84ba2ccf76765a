"""VideoMAE-v2 video ViT (the frozen feature extractor of LatentSync's TREPA loss).

State-dict names follow the VideoMAE-v2 fine-tuning model, so the official `vit_g_hybrid_pt_1200e_ssv2_ft.pth`
(ViT-g/14: width 1408, 40 blocks, 16 heads, MLP 6144, 16 frames, tubelet 2, mean pooling + `fc_norm`, 174 SSv2
classes) loads unchanged: `patch_embed.proj` (Conv3d), `blocks.{i}.{norm1, attn.qkv (no bias), attn.q_bias,
attn.v_bias, attn.proj, norm2, mlp.fc1, mlp.fc2}`, `fc_norm`, `head`. The position table is the fixed sinusoidal one
(recomputed, not stored).
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError


@dataclass(frozen=True)
class VideoMAEConfig:
    image_size: int = 224
    patch_size: int = 14
    num_frames: int = 16
    tubelet_size: int = 2
    embed_dim: int = 1408
    depth: int = 40
    num_heads: int = 16
    mlp_hidden: int = 6144  # 1408 * 48 / 11
    num_classes: int = 174
    in_channels: int = 3

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2 * (self.num_frames // self.tubelet_size)


VIT_G_14 = VideoMAEConfig()


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """(1, positions, dim) table: sin on even, cos on odd channels of pos / 10000^(2*(j//2)/dim)."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angles = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.float().unsqueeze(0)


class PatchEmbed3D(nn.Module):
    """(B, 3, T, H, W) -> (B, T/tubelet * (H/p) * (W/p), dim) with one Conv3d of stride (tubelet, p, p)."""

    def __init__(self, cfg: VideoMAEConfig):
        super().__init__()
        k = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_channels, cfg.embed_dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoMAEAttention(nn.Module):
    """Multi-head self-attention with one bias-free `qkv` matrix and separate `q_bias` / `v_bias` (k has none)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VideoMAEBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = VideoMAEAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VideoMAEv2(nn.Module):
    """`forward_features(video (B, 3, T, H, W) in [0, 1]) -> (B, dim)`: mean of the tokens after the blocks,
    then `fc_norm`. `forward` adds the classification head."""

    def __init__(self, cfg: VideoMAEConfig = VIT_G_14):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed3D(cfg)
        self.blocks = nn.ModuleList([VideoMAEBlock(cfg.embed_dim, cfg.num_heads, cfg.mlp_hidden)
                                     for _ in range(cfg.depth)])
        self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes) if cfg.num_classes else None
        self.register_buffer("pos_embed", sinusoid_table(cfg.num_patches, cfg.embed_dim), persistent=False)
        self.gradient_checkpointing = False

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(video)
        if x.shape[1] != self.pos_embed.shape[1]:
            raise ValueError(f"video {tuple(video.shape)} gives {x.shape[1]} patches; this model expects "
                             f"{self.cfg.num_frames} frames of {self.cfg.image_size} px ({self.pos_embed.shape[1]})")
        x = x + self.pos_embed.to(x.dtype)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.fc_norm(x.mean(1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        feats = self.forward_features(video)
        return self.head(feats) if self.head is not None else feats


def load_videomae_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights of a VideoMAE-v2 checkpoint (`{"model"|"module": state_dict, ...}` or a bare state dict), read with
    `weights_only=True` (argparse.Namespace, which the VideoMAE-v2 trainer stores beside them, is allowed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VideoMAE-v2 checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "module", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    state = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    state.pop("pos_embed", None)  # the fixed sinusoidal table is recomputed
    return state


def load_videomae(path: str | os.PathLike, cfg: VideoMAEConfig = VIT_G_14, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> VideoMAEv2:
    """Build the ViT (meta device) and load `path` strictly; eval mode, frozen."""
    with torch.device("meta"):
        model = VideoMAEv2(cfg)
    state = load_videomae_state_dict(path)
    expected = {k: v for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{path} does not fit VideoMAE-v2 {asdict(cfg)}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}, shape mismatches {shapes[:3]}")
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, strict=False,
                          assign=True)
    model.pos_embed = sinusoid_table(cfg.num_patches, cfg.embed_dim).to(device=device, dtype=dtype)
    return model.eval().requires_grad_(False)
