"""U-Net training samples (official `UNetDataset`): a random 16-frame window of an aligned clip, a non-overlapping
16-frame reference window of the same clip, the fixed mouth mask, the Whisper windows and the Wav2Lip mel window."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from latentsync.audio.wav2lip_mel import crop_mel_window
from latentsync.audio.windows import crop_overlap_audio_window

from .audio_cache import AudioFeatureCache
from .clip_set import ClipSet
from .clips import read_frames, to_model_pixels
from .replacement import read_with_replacement
from .sampler import SampleOrder


def reference_start(rng, num_frames: int, start: int, window: int) -> int:
    """A start whose window does not overlap [start, start + window): |ref - start| >= window."""
    candidates = [s for s in range(num_frames - window + 1) if abs(s - start) >= window]
    if not candidates:
        raise ValueError(f"a clip of {num_frames} frames has no reference window apart from {start}")
    return int(candidates[rng.integers(len(candidates))])


class UNetDataset(Dataset):
    """`dataset[sample_id]` -> dict of
    `pixel_values` / `masked_pixel_values` / `ref_pixel_values` (F, 3, R, R) in [-1, 1], `mel` (1, 80, 52),
    `audio_embeds` (F, 50, 384), `sample_id`, `clip`, `replaced`, `start`, `ref_start`. Any sample id is valid (see
    `training.data.sampler`); a clip that fails to decode is replaced (`training.data.replacement`)."""

    def __init__(self, clips: ClipSet, cache: AudioFeatureCache, mask: torch.Tensor, resolution: int,
                 num_frames: int = 16, fps: float = 25.0, seed: int = 1247):
        self.clips, self.cache = clips, cache
        self.mask = mask.float()
        self.resolution, self.num_frames, self.fps = int(resolution), int(num_frames), float(fps)
        self.order = SampleOrder(len(clips), seed)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, sample_id: int) -> dict:
        return read_with_replacement(self.order, sample_id, self.clips, self._read)

    def _read(self, c: int, rng) -> dict:
        path, f = self.clips.clips[c], self.num_frames
        start = int(rng.integers(self.clips.last_start[c] + 1))
        ref = reference_start(rng, self.clips.num_frames[c], start, f)
        frames = read_frames(path, list(range(start, start + f)) + list(range(ref, ref + f)))
        pixels = to_model_pixels(frames, self.resolution)
        gt, ref_pixels = pixels[:f], pixels[f:]
        return {
            "pixel_values": gt,
            "masked_pixel_values": gt * self.mask,
            "ref_pixel_values": ref_pixels,
            "mel": crop_mel_window(self.cache.mel(path), start, f, self.fps).float(),
            "audio_embeds": crop_overlap_audio_window(self.cache.embeds(path), start, f),
            "start": start, "ref_start": ref,
        }
