"""Alignment points (points3) from detector landmarks, and the official face-acceptance rule.

points3 order = the template order of `FaceAligner`: image-left eyebrow centre, image-right eyebrow centre, nose.
"""
from __future__ import annotations

import numpy as np

# Official indices into InsightFace's 106-point layout (spec §2.5).
LEFT_BROW_106 = (43, 48, 49, 51, 50)
RIGHT_BROW_106 = (101, 102, 103, 104, 105)
NOSE_106 = (74, 77, 83, 86)

# Offline 5-point derivation (RetinaFace order: image-left eye, image-right eye, nose tip, mouth left, mouth right).
# In the "eye frame" (origin = eye midpoint, x along left eye -> right eye, y perpendicular towards the chin,
# unit = inter-ocular distance d) the brow centres are put at (-BROW_X, -BROW_Y) and (+BROW_X, -BROW_Y), and the
# nose point at NOSE_T of the way from the eye midpoint to the detected nose tip.
# Calibration (hand-annotated eyebrow centres on the two real faces in ../shared/media):
#   astronaut photo: brow half-separation 0.53 d, brows 0.24 d above the eye line, nose tip 0.64 d below it;
#   speaking-clip frame 0: 0.54 d, 0.42 d, 0.62 d.
# BROW_X / BROW_Y are the means; NOSE_T places the nose where the official template puts it for those brows
# (template: nose 20 units below the brow line, brows 41 units apart -> 0.976 * BROW_X below the brows), given
# the mean nose-tip depth 0.63 d:  NOSE_T = (0.976 * BROW_X - BROW_Y) / 0.63.
BROW_X = 0.535
BROW_Y = 0.33
NOSE_T = (20.0 / 20.5 * BROW_X - BROW_Y) / 0.63


def points3_from_landmarks106(landmarks106: np.ndarray) -> np.ndarray:
    """(106, 2) InsightFace landmarks -> (3, 2) float64, exactly as the official `affine_transform`.

    The landmarks are rounded to int first (the official wrapper does), the group means are rounded again.
    """
    lmk = np.round(np.asarray(landmarks106, dtype=np.float64)).astype(np.int64)
    if lmk.shape != (106, 2):
        raise ValueError(f"expected (106, 2) landmarks, got {lmk.shape}")
    pts = np.stack(
        [lmk[list(LEFT_BROW_106)].mean(0), lmk[list(RIGHT_BROW_106)].mean(0), lmk[list(NOSE_106)].mean(0)]
    )
    return np.round(pts)


def points3_from_landmarks5(landmarks5: np.ndarray) -> np.ndarray:
    """(5, 2) RetinaFace landmarks -> (3, 2) float64 approximating the official eyebrow/nose points.

    Differences to the official points: the eyebrows are not observed, so their height above the eyes is a
    population mean (real brows vary by about +-0.1 inter-ocular distance, i.e. ~10 px in the 256 crop); the nose
    point follows the nose tip (so yaw/pitch still move it), scaled by NOSE_T. Not rounded to integers.
    """
    lmk = np.asarray(landmarks5, dtype=np.float64)
    if lmk.shape != (5, 2):
        raise ValueError(f"expected (5, 2) landmarks, got {lmk.shape}")
    eye_l, eye_r, nose = lmk[0], lmk[1], lmk[2]
    mid = (eye_l + eye_r) / 2.0
    u = eye_r - eye_l  # length d, points to the image-right eye
    v = np.array([-u[1], u[0]])  # length d, points towards the chin (image y grows downwards)
    brow_l = mid - BROW_X * u - BROW_Y * v
    brow_r = mid + BROW_X * u - BROW_Y * v
    nose_pt = mid + NOSE_T * (nose - mid)
    return np.stack([brow_l, brow_r, nose_pt])


def passes_official_filter(bbox: np.ndarray, score: float, min_score: float = 0.5) -> bool:
    """Official per-face rule (spec §2.5): integer box, skip w<50 or h<80, w/h>1.5 or <0.2, score<0.5."""
    x1, y1, x2, y2 = (int(v) for v in bbox)
    w, h = x2 - x1, y2 - y1
    if w < 50 or h < 80:
        return False
    if w / h > 1.5 or w / h < 0.2:
        return False
    return score >= min_score
