"""StableSyncNet training samples (official `SyncNetDataset`): the mel window of a random start frame with either
the frames aligned with it (label 1) or a different random 16-frame window of the same clip (label 0), 50/50;
frames at the SyncNet's resolution, lower half when configured, channels frame-major (F*3, H, W)."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from latentsync.audio.wav2lip_mel import crop_mel_window

from .audio_cache import AudioFeatureCache
from .clip_set import ClipSet
from .clips import read_frames, to_model_pixels
from .replacement import read_with_replacement
from .sampler import SampleOrder


class SyncNetDataset(Dataset):
    """`dataset[sample_id]` -> `frames` (F*3, R/2 or R, R) in [-1, 1] (or (F, 3, R, R) with `stack=False`, for
    latent-space SyncNets that VAE-encode first), `mel` (1, 80, 52), `y` (1,), `sample_id`, `clip`, `replaced`,
    `start`, `frames_start`; a clip that fails to decode is replaced (`training.data.replacement`)."""

    def __init__(self, clips: ClipSet, cache: AudioFeatureCache, resolution: int = 256, num_frames: int = 16,
                 lower_half: bool = True, fps: float = 25.0, seed: int = 42, stack: bool = True):
        self.clips, self.cache = clips, cache
        self.resolution, self.num_frames, self.fps = int(resolution), int(num_frames), float(fps)
        self.lower_half, self.stack = bool(lower_half), bool(stack)
        self.order = SampleOrder(len(clips), seed)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, sample_id: int) -> dict:
        return read_with_replacement(self.order, sample_id, self.clips, self._read)

    def _read(self, c: int, rng) -> dict:
        f, n = self.num_frames, self.clips.num_frames[c]
        start = int(rng.integers(self.clips.last_start[c] + 1))
        positive = bool(rng.random() < 0.5)
        frames_start = start
        if not positive:
            frames_start = int(rng.integers(n - f))  # n - f + 1 starts, minus the aligned one
            frames_start += frames_start >= start
        pixels = to_model_pixels(read_frames(self.clips.clips[c], range(frames_start, frames_start + f)),
                                 self.resolution)
        if self.lower_half:
            pixels = pixels[:, :, self.resolution // 2:, :]
        if self.stack:
            pixels = pixels.reshape(-1, *pixels.shape[2:])  # (f c) h w, channel = 3 * frame + rgb
        return {
            "frames": pixels,
            "mel": crop_mel_window(self.cache.mel(self.clips.clips[c]), start, f, self.fps).float(),
            "y": torch.tensor([1.0 if positive else 0.0]),
            "start": start, "frames_start": frames_start,
        }
