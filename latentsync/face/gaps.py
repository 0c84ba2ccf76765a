"""Short gaps in face detection are bridged by interpolating the alignment points; long gaps pass through.

A detector misses a face now and then for a frame or two (motion blur, a hand, a blink of the detector). Passing
those frames through unchanged makes the mouth flicker back to the original for a frame. `GapBridger` sees the
per-frame detections in order and, for a run of at most `max_gap` frames without a face between two frames with
one, gives each missing frame alignment points linearly interpolated between the two detections (status
BRIDGED). Longer runs, and runs at the start or end of the video (nothing to interpolate towards), pass through
(status NONE). A frame is final once the bridger knows how its gap ends, i.e. at most `max_gap + 1` frames later:
that is the look-ahead the streaming pipeline keeps.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

NONE, FACE, BRIDGED = 0, 1, 2
STATUS_NAMES = {NONE: "passed_through", FACE: "detected", BRIDGED: "bridged"}
DEFAULT_MAX_GAP = 5


@dataclass(frozen=True)
class FrameAlignment:
    """The outcome for one frame: its index, status (NONE / FACE / BRIDGED), alignment points (3, 2) or None,
    and the detection box (4,) or None (a bridged frame's box is interpolated too)."""

    index: int
    status: int
    points3: np.ndarray | None
    bbox: np.ndarray | None


class GapBridger:
    """push(index, points3 | None, bbox | None) frame by frame, in order; each call yields the frames that became
    final. finish() yields the rest (a trailing gap passes through)."""

    def __init__(self, max_gap: int = DEFAULT_MAX_GAP):
        if max_gap < 0:
            raise ValueError(f"max_gap must be >= 0, got {max_gap}")
        self.max_gap = int(max_gap)
        self._last: FrameAlignment | None = None  # the last frame with a detection
        self._pending: list[int] = []  # frames without a face since then (not yet final)
        self._next = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def push(self, index: int, points3, bbox=None) -> Iterator[FrameAlignment]:
        if index != self._next:
            raise ValueError(f"frames must be pushed in order: expected {self._next}, got {index}")
        self._next += 1
        if points3 is None:
            if self._last is None or len(self._pending) >= self.max_gap:
                yield from self._flush_pending()  # this gap is already too long (or has no start): pass through
                yield FrameAlignment(index, NONE, None, None)
                self._last = None  # later frames of this gap pass through at once; the next face starts afresh
                return
            self._pending.append(index)
            return
        current = FrameAlignment(index, FACE, np.asarray(points3, dtype=np.float64),
                                 None if bbox is None else np.asarray(bbox, dtype=np.float64))
        if self._pending:  # pending frames exist only after a detection, in a gap of at most max_gap
            yield from self._bridge(self._last, current)
        self._last = current
        yield current

    def finish(self) -> Iterator[FrameAlignment]:
        yield from self._flush_pending()

    def _flush_pending(self) -> Iterator[FrameAlignment]:
        pending, self._pending = self._pending, []
        for i in pending:
            yield FrameAlignment(i, NONE, None, None)

    def _bridge(self, a: FrameAlignment, b: FrameAlignment) -> Iterator[FrameAlignment]:
        pending, self._pending = self._pending, []
        span = b.index - a.index
        for i in pending:
            w = (i - a.index) / span
            points = (1.0 - w) * a.points3 + w * b.points3
            bbox = None if a.bbox is None or b.bbox is None else (1.0 - w) * a.bbox + w * b.bbox
            yield FrameAlignment(i, BRIDGED, points, bbox)


def bridge_gaps(points: list, max_gap: int = DEFAULT_MAX_GAP) -> list[FrameAlignment]:
    """The whole sequence at once (points3 or None per frame) -> one FrameAlignment per frame, in order."""
    bridger = GapBridger(max_gap)
    out: list[FrameAlignment] = []
    for i, p in enumerate(points):
        out.extend(bridger.push(i, p))
    out.extend(bridger.finish())
    return sorted(out, key=lambda f: f.index)


def ranges(flags: np.ndarray) -> list[list[int]]:
    """[[start, stop), ...] of the runs where `flags` is true."""
    flags = np.asarray(flags, dtype=bool)
    if flags.size == 0:
        return []
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return [[int(a), int(b)] for a, b in zip(starts, stops)]
