"""Lip-sync evaluation with SyncNet-v2 (LSE-C confidence, LSE-D distance, audio-video offset), as the official
LatentSync / syncnet_python evaluation computes them. Plain PyTorch; ``python -m latentsync.eval sync VIDEO``."""
from .mfcc import MfccFrontEnd, mfcc, to_pcm16
from .score import SyncScore, SyncScoreError, SyncScorer, score_sync
from .sweep import DistanceSweep, distance_rows, framewise_confidence, sweep_figures
from .syncnet_v2 import SyncNetLoadError, SyncNetV2, load_syncnet_v2, read_syncnet_v2_state_dict

__all__ = [
    "DistanceSweep", "MfccFrontEnd", "SyncNetLoadError", "SyncNetV2", "SyncScore", "SyncScoreError", "SyncScorer",
    "distance_rows", "framewise_confidence", "load_syncnet_v2", "mfcc", "read_syncnet_v2_state_dict", "score_sync",
    "sweep_figures", "to_pcm16",
]
