"""Small shared layers: per-frame ("inflated") 2-D convolution and a half-precision-safe GroupNorm."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InflatedConv3d(nn.Conv2d):
    """`nn.Conv2d` applied to every frame: `(b, c, f, h, w) -> (b, c', f, h', w')`. No temporal mixing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, f, _, _ = x.shape
        x = x.transpose(1, 2).flatten(0, 1)  # (b f) c h w
        x = super().forward(x)
        return x.unflatten(0, (b, f)).transpose(1, 2)


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` whose statistics are computed in float32 for fp16/bf16 inputs.

    Applied to a 5-D `(b, c, f, h, w)` tensor the statistics are pooled over all frames (official resnet quirk);
    callers that want per-frame statistics fold frames into the batch first.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            weight = None if self.weight is None else self.weight.float()
            bias = None if self.bias is None else self.bias.float()
            return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)
        return super().forward(x)


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """`(b, c, f, h, w) -> (b*f, c, h, w)`."""
    return x.transpose(1, 2).flatten(0, 1)


def batch_to_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`(b*f, c, h, w) -> (b, c, f, h, w)`."""
    return x.unflatten(0, (-1, num_frames)).transpose(1, 2)
