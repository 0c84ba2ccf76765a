"""Video frame <-> Whisper token mapping (official `Audio2Feature.feature2chunks` / `get_sliced_feature`).

Whisper features run at 50 tokens per second. Frame `i` of a video at `fps` is centred on token
`center = int(i * 50 / fps)` and sees the 10 tokens `center-4 .. center+5` (clamped to `[0, T-1]`), i.e. 200 ms.
The (10, L+1, D) slice is flattened time-major / layer-minor to (10*(L+1), D) = (50, 384) for whisper-tiny.

Frame rates are handled as exact fractions so that `int(i * 50 / fps)` never falls on the wrong side of an
integer through float rounding (see `as_fraction` for how floats such as 29.97 are read).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

TOKENS_PER_SECOND = 50
AUDIO_FEAT_LENGTH = (2, 2)  # official config: 2 frames (= 4 tokens) left, 2 frames (+ the centre) right

# NTSC-family rates are N*1000/1001; video containers report them exactly, people write 23.976 / 29.97 / 59.94.
_NTSC_RATES = tuple(Fraction(n * 1000, 1001) for n in (24, 30, 48, 60, 120))
_NTSC_SNAP = 0.005


def as_fraction(fps: int | float | Fraction) -> Fraction:
    """Frame rate as an exact fraction.

    `Fraction` and `int` are kept as they are. A float within 0.005 of an NTSC rate N*1000/1001 (23.976, 29.97,
    59.94, ...) is read as that rate: a float 29.97 almost always stands for 30000/1001 (the rate PyAV reports as a
    Fraction), and 30000/1001 is what the frames really are. Any other float is read as the nearest fraction with a
    denominator <= 1001 (25.0 -> 25, 12.5 -> 25/2).
    """
    if isinstance(fps, bool):
        raise TypeError("fps must be a number, got bool")
    if isinstance(fps, float):
        if not math.isfinite(fps):
            raise ValueError(f"fps must be finite, got {fps}")
        for rate in _NTSC_RATES:
            if abs(fps - float(rate)) < _NTSC_SNAP:
                return rate
        fps = Fraction(fps).limit_denominator(1001)
    else:
        fps = Fraction(fps)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return fps


def frame_centers(fps: int | float | Fraction, num_frames: int, start_frame: int = 0) -> torch.Tensor:
    """(F,) int64 centre token of frames start_frame .. start_frame+F-1: floor(i * 50 / fps), exact."""
    rate = as_fraction(fps)
    i = torch.arange(start_frame, start_frame + num_frames, dtype=torch.int64)
    return torch.div(i * (TOKENS_PER_SECOND * rate.denominator), rate.numerator, rounding_mode="floor")


def window_indices(
    num_tokens: int,
    fps: int | float | Fraction,
    num_frames: int,
    start_frame: int = 0,
    audio_feat_length: tuple[int, int] = AUDIO_FEAT_LENGTH,
) -> torch.Tensor:
    """(F, 2*(left+right+1)) int64 token indices of each frame's window, clamped to [0, num_tokens-1]."""
    _check_counts(num_tokens, num_frames, start_frame)
    rate = as_fraction(fps)
    ticks = torch.arange(start_frame, start_frame + num_frames, dtype=torch.int64) * rate.denominator
    return window_indices_at(num_tokens, ticks, rate.numerator, audio_feat_length)


def window_indices_at(num_tokens: int, ticks, base: int,
                      audio_feat_length: tuple[int, int] = AUDIO_FEAT_LENGTH) -> torch.Tensor:
    """(F, 2*(left+right+1)) token indices of frames starting at `ticks / base` seconds, clamped to the tokens.

    For a constant rate p/q (ticks i*q, base p) this is `windows.window_indices` exactly."""
    if num_tokens < 1:
        raise ValueError(f"need at least one audio token, got {num_tokens}")
    ticks = torch.as_tensor(np.asarray(ticks, dtype=np.int64)) if not torch.is_tensor(ticks) else ticks.long()
    centers = torch.div(ticks * TOKENS_PER_SECOND, int(base), rounding_mode="floor")
    left, right = audio_feat_length
    offsets = torch.arange(-2 * left, 2 * (right + 1), dtype=torch.int64)
    return (centers[:, None] + offsets[None, :]).clamp_(0, num_tokens - 1)


