"""Parity: whisper feature extraction against golden_whisper.pt (log-mel, (T, L+1, D) features, frame chunks)."""
from __future__ import annotations

import re

import torch

from ..audio.whisper_encoder import WhisperAudioEncoder
from ..audio.windows import official_feature2chunks, official_num_chunks
from .report import Comparison, compare, load_fixture

LOG_MEL_TOL = 1e-4  # golden README: the STFT's float32 rounding differs between CPUs (1.4e-5 on AMX)
FEATURE_TOL = 1e-4  # README tolerance: attention/matmul kernels reorder sums


def check(path) -> list[Comparison]:
    """Rebuild the fixture's encoder (CPU fp32), recompute everything from its waveform and compare."""
    fx = load_fixture(path)
    encoder = WhisperAudioEncoder.from_state_dict(fx["dims"], fx["encoder_state_dict"], "cpu", torch.float32)
    waveform = fx["waveform"]
    results = [compare("log_mel", encoder.log_mel(waveform), fx["log_mel"], LOG_MEL_TOL)]
    features = encoder.features(waveform)
    results.append(compare("features", features, fx["features"], FEATURE_TOL))

    fps_keys = [(k, int(m.group(1))) for k in fx if (m := re.fullmatch(r"num_chunks_fps(\d+)", k))]
    for key, fps in fps_keys:
        n = official_num_chunks(features.shape[0], fps)
        results.append(compare(key, torch.tensor(n), torch.tensor(int(fx[key])), 0.0))
    chunk_fps = fps_keys[0][1] if len(fps_keys) == 1 else 25
    if "first_chunks" in fx or "last_chunks" in fx:
        chunks = official_feature2chunks(features, chunk_fps)
        if "first_chunks" in fx:
            n_first = fx["first_chunks"].shape[0]
            results.append(compare("first_chunks", chunks[:n_first], fx["first_chunks"], FEATURE_TOL))
        if "last_chunks" in fx:
            n_last = fx["last_chunks"].shape[0]
            results.append(compare("last_chunks", chunks[chunks.shape[0] - n_last :], fx["last_chunks"], FEATURE_TOL))
    return results
