"""The clips a dataset samples from, with the official admission rule: a clip needs at least 3 x num_frames
frames (48 for 16-frame windows) and a complete mel window for some start frame."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from latentsync.audio.wav2lip_mel import last_valid_start_frame

from .audio_cache import AudioFeatureCache
from .clips import DECODE_ERRORS, count_frames

LOG = logging.getLogger("latentsync.training")


@dataclass
class ClipSet:
    clips: list[Path]
    num_frames: list[int]
    last_start: list[int]  # largest start frame with full frame and mel windows
    skipped: dict[str, str] = field(default_factory=dict)  # clip -> why it is not used

    def __len__(self) -> int:
        return len(self.clips)


def admit_clips(candidates: list[Path], cache: AudioFeatureCache, window: int = 16, fps: float = 25.0,
                min_frames: int | None = None) -> ClipSet:
    """Count frames, fill the mel cache and keep the clips that can give a sample; the others are listed with the
    reason (and logged), never silently dropped. Raises when no clip is usable."""
    min_frames = 3 * window if min_frames is None else min_frames
    kept, counts, starts, skipped = [], [], [], {}
    for clip in candidates:
        try:
            n = count_frames(clip)
            mel_frames = cache.mel(clip).shape[1] if n >= min_frames else 0
        except DECODE_ERRORS as exc:
            skipped[str(clip)] = f"it does not decode ({type(exc).__name__}: {exc})"
            continue
        if n < min_frames:
            skipped[str(clip)] = f"{n} frames < {min_frames} (3 x num_frames)"
            continue
        last = min(n - window, last_valid_start_frame(mel_frames, window, fps))
        if last < 0:
            skipped[str(clip)] = "its audio is too short for one mel window"
            continue
        kept.append(clip)
        counts.append(n)
        starts.append(last)
    for clip, why in skipped.items():
        LOG.warning("training data: skipping %s: %s", clip, why)
    if not kept:
        raise ValueError(f"none of the {len(candidates)} clips is usable: {skipped}")
    return ClipSet(kept, counts, starts, skipped)
