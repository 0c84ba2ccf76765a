"""Lip-sync evaluation with SyncNet-v2 (LSE-C confidence, LSE-D distance, audio-video offset), as the official
LatentSync / syncnet_python evaluation computes them. Plain PyTorch; ``python -m latentsync.eval sync VIDEO``."""
from ..lazy import lazy_exports
from .mfcc import MfccFrontEnd, mfcc, to_pcm16  # eager (numpy and torch only): the function `mfcc` shares its module's
# name, and a lazily exported name is shadowed by the submodule once anything imports `latentsync.eval.mfcc`

_MODULES = {
    ".score": ("SyncScore", "SyncScoreError", "SyncScorer", "score_sync"),
    ".sweep": ("DistanceSweep", "distance_rows", "framewise_confidence", "sweep_figures"),
    ".syncnet_v2": ("SyncNetLoadError", "SyncNetV2", "load_syncnet_v2", "read_syncnet_v2_state_dict"),
}
__all__ = sorted(["MfccFrontEnd", "mfcc", "to_pcm16"] + [name for names in _MODULES.values() for name in names])
__getattr__ = lazy_exports(__name__, _MODULES)