def frame_audio_windows(
    features: torch.Tensor,
    fps: int | float | Fraction,
    num_frames: int,
    start_frame: int = 0,
    audio_feat_length: tuple[int, int] = AUDIO_FEAT_LENGTH,
) -> torch.Tensor:
    """Audio context of each video frame.

    features: (T, L+1, D) whisper hidden states (T tokens at 50 Hz). Returns (F, 10*(L+1), D) for frames
    start_frame .. start_frame+F-1 (= (F, 50, 384) for whisper-tiny); token k = time k // (L+1), layer k % (L+1).
    Frames past the end of the audio repeat the last tokens (clamping), like the official code.
    """
    _check_features(features)
    idx = window_indices(features.shape[0], fps, num_frames, start_frame, audio_feat_length)
    gathered = features[idx.to(features.device)]  # (F, 10, L+1, D)
    return gathered.reshape(num_frames, -1, features.shape[-1])


def official_num_chunks(num_tokens: int, fps: int | float | Fraction) -> int:
    """Length of the official `feature2chunks` list: frames are appended up to and including the first i with
    int(i * 50 / fps) > T, i.e. i = ceil((T+1) * fps / 50), so the count is that + 1 (floor(T/2) + 2 at 25 fps)."""
    if num_tokens < 1:
        raise ValueError(f"need at least one audio token, got {num_tokens}")
    rate = as_fraction(fps)
    first_past_end = -(-(num_tokens + 1) * rate.numerator // (TOKENS_PER_SECOND * rate.denominator))
    return first_past_end + 1


def official_feature2chunks(
    features: torch.Tensor,
    fps: int | float | Fraction,
    audio_feat_length: tuple[int, int] = AUDIO_FEAT_LENGTH,
) -> torch.Tensor:
    """The official `feature2chunks(features, fps)` stacked: (N, 10*(L+1), D), N = `official_num_chunks(T, fps)`.

    The official pipeline uses N as its output video length (two frames more than the audio at 25 fps).
    """
    _check_features(features)
    n = official_num_chunks(features.shape[0], fps)
    return frame_audio_windows(features, fps, n, 0, audio_feat_length)


def crop_overlap_audio_window(features: torch.Tensor, start_index: int, num_frames: int = 16) -> torch.Tensor:
    """Training helper: windows of frames start_index .. start_index+num_frames-1 at 25 fps -> (F, 50, 384)."""
    return frame_audio_windows(features, 25, num_frames, start_index)


def num_frames_for_duration(num_samples: int, sample_rate: int, fps: int | float | Fraction) -> int:
    """Video frames covering an audio clip: round(duration * fps), halves rounded up, computed exactly."""
    if num_samples < 0 or sample_rate <= 0:
        raise ValueError(f"invalid audio length {num_samples} samples at {sample_rate} Hz")
    frames = Fraction(num_samples, sample_rate) * as_fraction(fps)
    return int(frames + Fraction(1, 2))  # int() floors for non-negative values


def _check_features(features: torch.Tensor) -> None:
    if not torch.is_tensor(features) or features.ndim != 3:
        shape = tuple(features.shape) if torch.is_tensor(features) else type(features).__name__
        raise ValueError(f"features must be a (T, layers, dim) tensor, got {shape}")
    if features.shape[0] < 1:
        raise ValueError("features are empty (T = 0 audio tokens)")


def _check_counts(num_tokens: int, num_frames: int, start_frame: int) -> None:
    if num_tokens < 1:
        raise ValueError(f"need at least one audio token, got {num_tokens}")
    if num_frames < 0 or start_frame < 0:
        raise ValueError(f"num_frames ({num_frames}) and start_frame ({start_frame}) must be >= 0")
