"""Landmarks -> crop similarity transform (the official `transformation_from_points`, spec §2.6)."""
from __future__ import annotations

import numpy as np
import torch


def face_template(resolution: int) -> np.ndarray:
    """(3, 2) float64 template points (x, y) in crop pixels: brows and nose, scaled by R/256*2.8."""
    ratio = resolution / 256 * 2.8
    return np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]]) * ratio


def crop_size(resolution: int) -> tuple[int, int]:
    """(W, H) of the aligned crop: (210, 280) at 256, (420, 560) at 512."""
    ratio = resolution / 256 * 2.8
    return int(75 * ratio), int(100 * ratio)


def transformation_from_points(
    points: np.ndarray | torch.Tensor,
    template: np.ndarray | torch.Tensor,
    smooth: bool = True,
    p_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Similarity (rotation, uniform scale, translation) mapping `points` (3, 2) onto `template` (3, 2).

    Computed in float32 on the CPU in the official order of operations (so the result matches it to the last
    bits): centre both sets, divide by their scalar unbiased std, SVD of P1n^T P2n, R = V U^T without reflection.
    With `smooth`, the nose-point difference of the *normalised* sets is blended with the previous one
    (0.2 old + 0.8 new) and added to the translation column (the official quirk: normalised units on a pixel
    translation). Returns (M float32 (2, 3) frame -> crop pixels, the new bias (2,) or the old one if not smooth).
    """
    p1 = torch.as_tensor(np.asarray(points), dtype=torch.float32).reshape(3, 2)
    p2 = torch.as_tensor(np.asarray(template), dtype=torch.float32).reshape(3, 2)
    c1 = p1.mean(dim=0)
    c2 = p2.mean(dim=0)
    p1c = p1 - c1
    p2c = p2 - c2
    s1 = torch.std(p1c)
    s2 = torch.std(p2c)
    if not torch.isfinite(s1) or float(s1) == 0.0:
        raise ValueError(f"degenerate alignment points (all equal): {p1.tolist()}")
    p1n = p1c / s1
    p2n = p2c / s2
    u, _, v = torch.svd(p1n.T @ p2n)
    rot = v @ u.T
    if torch.det(rot) < 0:
        v = v.clone()
        v[:, -1] = -v[:, -1]
        rot = v @ u.T
    s_rot = (s2 / s1) * rot
    t = c2.reshape(2, 1) - (s2 / s1) * (rot @ c1.reshape(2, 1))
    m = torch.cat((s_rot, t), dim=1)
    if smooth:
        bias = p2n[2] - p1n[2]
        if p_bias is not None:
            bias = p_bias * 0.2 + bias * 0.8
        p_bias = bias
        m[:, 2] = m[:, 2] + bias
    return m, p_bias
