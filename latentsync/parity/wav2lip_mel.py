"""Parity: the Wav2Lip mel front end against golden_wav2lip_mel.pt (float64 numpy path, atol 1e-9)."""
from __future__ import annotations

import numpy as np
import torch

from ..audio.wav2lip_mel import (
    MelConfig,
    crop_mel_window,
    last_valid_start_frame,
    mel_basis,
    mel_start_index,
    melspectrogram,
    preemphasize,
    stft_magnitude,
)
from .report import Comparison, compare, load_fixture

TOL = 1e-9


def _config(audio_config: dict) -> MelConfig:
    c = audio_config
    return MelConfig(sample_rate=int(c["sample_rate"]), n_fft=int(c["n_fft"]), hop_size=int(c["hop_size"]),
                     win_size=int(c["win_size"]), num_mels=int(c["num_mels"]), fmin=float(c["fmin"]),
                     fmax=float(c["fmax"]), preemphasis=float(c["preemphasis"]),
                     min_level_db=float(c["min_level_db"]), ref_level_db=float(c["ref_level_db"]),
                     max_abs_value=float(c["max_abs_value"]))


def check(path) -> list[Comparison]:
    fx = load_fixture(path)
    cfg = _config(fx["audio_config"])
    wav = fx["waveform"].numpy()
    pre = preemphasize(wav, cfg.preemphasis)
    results = [
        compare("preemphasized", torch.from_numpy(pre), fx["preemphasized"], TOL),
        compare("mel_basis", torch.from_numpy(np.array(mel_basis(cfg))), fx["mel_basis"], 0.0),
        compare("stft_magnitude", torch.from_numpy(stft_magnitude(pre, cfg)), fx["stft_magnitude"], TOL),
    ]
    mel = melspectrogram(wav, cfg)
    results.append(compare("mel", mel, fx["mel"], TOL))
    results.append(Comparison("mel_dtype_float64", float(mel.dtype != fx["mel"].dtype), 0.0))
    w = fx["window"]
    results.append(compare("window.output", crop_mel_window(mel, int(w["start_frame"]), int(w["num_frames"]),
                                                            float(w["fps"])), w["output"], TOL))
    results.append(compare("window.mel_start_idx", torch.tensor(mel_start_index(int(w["start_frame"]),
                                                                                float(w["fps"]))),
                           torch.tensor(int(w["mel_start_idx"])), 0.0))
    table = fx["window_start_idx_table"]
    starts = table["start_frames"].tolist()
    results.append(compare("window_start_idx_table.mel_start_idx",
                           torch.tensor([mel_start_index(s, float(w["fps"])) for s in starts]),
                           table["mel_start_idx"], 0.0))
    last = last_valid_start_frame(mel.shape[1], int(w["num_frames"]), float(w["fps"]))
    results.append(compare("window_start_idx_table.valid_start_frames", torch.arange(last + 1),
                           table["valid_start_frames"], 0.0))
    return results
