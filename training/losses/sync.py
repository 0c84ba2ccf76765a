"""Sync loss of stage 2 through a frozen StableSyncNet, BCE(cosine, 1): on the decoded frames (pixel space), or,
without pixel supervision, on the predicted latents themselves (a latent-space SyncNet), as the official code."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from latentsync.models.stable_syncnet import StableSyncNet, sync_loss

from ..config import ConfigError

LATENT_CHANNELS = 4


class SyncLoss:
    """`(frames (B, F, 3, R, R) in [-1, 1], mel (B, 1, 80, 52)) -> scalar`: frames resized (bicubic) to the
    SyncNet's resolution when R differs, stacked frame-major to (B, F*3, H, W), lower half if configured.
    `from_latents(latents (B, 4, F, h, w), mel)`: the scaled latents stacked to (B, F*4, h, w), no resize."""

    def __init__(self, net: StableSyncNet, resolution: int = 256, lower_half: bool = True):
        self.net, self.resolution, self.lower_half = net, int(resolution), bool(lower_half)

    def require_latent_input(self, num_frames: int) -> None:
        """A latent run needs a latent-space SyncNet (visual input F x 4 channels)."""
        channels = self.net.visual_encoder.conv_in.in_channels
        if channels != num_frames * LATENT_CHANNELS:
            raise ConfigError(
                f"run.pixel_space_supervise=false with run.use_syncnet=true supervises the predicted latents with a "
                f"latent-space SyncNet ({num_frames} x {LATENT_CHANNELS} = {num_frames * LATENT_CHANNELS} visual "
                f"channels), but the configured SyncNet takes {channels}: set syncnet.config=syncnet_16_latent "
                "syncnet.lower_half=false and models.stable_syncnet=<a latent SyncNet trained with "
                "training.train_syncnet --config syncnet_16_latent>, or run.pixel_space_supervise=true")

    def __call__(self, frames: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        b, f = frames.shape[:2]
        x = frames.flatten(0, 1)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bicubic", align_corners=False)
        return self._loss(x.reshape(b, f * x.shape[1], *x.shape[2:]), mel)

    def from_latents(self, latents: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        return self._loss(latents.transpose(1, 2).flatten(1, 2), mel)  # b c f h w -> b (f c) h w

    def _loss(self, x: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        if self.lower_half:
            x = x[:, :, x.shape[2] // 2:, :]
        dtype = next(self.net.parameters()).dtype
        vision, audio = self.net(x.to(dtype), mel.to(dtype))
        return sync_loss(vision, audio).mean()
