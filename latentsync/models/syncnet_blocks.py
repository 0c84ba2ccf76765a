"""Building blocks of StableSyncNet's 2-D encoders: a residual block with an asymmetric strided downsample, and a
self-attention block over the spatial positions."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, FeedForward

DownsampleFactor = int | Sequence[int]


def downsample_padding(factor: DownsampleFactor) -> tuple[int, int, int, int]:
    """Zero padding (left, right, top, bottom) applied before the stride-`factor` 3x3 convolution (padding 0):
    (0, 1, 1, 1) for a factor (1, k), (1, 1, 0, 1) for (k, 1), else (0, 1, 0, 1)."""
    if isinstance(factor, Sequence):
        if factor[0] == 1:
            return (0, 1, 1, 1)
        if factor[1] == 1:
            return (1, 1, 0, 1)
    return (0, 1, 0, 1)


def _normalise_factor(factor: DownsampleFactor) -> int | tuple[int, int]:
    if isinstance(factor, Sequence) and not isinstance(factor, str):
        if len(factor) != 2:
            raise ValueError(f"a downsample factor is an int or (h, w), got {factor!r}")
        h, w = (int(f) for f in factor)
        return 1 if (h, w) == (1, 1) else (h, w)
    return int(factor)


class ResnetBlock2D(nn.Module):
    """GroupNorm -> SiLU -> conv3x3 -> GroupNorm -> SiLU -> Dropout -> conv3x3, plus the (1x1-projected) input,
    then an optional downsampling 3x3 convolution with stride `downsample_factor` after an asymmetric zero pad.

    Keys: norm1, conv1, norm2, conv2, [conv_shortcut if in != out], [downsample_conv if factor != 1].
    """

    def __init__(self, in_channels: int, out_channels: int, downsample_factor: DownsampleFactor = 2,
                 norm_num_groups: int = 32, eps: float = 1e-6, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_num_groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = nn.GroupNorm(norm_num_groups, out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.act = nn.SiLU()
        self.conv_shortcut = (nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels
                              else None)
        factor = _normalise_factor(downsample_factor)
        if factor == 1:
            self.downsample_conv = None
            self.pad = None
        else:
            self.downsample_conv = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=factor, padding=0)
            self.pad = downsample_padding(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        shortcut = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        h = h + shortcut
        if self.downsample_conv is not None:
            h = self.downsample_conv(F.pad(h, self.pad, mode="constant", value=0.0))
        return h


class AttentionBlock2D(nn.Module):
    """Spatial self-attention block: GroupNorm -> 1x1 conv -> tokens -> LayerNorm -> 8-head attention (biased
    q/k/v) + residual -> LayerNorm -> GEGLU feed-forward + residual -> 1x1 conv -> + block input.

    Keys (registration order = official state-dict order): norm1, norm2, norm3, ff, conv_in, conv_out, attn.
    """

    def __init__(self, channels: int, heads: int = 8, norm_num_groups: int = 32, dropout: float = 0.0):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention width {channels} is not divisible by {heads} heads")
        self.norm1 = nn.GroupNorm(norm_num_groups, channels, eps=1e-6, affine=True)
        self.norm2 = nn.LayerNorm(channels)
        self.norm3 = nn.LayerNorm(channels)
        self.ff = FeedForward(channels, dropout=dropout)
        self.conv_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.conv_out = nn.Conv2d(channels, channels, kernel_size=1)
        self.attn = Attention(channels, heads=heads, dim_head=channels // heads, dropout=dropout, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.conv_in(self.norm1(x)).flatten(2).transpose(1, 2)  # (b, h*w, c)
        tokens = self.attn(self.norm2(tokens)) + tokens
        tokens = self.ff(self.norm3(tokens)) + tokens
        return self.conv_out(tokens.transpose(1, 2).reshape(b, c, h, w)) + x
