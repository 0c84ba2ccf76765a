"""The SyncNet-v2 audio front end: 13 MFCCs at 100 Hz, as ``python_speech_features.mfcc(signal, 16000)`` computes them.

The official evaluation extracts 16 kHz mono **pcm_s16le** audio with ffmpeg and feeds the raw int16 values (not
scaled to [-1, 1]) to ``python_speech_features.mfcc`` with its defaults: 25 ms frames (400 samples) every 10 ms (160),
no window function, pre-emphasis 0.97, 512-point power spectrum, 26 triangular mel filters from 0 Hz to 8 kHz, log,
orthonormal DCT-II, 13 cepstra, sinusoidal lifter 22, and c0 replaced by the log frame energy. The last frame is
zero-padded. This module computes the same in float64 numpy, for any range of frames, so a long recording is
processed window by window instead of framing the whole signal at once.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..audio.resample import to_mono_16k

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms
FRAME_STEP = 160  # 10 ms -> 100 MFCC frames per second, 4 per video frame at 25 fps
NFFT = 512
NUM_FILTERS = 26
NUM_CEPSTRA = 13
PREEMPHASIS = 0.97
LIFTER = 22
_EPS = np.finfo(float).eps


def to_pcm16(waveform, sample_rate) -> np.ndarray:
    """Any waveform ((C, S) or (S,), any rate) -> 16 kHz mono int16, as ``ffmpeg -ac 1 -ar 16000 -acodec pcm_s16le``
    writes it (float x -> round(x * 32768), clipped to the int16 range)."""
    mono = to_mono_16k(waveform, sample_rate).double().numpy()
    return np.clip(np.rint(mono * 32768.0), -32768, 32767).astype(np.int16)


def num_mfcc_frames(num_samples: int) -> int:
    """Frames python_speech_features makes of ``num_samples`` samples (the last one zero-padded)."""
    if num_samples <= FRAME_LENGTH:
        return 1
    return 1 + math.ceil((num_samples - FRAME_LENGTH) / FRAME_STEP)


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(num_filters: int = NUM_FILTERS, nfft: int = NFFT, sample_rate: int = SAMPLE_RATE,
                   low_hz: float = 0.0, high_hz: float | None = None) -> np.ndarray:
    """(num_filters, nfft // 2 + 1) triangles between mel-spaced FFT bins; bins are ``floor((nfft + 1) * f / sr)``
    (python_speech_features' rule, which makes adjacent triangles share integer edges)."""
    high_hz = sample_rate / 2 if high_hz is None else high_hz
    mels = np.linspace(_hz_to_mel(low_hz), _hz_to_mel(high_hz), num_filters + 2)
    edges = np.floor((nfft + 1) * _mel_to_hz(mels) / sample_rate)
    bank = np.zeros((num_filters, nfft // 2 + 1))
    for j in range(num_filters):
        lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
        rise = np.arange(int(lo), int(mid))
        bank[j, rise] = (rise - lo) / (mid - lo)
        fall = np.arange(int(mid), int(hi))
        bank[j, fall] = (hi - fall) / (hi - mid)
    return bank


def dct2_ortho(n: int, keep: int) -> np.ndarray:
    """(keep, n) matrix of the orthonormal DCT-II (first ``keep`` rows)."""
    k = np.arange(keep)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * k * (2 * i + 1) / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


_FILTERBANK = mel_filterbank()
_DCT = dct2_ortho(NUM_FILTERS, NUM_CEPSTRA)
_LIFT = 1.0 + (LIFTER / 2.0) * np.sin(np.pi * np.arange(NUM_CEPSTRA) / LIFTER)


class MfccFrontEnd:
    """MFCCs of one 16 kHz signal, computed for any range of frames on request.

    ``signal``: 1-D samples at 16 kHz — int16 PCM (the official input; raw magnitudes are used as they are) or floats
    on the same scale. ``frames(a, b)`` equals ``python_speech_features.mfcc(signal, 16000).T[:, a:b]``.
    """

    def __init__(self, signal: np.ndarray | torch.Tensor):
        x = signal.numpy() if isinstance(signal, torch.Tensor) else np.asarray(signal)
        if x.ndim != 1:
            raise ValueError(f"signal must be 1-D samples, got shape {x.shape}")
        self.signal = x
        self.num_frames = num_mfcc_frames(x.shape[0])

    def frames(self, start: int, stop: int) -> np.ndarray:
        """(13, stop - start) float64 MFCCs of frames ``start .. stop - 1``."""
        if not 0 <= start <= stop <= self.num_frames:
            raise IndexError(f"MFCC frames {start}..{stop} outside 0..{self.num_frames}")
        count = stop - start
        if count == 0:
            return np.zeros((NUM_CEPSTRA, 0))
        first = start * FRAME_STEP
        last = (stop - 1) * FRAME_STEP + FRAME_LENGTH  # exclusive end of the last frame
        # pre-emphasis y[n] = x[n] - 0.97 x[n-1] (y[0] = x[0]) needs one sample before the range
        lead = 1 if first > 0 else 0
        x = self.signal[first - lead : last].astype(np.float64)
        y = x[lead:] - PREEMPHASIS * x[:-1] if lead else np.concatenate([x[:1], x[1:] - PREEMPHASIS * x[:-1]])
        if y.shape[0] < last - first:  # the zero padding after the end of the signal
            y = np.concatenate([y, np.zeros(last - first - y.shape[0])])
        framed = np.lib.stride_tricks.sliding_window_view(y, FRAME_LENGTH)[::FRAME_STEP][:count]
        power = np.square(np.abs(np.fft.rfft(framed, NFFT))) / NFFT
        energy = power.sum(axis=1)
        energy = np.where(energy == 0, _EPS, energy)
        bands = power @ _FILTERBANK.T
        bands = np.where(bands == 0, _EPS, bands)
        cepstra = (np.log(bands) @ _DCT.T) * _LIFT
        cepstra[:, 0] = np.log(energy)
        return cepstra.T


def mfcc(signal: np.ndarray | torch.Tensor) -> np.ndarray:
    """(13, T) float64 MFCCs of a whole 16 kHz signal (``python_speech_features.mfcc`` transposed)."""
    front = MfccFrontEnd(signal)
    return front.frames(0, front.num_frames)
