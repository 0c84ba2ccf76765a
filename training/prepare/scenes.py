"""Scene cuts with PySceneDetect, fed the 25 fps frames directly (no second decoder). The default is the official
pipeline's detector (`scenedetect detect-adaptive --threshold 2`: `AdaptiveDetector`, adaptive threshold 2);
`ContentDetector` (threshold 27) is the alternative."""
from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detectors import AdaptiveDetector, ContentDetector

from .decode import FPS

ANALYSIS_WIDTH = 320  # PySceneDetect also downscales before comparing frames
DETECTORS = {"adaptive": 2.0, "content": 27.0}  # detector -> default threshold


class SceneCuts:
    """`push(frame)` for every 25 fps frame in order; `cuts` = frame indices where a new scene starts."""

    def __init__(self, threshold: float | None = None, min_scene_frames: int = 15, detector: str = "adaptive"):
        if detector not in DETECTORS:
            raise ValueError(f"unknown scene detector {detector!r}; choose one of {', '.join(DETECTORS)}")
        threshold = DETECTORS[detector] if threshold is None else float(threshold)
        if detector == "adaptive":
            self.detector = AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=min_scene_frames)
        else:
            self.detector = ContentDetector(threshold=threshold, min_scene_len=min_scene_frames)
        self.index = 0
        self.cuts: list[int] = []

    def push(self, frame_rgb: np.ndarray) -> None:
        h, w = frame_rgb.shape[:2]
        if w > ANALYSIS_WIDTH:
            frame_rgb = cv2.resize(frame_rgb, (ANALYSIS_WIDTH, max(1, round(h * ANALYSIS_WIDTH / w))),
                                   interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(frame_rgb[:, :, ::-1])
        for tc in self.detector.process_frame(FrameTimecode(self.index, fps=Fraction(FPS)), bgr):
            self.cuts.append(int(tc.frame_num))
        self.index += 1

    def scenes(self, num_frames: int) -> list[tuple[int, int]]:
        """[start, end) frame ranges of the scenes."""
        bounds = [0] + sorted(c for c in set(self.cuts) if 0 < c < num_frames) + [num_frames]
        return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
