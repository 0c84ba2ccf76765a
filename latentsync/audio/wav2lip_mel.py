"""Wav2Lip mel spectrogram: the audio input of StableSyncNet (official `latentsync.utils.audio.melspectrogram`).

16 kHz waveform -> pre-emphasis (0.97) -> STFT (n_fft 800, hop 200, periodic Hann, centred with zero padding) ->
|.| -> 80 Slaney mel bands (55 - 7600 Hz, Slaney-normalised) -> dB (floor 1e-5) - 20 -> symmetric normalisation to
[-4, 4]. 80 mel frames per second. Written in numpy/scipy with librosa 0.10's exact semantics (float64 throughout,
the mel basis rounded to float32 as librosa builds it), so no librosa dependency.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy.signal import lfilter


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16000
    n_fft: int = 800
    hop_size: int = 200
    win_size: int = 800
    num_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0


DEFAULT = MelConfig()
MEL_FRAMES_PER_SECOND = DEFAULT.sample_rate / DEFAULT.hop_size  # 80


def _hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    freqs = np.asanyarray(freqs, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = freqs / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(freqs >= min_log_hz, min_log_mel + np.log(np.maximum(freqs, 1e-300) / min_log_hz) / logstep,
                    mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asanyarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


@lru_cache(maxsize=8)
def mel_basis(cfg: MelConfig = DEFAULT) -> np.ndarray:
    """float32 (num_mels, 1 + n_fft // 2) triangular Slaney filters with Slaney (area) normalisation."""
    n_bins = 1 + cfg.n_fft // 2
    fft_freqs = np.fft.rfftfreq(cfg.n_fft, 1.0 / cfg.sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.num_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((cfg.num_mels, n_bins), dtype=np.float32)  # librosa's float32 accumulator
    for i in range(cfg.num_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:cfg.num_mels + 2] - mel_f[:cfg.num_mels])
    weights *= enorm[:, np.newaxis]
    weights.setflags(write=False)
    return weights


def _hann_periodic(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def stft_magnitude(signal: np.ndarray, cfg: MelConfig = DEFAULT) -> np.ndarray:
    """float64 (1 + n_fft // 2, 1 + len // hop) |STFT|, centred frames with zero padding of n_fft // 2."""
    if cfg.win_size != cfg.n_fft:
        raise ValueError("win_size != n_fft is not supported")
    pad = cfg.n_fft // 2
    padded = np.pad(np.asarray(signal, dtype=np.float64), (pad, pad), mode="constant")
    n_frames = 1 + (padded.shape[0] - cfg.n_fft) // cfg.hop_size
    frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[::cfg.hop_size][:n_frames]
    spectrum = np.fft.rfft(frames * _hann_periodic(cfg.n_fft), axis=-1)
    return np.abs(spectrum).T


def preemphasize(waveform: np.ndarray, k: float = DEFAULT.preemphasis) -> np.ndarray:
    return lfilter([1, -k], [1], np.asarray(waveform))


def melspectrogram(waveform, cfg: MelConfig = DEFAULT) -> torch.Tensor:
    """16 kHz mono waveform (S,) -> float64 tensor (80, 1 + S // 200) in [-4, 4]."""
    wav = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    if wav.ndim != 1 or wav.size == 0:
        raise ValueError(f"waveform must be a non-empty 1-D array, got shape {wav.shape}")
    magnitude = stft_magnitude(preemphasize(wav, cfg.preemphasis), cfg)
    mel = np.dot(mel_basis(cfg), magnitude)
    min_level = np.exp(cfg.min_level_db / 20 * np.log(10))
    db = 20 * np.log10(np.maximum(min_level, mel)) - cfg.ref_level_db
    m = cfg.max_abs_value
    out = np.clip((2 * m) * ((db - cfg.min_level_db) / (-cfg.min_level_db)) - m, -m, m)
    return torch.from_numpy(out)


def mel_window_length(num_frames: int = 16) -> int:
    """Mel frames covering `num_frames` video frames at 25 fps: ceil(num_frames / 5 * 16) (52 for 16)."""
    return math.ceil(num_frames / 5 * 16)


def mel_start_index(start_frame: int, fps: float = 25.0) -> int:
    """First mel frame of video frame `start_frame` (official truncation `int(80 * start / fps)`)."""
    return int(80.0 * (start_frame / float(fps)))


def crop_mel_window(mel: torch.Tensor, start_frame: int, num_frames: int = 16, fps: float = 25.0) -> torch.Tensor:
    """Training window (1, 80, L) of the mel for the frames start_frame .. +num_frames (official
    `crop_audio_window`); shorter than L at the end of the clip (callers skip such starts)."""
    start = mel_start_index(start_frame, fps)
    return mel[:, start:start + mel_window_length(num_frames)].unsqueeze(0)


def last_valid_start_frame(mel_frames: int, num_frames: int = 16, fps: float = 25.0) -> int:
    """Largest start frame whose mel window is complete (-1 if none)."""
    length = mel_window_length(num_frames)
    s = -1
    while mel_start_index(s + 1, fps) + length <= mel_frames:
        s += 1
    return s
