"""The detection record shared by every face-detector backend."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DetectedFace:
    """One detected face in frame pixel coordinates (x, y).

    bbox: (4,) float x1, y1, x2, y2. landmarks: (K, 2) float (K = 106 for InsightFace, 5 for RetinaFace).
    score: detector confidence. points3: (3, 2) float alignment points in template order
    (image-left eyebrow centre, image-right eyebrow centre, nose) — what `FaceAligner.align` expects.
    """

    bbox: np.ndarray
    landmarks: np.ndarray
    score: float
    points3: np.ndarray

    @property
    def width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    @property
    def height(self) -> float:
        return float(self.bbox[3] - self.bbox[1])

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> np.ndarray:
        """(2,) box centre (x, y)."""
        return np.array([(self.bbox[0] + self.bbox[2]) / 2.0, (self.bbox[1] + self.bbox[3]) / 2.0])
