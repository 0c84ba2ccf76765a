"""Parity: frame <-> whisper-token windowing against golden_audio.pt (exact)."""
from __future__ import annotations

import torch

from ..audio.windows import (
    crop_overlap_audio_window,
    frame_audio_windows,
    official_feature2chunks,
    window_indices,
)
from .report import Comparison, compare, load_fixture


def check(path) -> list[Comparison]:
    """Every case's chunks and selected indices, and the training crop, must match exactly (pure indexing)."""
    fx = load_fixture(path)
    feat_len = tuple(fx.get("params", {}).get("audio_feat_length", (2, 2)))
    results: list[Comparison] = []
    for name, case in fx["cases"].items():
        feats, fps = case["feature_array"], case["fps"]
        chunks = official_feature2chunks(feats, fps, audio_feat_length=feat_len)
        results.append(compare(f"{name}.chunks", chunks, case["chunks"], 0.0))
        idx = window_indices(feats.shape[0], fps, chunks.shape[0], audio_feat_length=feat_len)
        results.append(compare(f"{name}.selected_idx", idx, case["selected_idx"], 0.0))

    crop = fx.get("crop_overlap_audio_window")
    if crop is not None:
        feats = fx["cases"][crop["feature_array_case"]]["feature_array"]
        num_frames = int(crop.get("num_frames", 16))
        if feat_len == (2, 2):
            out = crop_overlap_audio_window(feats, int(crop["start_index"]), num_frames)
        else:
            out = frame_audio_windows(feats, 25, num_frames, int(crop["start_index"]), feat_len)
        results.append(compare("crop_overlap_audio_window", out, crop["output"], 0.0))
    return results
