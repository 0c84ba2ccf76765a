"""Sync loss of stage 2: decoded frames + mel window through a frozen StableSyncNet, BCE(cosine, 1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from latentsync.models.stable_syncnet import StableSyncNet, sync_loss


class SyncLoss:
    """`(frames (B, F, 3, R, R) in [-1, 1], mel (B, 1, 80, 52)) -> scalar`: frames resized (bicubic) to the
    SyncNet's resolution when R differs, stacked frame-major to (B, F*3, H, W), lower half if configured."""

    def __init__(self, net: StableSyncNet, resolution: int = 256, lower_half: bool = True):
        self.net, self.resolution, self.lower_half = net, int(resolution), bool(lower_half)

    def __call__(self, frames: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        b, f = frames.shape[:2]
        x = frames.flatten(0, 1)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bicubic", align_corners=False)
        x = x.reshape(b, f * x.shape[1], *x.shape[2:])
        if self.lower_half:
            x = x[:, :, x.shape[2] // 2:, :]
        dtype = next(self.net.parameters()).dtype
        vision, audio = self.net(x.to(dtype), mel.to(dtype))
        return sync_loss(vision, audio).mean()
