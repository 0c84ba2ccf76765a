"""Face detection, alignment, paste-back and the fixed mouth mask (plain torch/numpy, no ComfyUI)."""
from ..lazy import lazy_exports

_MODULES = {
    ".align": ("AlignedBatch", "FaceAligner"),
    ".detector": ("FaceDetector", "create_face_detector"),
    ".landmarks": ("points3_from_landmarks5", "points3_from_landmarks106"),
    ".mask": ("MASK_SHA256", "MaskError", "load_mask", "synthetic_mouth_mask", "verify_mask"),
    ".selection": ("FaceSelector",),
    ".types": ("DetectedFace",),
}
__all__ = sorted(name for names in _MODULES.values() for name in names)
__getattr__ = lazy_exports(__name__, _MODULES)
