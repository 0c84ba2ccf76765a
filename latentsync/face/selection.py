"""Choose one face per frame, and keep choosing the same person across frames."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import numpy as np

from .landmarks import passes_official_filter
from .types import DetectedFace

Mode = Literal["largest", "index", "nearest"]


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1y1x2y2 boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class FaceSelector:
    """Per-frame choice of one face.

    mode "largest" (official rule: largest box area), "index" (the `index`-th face counted left to right by box
    centre), "nearest" (face whose box centre is closest to `point` (x, y)). Faces the detector is less sure of than
    `min_score` are dropped (official: 0.5); `official_filter` also drops faces the official code skips (w<50, h<80,
    aspect outside 0.2..1.5). With `track` (default), after the
    first frame with a face, the face overlapping the previous choice most (IoU; ties/no overlap: nearest centre)
    is taken, so the choice stays on the same person; the mode only picks the first one (and a new one after
    `max_gap` frames without a face). Frames without an acceptable face give None.
    """

    mode: Mode = "largest"
    index: int = 0
    point: tuple[float, float] | None = None
    official_filter: bool = True
    min_score: float = 0.5
    track: bool = True
    max_gap: int = 25

    def __post_init__(self) -> None:
        if self.mode not in ("largest", "index", "nearest"):
            raise ValueError(f"unknown selection mode {self.mode!r}; use 'largest', 'index' or 'nearest'")
        if self.mode == "nearest" and self.point is None:
            raise ValueError("selection mode 'nearest' needs point=(x, y)")
        if self.index < 0:
            raise ValueError(f"index must be >= 0, got {self.index}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be between 0 and 1, got {self.min_score}")
        self.reset()

    def reset(self) -> None:
        self._previous: DetectedFace | None = None
        self._gap = 0

    def _initial(self, faces: Sequence[DetectedFace]) -> DetectedFace | None:
        if self.mode == "largest":
            return max(faces, key=lambda f: f.area)
        if self.mode == "index":
            ordered = sorted(faces, key=lambda f: f.center[0])
            return ordered[self.index] if self.index < len(ordered) else None
        p = np.asarray(self.point, dtype=np.float64)
        return min(faces, key=lambda f: float(np.linalg.norm(f.center - p)))

    def _tracked(self, faces: Sequence[DetectedFace], prev: DetectedFace) -> DetectedFace:
        ious = [box_iou(f.bbox, prev.bbox) for f in faces]
        best = int(np.argmax(ious))
        if ious[best] > 0:
            return faces[best]
        return min(faces, key=lambda f: float(np.linalg.norm(f.center - prev.center)))

    def select(self, faces: Iterable[DetectedFace]) -> DetectedFace | None:
        """Choose from one frame's detections (call once per frame, in order)."""
        faces = [f for f in faces if f.score >= self.min_score
                 and (not self.official_filter or passes_official_filter(f.bbox, f.score, self.min_score))]
        if not faces:
            self._gap += 1
            if self._gap > self.max_gap:
                self._previous = None
            return None
        prev = self._previous if self.track else None
        choice = self._tracked(faces, prev) if prev is not None else self._initial(faces)
        if choice is not None:
            self._previous = choice
            self._gap = 0
        return choice

    def select_all(self, per_frame: Iterable[Sequence[DetectedFace]]) -> list[DetectedFace | None]:
        """A whole video's detections -> one face (or None) per frame."""
        return [self.select(faces) for faces in per_frame]
