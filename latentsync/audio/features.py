"""Whisper features of a clip of any length, computed one 30-s Whisper window at a time as frames ask for them.

`WhisperAudioEncoder.features` computes the log-mel of the whole clip and every window at once (memory grows with
the audio: about 0.4 MB per second for whisper-tiny). `AudioFeatureStream` gives the same features (within float
rounding: the same log-mel, normalised by the maximum of the whole clip as openai-whisper does) while holding only
the windows in use: the short-time Fourier transform is computed per segment with exactly the samples (and the
reflection at the ends of the clip) that the whole-clip transform uses, once per window (the log-mel is kept: the
clip's maximum normalises every window).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from whisper.audio import N_FFT, mel_filters

from .whisper_encoder import HOP_LENGTH, TOKENS_PER_WINDOW, WINDOW_MEL_FRAMES, WhisperAudioEncoder
from .windows import AUDIO_FEAT_LENGTH, window_indices_at

MIN_STREAM_SAMPLES = 3 * HOP_LENGTH  # shorter clips are padded with silence (one token needs 2 hops; reflect needs N_FFT/2)


class AudioFeatureStream:
    """`windows_at(ticks, base)`: the (F, 50, 384) audio condition of frames starting at `ticks / base` seconds.

    waveform_16k: (S,) mono float32 at 16 kHz (shorter than 3 hops: padded with silence). Frames past the end of the
    audio get the last tokens (clamped, as the official code).
    """

    def __init__(self, encoder: WhisperAudioEncoder, waveform_16k: torch.Tensor, cache_windows: int = 2):
        wave = torch.as_tensor(waveform_16k, dtype=torch.float32).flatten().cpu()
        if wave.numel() == 0:
            raise ValueError("the audio is empty (0 samples)")
        if not torch.isfinite(wave).all():
            raise ValueError("the audio contains NaN or infinite samples")
        if wave.numel() < MIN_STREAM_SAMPLES:
            wave = F.pad(wave, (0, MIN_STREAM_SAMPLES - wave.numel()))
        self.encoder = encoder
        self.wave = wave
        self.mel_frames = wave.numel() // HOP_LENGTH
        self.num_windows = -(-self.mel_frames // WINDOW_MEL_FRAMES)
        last = self.mel_frames - (self.num_windows - 1) * WINDOW_MEL_FRAMES
        self.num_tokens = (self.num_windows - 1) * TOKENS_PER_WINDOW + last // 2
        self._filters = mel_filters("cpu", encoder.n_mels)
        self._window = torch.hann_window(N_FFT)
        self._cache: dict[int, torch.Tensor] = {}
        self._cache_windows = max(1, int(cache_windows))
        # The STFT is computed once: the log-mel of every window is kept (about 1 MB per 30 s, a quarter of the
        # 16 kHz waveform itself), since the clip's maximum is needed before any window can be normalised.
        self._mels = [self._log_mel(a, min(a + WINDOW_MEL_FRAMES, self.mel_frames))
                      for a in range(0, self.mel_frames, WINDOW_MEL_FRAMES)]
        self.log_max = max(float(mel.max()) for mel in self._mels)

    def _log_mel(self, start: int, stop: int) -> torch.Tensor:
        """log10 mel power of mel frames start..stop-1 (n_mels, stop-start): frame k is the STFT frame centred on
        sample k*160 of the clip reflected at both ends, as `torch.stft(center=True)` of the whole clip."""
        s = self.wave.numel()
        half = N_FFT // 2
        idx = torch.arange(start * HOP_LENGTH - half, (stop - 1) * HOP_LENGTH + half)
        idx = torch.where(idx < 0, -idx, idx)
        idx = torch.where(idx >= s, 2 * (s - 1) - idx, idx)
        stft = torch.stft(self.wave[idx], N_FFT, HOP_LENGTH, window=self._window, center=False, return_complex=True)
        mel = self._filters @ (stft.abs() ** 2)
        return torch.clamp(mel, min=1e-10).log10()

    @torch.no_grad()
    def window_features(self, w: int) -> torch.Tensor:
        """(tokens of window w, L+1, D) float32: the Whisper hidden states of 30-s window `w`."""
        if w in self._cache:
            return self._cache[w]
        a = w * WINDOW_MEL_FRAMES
        b = min(a + WINDOW_MEL_FRAMES, self.mel_frames)
        mel = self._mels[w]
        mel = (torch.maximum(mel, torch.tensor(self.log_max - 8.0)) + 4.0) / 4.0
        mel = F.pad(mel, (0, WINDOW_MEL_FRAMES - (b - a)))
        enc = self.encoder
        states = enc._hidden_states(mel[None].to(enc.device, enc.dtype))[0]  # (L+1, 1500, D)
        feats = states[:, : (b - a) // 2].transpose(0, 1).float().cpu()
        if len(self._cache) >= self._cache_windows:
            self._cache.pop(next(iter(self._cache)))
        self._cache[w] = feats
        return feats

    def tokens(self, index: torch.Tensor) -> torch.Tensor:
        """Features of token indices (any shape, each in [0, num_tokens)): (*index.shape, L+1, D)."""
        flat = index.flatten().long()
        out = None
        windows = torch.div(flat, TOKENS_PER_WINDOW, rounding_mode="floor")
        for w in windows.unique().tolist():
            sel = windows == w
            feats = self.window_features(int(w))
            part = feats[flat[sel] - w * TOKENS_PER_WINDOW]
            if out is None:
                out = torch.empty((flat.numel(), *feats.shape[1:]), dtype=feats.dtype)
            out[sel] = part
        return out.reshape(*index.shape, *out.shape[1:])

    def windows_at(self, ticks, base: int, audio_feat_length: tuple[int, int] = AUDIO_FEAT_LENGTH) -> torch.Tensor:
        """(F, 10*(L+1), D) for frames starting at ticks/base s: tokens centre-4..centre+5, centre = floor(50 t)."""
        idx = window_indices_at(self.num_tokens, ticks, base, audio_feat_length)
        gathered = self.tokens(idx)  # (F, 10, L+1, D)
        return gathered.reshape(idx.shape[0], -1, gathered.shape[-1])

