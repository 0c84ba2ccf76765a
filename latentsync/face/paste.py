"""Paste an aligned face back into its frame (the official `AlignRestore.restore_img`, spec §2.12)."""
from __future__ import annotations

import math

import cv2
import kornia
import numpy as np
import torch
import torch.nn.functional as F

FILL_VALUE = 127.0


def erode_rect(mask: torch.Tensor, size: int, use_cv2: bool = True) -> torch.Tensor:
    """`cv2.erode(mask, ones((size, size)))` for a (1, 1, H, W) float32 mask: OpenCV itself on the CPU, an
    equivalent torch min-filter on other devices (or with use_cv2=False).

    OpenCV anchors an even kernel at size//2, so the window of pixel x is [x - size//2, x - size//2 + size - 1];
    the border never wins (it counts as +inf). An empty kernel (size 0) means a 3x3 square in OpenCV.
    """
    if use_cv2 and mask.device.type == "cpu":  # OpenCV's erosion is much faster than a max-pool with a large window
        kernel = np.ones((size, size), np.uint8) if size > 0 else np.ones((0, 0), np.uint8)
        return torch.from_numpy(cv2.erode(mask[0, 0].contiguous().numpy(), kernel))[None, None]
    if size <= 0:
        size = 3
    lo, hi = size // 2, size - 1 - size // 2
    padded = F.pad(-mask, (lo, hi, lo, hi), value=-math.inf)
    rows = F.max_pool2d(padded, kernel_size=(1, size), stride=1)
    return -F.max_pool2d(rows, kernel_size=(size, 1), stride=1)


def soft_paste_mask(crop_hw: tuple[int, int], inv_matrix: torch.Tensor, frame_hw: tuple[int, int],
                    dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of one crop footprint in the frame: (hard eroded (1, 1, H, W), soft (1, 1, H, W)).

    inv_matrix: (1, 2, 3) crop -> frame. Warp an all-ones crop (zero padding), 2x2 kornia erosion, then an
    erosion by 2*w_edge and a Gaussian blur of 2*w_edge+1 (OpenCV auto sigma, reflect border), with
    w_edge = int(sqrt(mask area)) // 20.
    """
    device = inv_matrix.device
    ones = torch.ones((1, 1, *crop_hw), device=device, dtype=dtype)
    inv_mask = kornia.geometry.transform.warp_affine(ones, inv_matrix, frame_hw, padding_mode="zeros")
    hard = kornia.morphology.erosion(inv_mask, torch.ones((2, 2), device=device, dtype=dtype))
    w_edge = int(float(hard.float().sum()) ** 0.5) // 20
    center = erode_rect(hard.float(), 2 * w_edge).to(dtype)
    blur = 2 * w_edge + 1
    sigma = 0.3 * ((blur - 1) * 0.5 - 1) + 0.8
    soft = kornia.filters.gaussian_blur2d(center, (blur, blur), (sigma, sigma))
    return hard, soft


def footprint_roi(inv_matrix: torch.Tensor, crop_hw: tuple[int, int], frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) frame region that holds everything the paste can change: the crop footprint's bounding
    box plus a margin larger than the erosion + blur reach (w_edge <= sqrt(area) / 20), clipped to the frame."""
    h, w = crop_hw
    corners = torch.tensor([[0.0, 0.0, 1.0], [w - 1.0, 0.0, 1.0], [0.0, h - 1.0, 1.0], [w - 1.0, h - 1.0, 1.0]],
                           dtype=torch.float64)
    inv = inv_matrix[0].cpu().double()  # on the CPU first: MPS has no float64
    pts = corners @ inv.T
    lo, hi = pts.min(0).values, pts.max(0).values
    margin = 3 * (math.isqrt(int(w * h * float(torch.det(inv[:, :2]).abs()) + 1)) // 20) + 8
    x0 = max(0, int(math.floor(lo[0])) - margin)
    y0 = max(0, int(math.floor(lo[1])) - margin)
    x1 = min(frame_hw[1], int(math.ceil(hi[0])) + margin + 1)
    y1 = min(frame_hw[0], int(math.ceil(hi[1])) + margin + 1)
    return x0, y0, x1, y1


def restore_frame(frame: torch.Tensor, face: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """One frame: frame (3, H, W) float 0..255, face (3, h, w) in [-1, 1] at crop size, matrix (2, 3)
    frame -> crop (same dtype/device). Returns the blended frame (3, H, W) float (not yet truncated).

    Only the region around the crop footprint is computed (the official code warps and blurs the whole frame;
    outside the footprint its soft mask is 0, so the result there is the frame itself).
    """
    h, w = frame.shape[-2:]
    inv = kornia.geometry.transform.invert_affine_transform(matrix.unsqueeze(0))
    x0, y0, x1, y1 = footprint_roi(inv, tuple(face.shape[-2:]), (h, w))
    out = frame.clone()
    if x1 <= x0 or y1 <= y0:
        return out  # the crop lies entirely outside the frame
    inv_roi = inv.clone()
    inv_roi[:, 0, 2] -= x0
    inv_roi[:, 1, 2] -= y0
    roi_hw = (y1 - y0, x1 - x0)
    fill = torch.full((3,), FILL_VALUE, device=frame.device, dtype=frame.dtype)
    inv_face = kornia.geometry.transform.warp_affine(
        face.unsqueeze(0), inv_roi, roi_hw, mode="bilinear", padding_mode="fill", fill_value=fill
    )[0]
    inv_face = (inv_face / 2 + 0.5).clamp(0, 1) * 255
    hard, soft = soft_paste_mask(tuple(face.shape[-2:]), inv_roi, roi_hw, frame.dtype)
    pasted = hard[0] * inv_face
    soft = soft[0]
    region = frame[:, y0:y1, x0:x1]
    out[:, y0:y1, x0:x1] = soft * pasted + (1 - soft) * region
    return out
