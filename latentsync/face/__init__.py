"""Face detection, alignment, paste-back and the fixed mouth mask (plain torch/numpy, no ComfyUI)."""
from .align import AlignedBatch, FaceAligner
from .detector import FaceDetector, create_face_detector
from .landmarks import points3_from_landmarks5, points3_from_landmarks106
from .mask import MASK_SHA256, MaskError, load_mask, synthetic_mouth_mask, verify_mask
from .selection import FaceSelector
from .types import DetectedFace

__all__ = [
    "AlignedBatch", "FaceAligner", "FaceDetector", "create_face_detector", "points3_from_landmarks5",
    "points3_from_landmarks106", "MASK_SHA256", "MaskError", "load_mask", "synthetic_mouth_mask", "verify_mask",
    "FaceSelector", "DetectedFace",
]
