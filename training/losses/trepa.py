"""TREPA (temporal representation alignment): MSE between L2-normalised VideoMAE-v2 features of the generated
and the real 16-frame clips."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from latentsync.models.videomae_v2 import VideoMAEv2


class TREPALoss:
    """`(fake, real)` clips `(B, 3, F, H, W)` in [-1, 1] -> scalar. Frames are resized bicubic to the ViT's input
    size, mapped to [0, 1] and clamped there (no ImageNet normalisation), as the official loss."""

    def __init__(self, model: VideoMAEv2):
        self.model = model
        self.size = model.cfg.image_size

    def _features(self, video: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = video.shape
        frames = video.transpose(1, 2).flatten(0, 1)
        frames = F.interpolate(frames, size=(self.size, self.size), mode="bicubic", align_corners=False)
        clip = (frames.unflatten(0, (b, f)).transpose(1, 2) / 2 + 0.5).clamp(0, 1)  # as official, after resizing
        dtype = next(self.model.parameters()).dtype
        return F.normalize(self.model.forward_features(clip.to(dtype)).float(), p=2, dim=1)

    def __call__(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self._features(real)
        return F.mse_loss(self._features(fake), target)
