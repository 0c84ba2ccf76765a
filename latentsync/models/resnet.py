"""ResNet block and resamplers of the 3-D U-Net (all convolutions are per frame)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from typing import Any

from .layers import layers


class ResnetBlock3D(nn.Module):
    """Pre-norm residual block with a timestep projection.

    GroupNorms act on the 5-D tensor, so their statistics are pooled over all frames of the clip (official quirk).
    `(b, c_in, f, h, w), temb (b, temb_channels) -> (b, c_out, f, h, w)`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        groups: int = 32,
        eps: float = 1e-5,
        dropout: float = 0.0,
        time_embedding_norm: str = "default",
        output_scale_factor: float = 1.0,
        ops: Any = None,
    ):
        super().__init__()
        L = layers(ops)
        if time_embedding_norm not in ("default", "scale_shift"):
            raise ValueError(f"unknown resnet_time_scale_shift {time_embedding_norm!r} (use 'default' or 'scale_shift')")
        self.time_embedding_norm = time_embedding_norm
        self.output_scale_factor = output_scale_factor
        self.norm1 = L.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = L.InflatedConv3d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        proj_channels = out_channels * 2 if time_embedding_norm == "scale_shift" else out_channels
        self.time_emb_proj = L.Linear(temb_channels, proj_channels)
        self.norm2 = L.GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = L.InflatedConv3d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.nonlinearity = nn.SiLU()
        self.conv_shortcut = (
            L.InflatedConv3d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)
            if in_channels != out_channels
            else None
        )

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(input_tensor)))
        t = self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None, None]
        if self.time_embedding_norm == "default":
            h = self.norm2(h + t)
        else:
            scale, shift = t.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(self.nonlinearity(h)))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        return (input_tensor + h) / self.output_scale_factor


class Downsample3D(nn.Module):
    """Stride-2 3x3 convolution per frame: `(b, c, f, h, w) -> (b, c', f, h/2, w/2)`."""

    def __init__(self, channels: int, out_channels: int | None = None, padding: int = 1, ops: Any = None):
        super().__init__()
        self.padding = padding
        self.conv = layers(ops).InflatedConv3d(channels, out_channels or channels, kernel_size=3, stride=2,
                                               padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1), mode="constant", value=0)
        return self.conv(x)


class Upsample3D(nn.Module):
    """Nearest x2 in h and w (not in frames), then a 3x3 convolution per frame."""

    def __init__(self, channels: int, out_channels: int | None = None, ops: Any = None):
        super().__init__()
        self.conv = layers(ops).InflatedConv3d(channels, out_channels or channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, output_size: tuple[int, ...] | None = None) -> torch.Tensor:
        dtype = x.dtype
        if dtype == torch.bfloat16:  # nearest upsampling has no bf16 kernel on some backends
            x = x.float()
        if x.shape[0] >= 64:
            x = x.contiguous()
        if output_size is None:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        else:
            x = F.interpolate(x, size=tuple(output_size), mode="nearest")
        return self.conv(x.to(dtype))
