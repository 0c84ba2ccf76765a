"""25 fps sampling of a video at any frame rate, frame by frame (for streaming), as ffmpeg's ``fps=25`` filter.

SyncNet-v2 was trained on 25 fps video (4 MFCC frames per video frame) and the official evaluation re-encodes every
input with ``ffmpeg -r 25``. We pick frames instead of re-encoding: output frame k (the instant k / 25 s) shows the
last source frame whose timestamp, rounded to the 25 fps grid, is not after k — ffmpeg's default ``round=near`` rule:

    source(k) = ceil((k + 1/2) · fps / 25) − 1

so frames are duplicated for slower inputs (15 fps: 0 0 1 2 2 3 …) and dropped for faster ones, with no blending. A
video of N frames gives the k with source(k) < N (N · 25 / fps frames, rounded to nearest). Constant frame rate
assumed (the average rate of the stream).
"""
from __future__ import annotations

import math
from fractions import Fraction

from ..audio.windows import as_fraction

TARGET_FPS = 25


def source_index(k: int, fps: Fraction, target: int = TARGET_FPS) -> int:
    """Source frame shown at output frame ``k`` of the ``target`` fps sequence."""
    return math.ceil(Fraction(2 * k + 1, 2) * fps / target) - 1


def num_target_frames(num_source: int, fps: Fraction, target: int = TARGET_FPS) -> int:
    """How many ``target`` fps frames ``num_source`` frames at ``fps`` give."""
    if num_source <= 0:
        return 0
    # largest k with source_index(k) <= num_source - 1  <=>  (k + 1/2)·fps/target <= num_source
    return math.floor(Fraction(num_source) * target / fps - Fraction(1, 2)) + 1


class FrameRateSampler:
    """Tells, as source frames arrive, which 25 fps frames they provide: ``extend(n)`` -> [(k, source index), ...]."""

    def __init__(self, fps, target: int = TARGET_FPS):
        self.fps = as_fraction(fps)
        if self.fps <= 0:
            raise ValueError(f"frame rate must be positive, got {fps}")
        self.target = target
        self.seen = 0  # source frames received
        self.next_k = 0  # next output frame

    def extend(self, count: int) -> list[tuple[int, int]]:
        self.seen += count
        out = []
        while (j := source_index(self.next_k, self.fps, self.target)) < self.seen:
            out.append((self.next_k, j))
            self.next_k += 1
        return out
