"""InsightFace `buffalo_l` backend: the official detector (SCRFD `det_10g.onnx` + `2d106det.onnx`), spec §2.5.

Only the detection and landmark_2d_106 models are loaded, straight from their ONNX files through
`insightface.model_zoo.get_model(path, providers=...)`, which behaves the same in insightface 0.7.3 and 2.x
(`FaceAnalysis` differs between them: 2.x adds model manifests and multi-size detection). Detection size 512x512,
det_thresh 0.5, as the official `FaceAnalysis(allowed_modules=["detection", "landmark_2d_106"])` setup.

Quirk kept for parity (spec §8.9): the official code passes RGB frames although InsightFace expects BGR; so do we.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..dependencies import MissingDependencyError, missing_package_message
from .landmarks import points3_from_landmarks106
from .providers import onnx_providers
from .types import DetectedFace

DETECTION_FILE = "det_10g.onnx"
LANDMARK_FILE = "2d106det.onnx"
DET_SIZE = (512, 512)
DET_THRESH = 0.5


class InsightFaceModelsMissing(FileNotFoundError):
    """buffalo_l's ONNX files are not in the given folder."""


def _require_files(models_dir: Path) -> tuple[Path, Path]:
    det, lmk = models_dir / DETECTION_FILE, models_dir / LANDMARK_FILE
    missing = [p.name for p in (det, lmk) if not p.is_file()]
    if missing:
        raise InsightFaceModelsMissing(
            f"InsightFace buffalo_l model file(s) {', '.join(missing)} not found in {models_dir}. "
            f"Put {DETECTION_FILE} and {LANDMARK_FILE} from InsightFace's buffalo_l release "
            f"(https://github.com/deepinsight/insightface/releases, buffalo_l.zip; non-commercial research "
            f"licence) into that folder (in ComfyUI: models/insightface/models/buffalo_l), or use the "
            f"offline RetinaFace backend."
        )
    return det, lmk


class InsightFaceDetector:
    """`FaceDetector` with InsightFace buffalo_l; landmarks are the 106 points (float), points3 the official ones."""

    def __init__(self, models_dir: str | Path, device: str = "cpu", det_size: tuple[int, int] = DET_SIZE,
                 det_thresh: float = DET_THRESH):
        if models_dir is None:
            raise InsightFaceModelsMissing("the InsightFace backend needs models_dir (the buffalo_l folder)")
        models_dir = Path(models_dir).expanduser()
        det_path, lmk_path = _require_files(models_dir)
        try:
            from insightface.app.common import Face
            from insightface.model_zoo import get_model
        except ImportError as e:
            raise MissingDependencyError(missing_package_message(
                f"insightface and onnxruntime (no module {e.name!r})", "the InsightFace face detector")) from e
        providers = onnx_providers(device)
        ctx_id = 0 if "CUDAExecutionProvider" in str(providers[0]) else -1
        self._face_cls = Face
        self.det_model = get_model(str(det_path), providers=providers)
        self.lmk_model = get_model(str(lmk_path), providers=providers)
        if getattr(self.det_model, "taskname", None) != "detection":
            raise ValueError(f"{det_path} is not a face-detection model")
        if getattr(self.lmk_model, "taskname", None) != "landmark_2d_106":
            raise ValueError(f"{lmk_path} is not the 106-point landmark model")
        self.det_model.prepare(ctx_id, input_size=tuple(det_size), det_thresh=float(det_thresh))
        self.lmk_model.prepare(ctx_id)

    def detect(self, frame_rgb: np.ndarray) -> list[DetectedFace]:
        """frame uint8 (H, W, 3) RGB (passed on as is, see the module note) -> faces in detector order."""
        frame = np.ascontiguousarray(frame_rgb)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
        bboxes, _ = self.det_model.detect(frame, max_num=0, metric="default")
        faces = []
        for row in bboxes:
            face = self._face_cls(bbox=row[:4], det_score=float(row[4]))
            self.lmk_model.get(frame, face)
            lmk = np.asarray(face["landmark_2d_106"], dtype=np.float64)
            faces.append(DetectedFace(bbox=np.asarray(row[:4], dtype=np.float64), landmarks=lmk,
                                      score=float(row[4]), points3=points3_from_landmarks106(lmk)))
        return faces
