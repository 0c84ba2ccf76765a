"""OpenCV's `INTER_LANCZOS4` resize as two matrix products in torch, so aligned crops are resized where they are
(on the GPU: no round trip through the CPU for the official Lanczos step).

OpenCV samples output pixel d at source coordinate (d + 0.5) * in / out - 0.5 with 8 taps (the 4 source pixels on
each side), weights sinc(t) * sinc(t / 4) normalised to sum 1, and repeats the border pixel past the edge; it does not
widen the kernel when shrinking. The weights here are the same numbers in float32 (OpenCV rounds them to 11-bit fixed
point for uint8 images), so the result is within 1 level of `cv2.resize(..., INTER_LANCZOS4)`.
"""
from __future__ import annotations

import numpy as np
import torch

_TAPS = 8


def lanczos4_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64: row d holds the weights output pixel d gives each source pixel."""
    d = np.arange(out_size, dtype=np.float64)
    f = ((d + 0.5) * (in_size / out_size) - 0.5).astype(np.float32).astype(np.float64)
    start = np.floor(f)
    frac = f - start
    t = frac[:, None] + 3 - np.arange(_TAPS)[None, :]  # distance of each tap from the sample point
    w = np.sinc(t) * np.sinc(t / 4)
    w /= w.sum(axis=1, keepdims=True)
    cols = np.clip(start[:, None].astype(np.int64) - 3 + np.arange(_TAPS)[None, :], 0, in_size - 1)
    out = np.zeros((out_size, in_size), dtype=np.float64)
    np.add.at(out, (np.repeat(np.arange(out_size), _TAPS), cols.ravel()), w.ravel())
    return out


def resize_lanczos4(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N, H, W, C) -> uint8 (N, h, w, C) with size (h, w), on the images' device."""
    n, h_in, w_in, c = images.shape
    h, w = size
    dev = images.device
    # cast on the CPU, then move: MPS has no float64
    wy = torch.from_numpy(lanczos4_matrix(h_in, h)).float().to(dev)
    wx = torch.from_numpy(lanczos4_matrix(w_in, w)).float().to(dev)
    x = images.permute(0, 3, 1, 2).float()  # (N, C, H, W)
    out = torch.matmul(torch.matmul(wy, x), wx.t())
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
