"""Lip-sync evaluation with SyncNet-v2 (LSE-C confidence, LSE-D distance, audio-video offset), as the official
LatentSync / syncnet_python evaluation computes them. Plain PyTorch; ``python -m latentsync.eval sync VIDEO``."""
from ..lazy import lazy_exports

_MODULES = {
    ".mfcc": ("MfccFrontEnd", "mfcc", "to_pcm16"),
    ".score": ("SyncScore", "SyncScoreError", "SyncScorer", "score_sync"),
    ".sweep": ("DistanceSweep", "distance_rows", "framewise_confidence", "sweep_figures"),
    ".syncnet_v2": ("SyncNetLoadError", "SyncNetV2", "load_syncnet_v2", "read_syncnet_v2_state_dict"),
}
__all__ = sorted(name for names in _MODULES.values() for name in names)
__getattr__ = lazy_exports(__name__, _MODULES)
