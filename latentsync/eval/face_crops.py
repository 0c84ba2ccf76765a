"""Face tracks and the 224x224 crops SyncNet-v2 looks at, following the official ``crop_video`` of syncnet_python.

One chosen face (our detector + `FaceSelector`) is followed through the 25 fps frames. A track continues across
frames without a detection when the face is found again within ``max_gap`` (25) frames — the missing boxes are
linearly interpolated, as the official tracker does — and ends otherwise (its last frames are those up to the last
detection). For each track, the box is turned into a half-size ``s = max(w, h) / 2`` and a centre (x, y), each
median-filtered over 13 frames (zero-padded at the track's ends, as ``scipy.signal.medfilt``; a track of fewer than
7 frames, which the official tracker never keeps, takes the median of its own boxes), and the crop is

    rows    y - s        ..  y + s·(1 + 2·crop_scale)       (from the brow to well below the chin)
    columns x - s·(1+cs) ..  x + s·(1 + cs)                 (a square of 2·s·(1 + cs) = 2.8·s for cs = 0.4)

of the frame padded with grey 110 (so faces at the border keep their place in the crop), resized to 224x224 with
bilinear interpolation (``cv2.resize``), in BGR channel order. Everything streams: a crop is made as soon as the
boxes 6 frames ahead of it are known.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

CROP_SCALE = 0.4
PAD_VALUE = 110
SMOOTH_KERNEL = 13
MAX_GAP = 25  # frames without a detection bridged inside one track (official num_failed_det)
CROP_SIZE = 224


def crop_face(frame_bgr: np.ndarray, s: float, x: float, y: float, crop_scale: float = CROP_SCALE,
              size: int = CROP_SIZE) -> np.ndarray:
    """The official crop of one frame around a (smoothed) box of half-size ``s`` centred on (x, y) -> uint8
    (size, size, 3). Equivalent to padding the frame by ``int(s·(1 + 2·cs))`` pixels of value 110 and slicing."""
    pad = int(s * (1 + 2 * crop_scale))
    h, w = frame_bgr.shape[:2]
    my, mx = y + pad, x + pad  # centre in padded coordinates
    r0, r1 = int(my - s), int(my + s * (1 + 2 * crop_scale))
    c0, c1 = int(mx - s * (1 + crop_scale)), int(mx + s * (1 + crop_scale))
    # numpy slicing of the padded frame clamps the end to its size (and a start below 0 to 0 here)
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, h + 2 * pad), min(c1, w + 2 * pad)
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"empty face crop (box half-size {s:.1f} at ({x:.1f}, {y:.1f}) in a {w}x{h} frame)")
    crop = np.full((r1 - r0, c1 - c0, 3), PAD_VALUE, dtype=np.uint8)
    fr0, fr1 = max(r0 - pad, 0), min(r1 - pad, h)
    fc0, fc1 = max(c0 - pad, 0), min(c1 - pad, w)
    if fr1 > fr0 and fc1 > fc0:
        crop[fr0 + pad - r0 : fr1 + pad - r0, fc0 + pad - c0 : fc1 + pad - c0] = frame_bgr[fr0:fr1, fc0:fc1]
    return cv2.resize(crop, (size, size))


def box_geometry(bbox: np.ndarray) -> tuple[float, float, float]:
    """x1, y1, x2, y2 -> (half-size s = max(w, h) / 2, centre x, centre y)."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    return max(y2 - y1, x2 - x1) / 2.0, (x1 + x2) / 2.0, (y1 + y2) / 2.0


@dataclass
class CropEvent:
    """One crop of a track (``crop`` uint8 (224, 224, 3) BGR of 25 fps frame ``frame``), or the end of a track
    (``crop`` None)."""

    track: int
    frame: int
    crop: np.ndarray | None = None

    @property
    def is_end(self) -> bool:
        return self.crop is None


@dataclass
class _Track:
    index: int
    start: int  # 25 fps frame of its first crop
    boxes: list[np.ndarray] = field(default_factory=list)  # (4,) per frame from `start`, interpolated in gaps
    frames: dict[int, np.ndarray] = field(default_factory=dict)  # frames (BGR) not cropped yet, by frame number
    gap: list[tuple[int, np.ndarray]] = field(default_factory=list)  # frames after the last detection
    cropped: int = 0  # frames of this track already cropped

    @property
    def last_detection(self) -> int:
        return self.start + len(self.boxes) - 1


class FaceCropTracker:
    """Feed the 25 fps frames in order with the chosen face's box (or None); get `CropEvent`s back.

    ``push(k, frame_bgr, bbox)`` and ``finish()`` return the crops that became ready (and track ends)."""

    def __init__(self, crop_scale: float = CROP_SCALE, smooth_kernel: int = SMOOTH_KERNEL, max_gap: int = MAX_GAP,
                 size: int = CROP_SIZE):
        self.crop_scale, self.smooth_kernel, self.max_gap, self.size = crop_scale, smooth_kernel, max_gap, size
        self._track: _Track | None = None
        self._tracks = 0
        self.frames_with_face = 0

    def push(self, k: int, frame_bgr: np.ndarray, bbox: np.ndarray | None) -> list[CropEvent]:
        events: list[CropEvent] = []
        track = self._track
        if bbox is None:
            if track is not None:
                if k - track.last_detection <= self.max_gap:
                    track.gap.append((k, frame_bgr))
                else:
                    events += self._close()
            return events
        self.frames_with_face += 1
        bbox = np.asarray(bbox, dtype=np.float64)
        if track is not None and k - track.last_detection > self.max_gap:
            events += self._close()
            track = None
        if track is None:
            track = self._track = _Track(index=self._tracks, start=k)
            self._tracks += 1
        else:  # bridge the frames since the last detection (linear interpolation of the box, as interp1d)
            prev, k0 = track.boxes[-1], track.last_detection
            for kg, frame in track.gap:
                t = (kg - k0) / (k - k0)
                track.boxes.append(prev + t * (bbox - prev))
                track.frames[kg] = frame
            track.gap = []
        track.boxes.append(bbox)
        track.frames[k] = frame_bgr
        events += self._crops(track, final=False)
        return events

    def finish(self) -> list[CropEvent]:
        return self._close()

    def _close(self) -> list[CropEvent]:
        track, self._track = self._track, None
        if track is None:
            return []
        return self._crops(track, final=True) + [CropEvent(track.index, track.last_detection)]

    def _crops(self, track: _Track, final: bool) -> list[CropEvent]:
        """Crop every frame whose smoothing window is complete (all of them once the track is final)."""
        n = len(track.boxes)
        half = self.smooth_kernel // 2
        ready = n if final else n - half
        events = []
        for i in range(track.cropped, ready):
            lo, hi = i - half, i + half + 1
            window = np.array([box_geometry(b) for b in track.boxes[max(lo, 0) : min(hi, n)]])  # (m, 3): s, x, y
            # medfilt's zero padding beyond the track's ends; a track shorter than half a window (at most one
            # scorable 5-frame window) would get all-zero medians from it, so it uses its own boxes only
            zeros = np.zeros((max(0, -lo) + max(0, hi - n), 3) if n > half else (0, 3))
            s, x, y = np.median(np.concatenate([zeros, window]), axis=0)
            k = track.start + i
            events.append(CropEvent(track.index, k, crop_face(track.frames.pop(k), s, x, y, self.crop_scale,
                                                              self.size)))
        track.cropped = max(track.cropped, ready)
        return events
