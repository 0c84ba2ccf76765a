"""The H.264 (libx264) settings of every file the pack writes: quality (CRF) and speed (preset), with their defaults.

Kept apart from `video_io` (which imports PyAV) so that ComfyUI node definitions can offer them without it.
"""
from __future__ import annotations

DEFAULT_CRF = 18  # visually lossless for most footage; 0 = lossless, 51 = worst
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
DEFAULT_PRESET = "medium"  # libx264's own default: a file written with it is what no preset gave before
FAST_PRESET = "veryfast"  # what a command-line or batch run uses by default: measured on 1080p frames at CRF 18, about
# half the encode time of "medium" for a file of the same size (superfast / ultrafast: faster still, files 1.7x / 2.5x
# larger)


def check_settings(crf: int, preset: str) -> tuple[int, str]:
    """(crf, preset) when valid; otherwise ValueError naming the allowed values."""
    if isinstance(crf, bool) or not isinstance(crf, int) and not (isinstance(crf, float) and crf.is_integer()):
        raise ValueError(f"crf must be a whole number in [0, 51], got {crf!r}")
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    if preset not in PRESETS:
        raise ValueError(f"unknown x264 preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return int(crf), preset
