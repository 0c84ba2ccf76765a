"""OpenCV's `INTER_LANCZOS4` resize as two matrix products in torch, so aligned crops are resized where they are
(on the GPU: no round trip through the CPU for the official Lanczos step); and its `INTER_AREA` shrink, which the
offline face detector runs on frames on the device.

OpenCV samples output pixel d at source coordinate (d + 0.5) * in / out - 0.5 with 8 taps (the 4 source pixels on
each side), weights sinc(t) * sinc(t / 4) normalised to sum 1, and repeats the border pixel past the edge; it does not
widen the kernel when shrinking. The weights here are the same numbers in float32 (OpenCV rounds them to 11-bit fixed
point for uint8 images), so the result is within 1 level of `cv2.resize(..., INTER_LANCZOS4)`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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
    return _separable(images, wy, wx)


def _separable(images: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2).float()  # (N, C, H, W)
    out = torch.matmul(torch.matmul(wy, x), wx.t())
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def area_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 for a shrink: output pixel d is the mean of the source span [d, d + 1) * in / out,
    each source pixel weighted by how much of it lies in the span (OpenCV's INTER_AREA when shrinking)."""
    if out_size > in_size:
        raise ValueError(f"area resize only shrinks ({in_size} -> {out_size} px)")
    step = in_size / out_size
    lo = np.arange(out_size, dtype=np.float64)[:, None] * step
    src = np.arange(in_size, dtype=np.float64)[None, :]
    w = np.clip(np.minimum(lo + step, src + 1) - np.maximum(lo, src), 0, None)
    return w / w.sum(axis=1, keepdims=True)


def resize_area(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N, H, W, C) -> uint8 (N, h, w, C), h <= H and w <= W, on the images' device, within 1 level of
    `cv2.resize(..., INTER_AREA)`: a box mean for whole-number factors, two matrix products otherwise."""
    n, h_in, w_in, c = images.shape
    h, w = size
    if h_in % h == 0 and w_in % w == 0:
        x = F.avg_pool2d(images.permute(0, 3, 1, 2).float(), (h_in // h, w_in // w))
        return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    dev = images.device
    wy = torch.from_numpy(area_matrix(h_in, h)).float().to(dev)
    wx = torch.from_numpy(area_matrix(w_in, w)).float().to(dev)
    return _separable(images, wy, wx)
