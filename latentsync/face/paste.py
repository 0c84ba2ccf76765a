"""Paste an aligned face back into its frame (the official `AlignRestore.restore_img`, spec §2.12).

The soft mask depends only on the crop's footprint in the frame (its matrix), never on the face: `paste_mask` computes
it on the CPU with OpenCV (erosions and a separable Gaussian blur, as the official code's `cv2.erode`) from the exact
bilinear footprint of an all-ones crop (on a GPU the blur, its costly part, runs there), so the pipeline can prepare
it while the model works, and `PasteMaskCache` reuses it for frames whose footprint does not change.
`soft_paste_mask` is the same recipe in torch (kornia) on any
device. Paste-back then costs one warp of the crop region (`restore_frame`).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

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


def crop_bounds(inv_matrix: torch.Tensor, crop_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(lowest, highest) frame (x, y), float64, of the crop's corner pixels placed by `inv_matrix` (1, 2, 3)
    crop -> frame: the bounding box of its footprint."""
    h, w = crop_hw
    corners = torch.tensor([[0.0, 0.0, 1.0], [w - 1.0, 0.0, 1.0], [0.0, h - 1.0, 1.0], [w - 1.0, h - 1.0, 1.0]],
                           dtype=torch.float64)
    pts = corners @ inv_matrix[0].cpu().double().T  # on the CPU first: MPS has no float64
    return pts.min(0).values, pts.max(0).values


def footprint_roi(inv_matrix: torch.Tensor, crop_hw: tuple[int, int], frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) frame region that holds everything the paste can change: the crop footprint's bounding
    box plus a margin larger than the erosion + blur reach (w_edge <= sqrt(area) / 20), clipped to the frame."""
    h, w = crop_hw
    inv = inv_matrix[0].cpu().double()
    lo, hi = crop_bounds(inv_matrix, crop_hw)
    margin = 3 * (math.isqrt(int(w * h * float(torch.det(inv[:, :2]).abs()) + 1)) // 20) + 8
    x0 = max(0, int(math.floor(lo[0])) - margin)
    y0 = max(0, int(math.floor(lo[1])) - margin)
    x1 = min(frame_hw[1], int(math.ceil(hi[0])) + margin + 1)
    y1 = min(frame_hw[0], int(math.ceil(hi[1])) + margin + 1)
    return x0, y0, x1, y1


@dataclass
class PasteMask:
    """Where and how one crop is pasted: the frame region `roi` (x0, y0, x1, y1), the crop -> region matrix
    `inv_roi` (1, 2, 3) float32, and the hard (eroded footprint) and soft masks over the region, (1, 1, h, w)."""

    roi: tuple[int, int, int, int]
    inv_roi: torch.Tensor
    hard: torch.Tensor
    soft: torch.Tensor

    @property
    def empty(self) -> bool:
        x0, y0, x1, y1 = self.roi
        return x1 <= x0 or y1 <= y0

    def to(self, device: torch.device | str, dtype: torch.dtype) -> PasteMask:
        move = dict(device=device, dtype=dtype, non_blocking=True)
        return PasteMask(self.roi, self.inv_roi.to(**move), self.hard.to(**move), self.soft.to(**move))


def _footprint(matrix: np.ndarray, crop_hw: tuple[int, int], roi: tuple[int, int, int, int]) -> np.ndarray:
    """The bilinear warp of an all-ones crop (zero padding) into the region, exactly: at a frame pixel whose crop
    coordinates are (u, v), the in-crop corner weights add up to a(u) * b(v), a(u) = clip(min(u + 1, w - u), 0, 1)."""
    h, w = crop_hw
    x0, y0, x1, y1 = roi
    xs = np.arange(x0, x1, dtype=np.float64)
    ys = np.arange(y0, y1, dtype=np.float64)[:, None]
    out = None
    for row, size in ((matrix[0], w), (matrix[1], h)):
        coord = (row[0] * xs + (row[1] * ys + row[2])).astype(np.float32)
        weight = np.minimum(coord + 1.0, size - coord)
        np.clip(weight, 0.0, 1.0, out=weight)
        out = weight if out is None else np.multiply(out, weight, out=out)
    return out


def gaussian_blur_on_device(image: torch.Tensor, ksize: int, sigma: float) -> torch.Tensor:
    """`cv2.GaussianBlur(image, (ksize, ksize), sigma, borderType=BORDER_REFLECT_101)` of a float32 (H, W) mask on
    its own device, as two 1-D convolutions with OpenCV's own kernel (`cv2.getGaussianKernel`): a blur whose window
    is a tenth of the face (101 taps for a 1,000 px face) is the costliest part of the paste mask on the CPU."""
    k = ksize // 2
    h, w = image.shape
    if k == 0:
        return image.clone()
    if k >= h or k >= w:  # reflection needs the border to be wider than the window: OpenCV on the CPU
        out = cv2.GaussianBlur(image.cpu().numpy(), (ksize, ksize), sigma, sigmaY=sigma,
                               borderType=cv2.BORDER_REFLECT_101)
        return torch.from_numpy(out).to(image.device)
    kernel = torch.from_numpy(cv2.getGaussianKernel(ksize, sigma, ktype=cv2.CV_32F)[:, 0].copy()).to(image.device)
    x = F.pad(image[None, None], (k, k, k, k), mode="reflect")  # torch's reflect is OpenCV's REFLECT_101
    x = F.conv2d(x, kernel.view(1, 1, 1, ksize))
    return F.conv2d(x, kernel.view(1, 1, ksize, 1))[0, 0]


def paste_mask(crop_hw: tuple[int, int], matrix: torch.Tensor, frame_hw: tuple[int, int],
               blur_device: torch.device | str | None = None) -> PasteMask:
    """The paste region and masks of one crop (crop_hw (h, w)) placed by `matrix` (2, 3) frame -> crop, computed on
    the CPU (OpenCV erosions and Gaussian blur, float32): the recipe of `soft_paste_mask`. With `blur_device` (a
    GPU), the footprint and its erosions stay on the CPU (OpenCV, exact) and the Gaussian blur runs there
    (`gaussian_blur_on_device`, same kernel, float32 sums in another order); the masks are returned on it."""
    m = matrix.detach().to("cpu", torch.float32)
    inv = kornia.geometry.transform.invert_affine_transform(m.unsqueeze(0))
    roi = footprint_roi(inv, crop_hw, frame_hw)
    x0, y0, x1, y1 = roi
    inv_roi = inv.clone()
    inv_roi[:, 0, 2] -= x0
    inv_roi[:, 1, 2] -= y0
    if x1 <= x0 or y1 <= y0:
        return _empty_mask(roi, inv_roi)
    inv_mask = _footprint(m.double().numpy(), crop_hw, roi)
    hard = cv2.erode(inv_mask, np.ones((2, 2), np.uint8))  # = kornia's 2x2 erosion (same anchor, border never wins)
    w_edge = int(float(hard.sum(dtype=np.float64)) ** 0.5) // 20
    blur = 2 * w_edge + 1
    sigma = 0.3 * ((blur - 1) * 0.5 - 1) + 0.8
    # The erosion and the blur are computed only around what is not zero, with margins wider than their windows, so
    # every value is the one the whole region would give; the region then shrinks to where the soft mask can be
    # non-zero (outside it the blend returns the frame itself: the same pixels, only not computed).
    support = _nonzero_box(hard)
    if support is None:
        return _empty_mask(roi, inv_roi)
    sub = _grow(support, max(1, w_edge) + 2, hard.shape)
    center = np.zeros_like(hard)
    center[_slices(sub)] = erode_rect(torch.from_numpy(np.ascontiguousarray(hard[_slices(sub)]))[None, None],
                                      2 * w_edge)[0, 0].numpy()
    core = _nonzero_box(center)
    if core is None:
        return _empty_mask(roi, inv_roi)
    source, keep = _grow(core, 2 * w_edge + 1, hard.shape), _grow(core, w_edge, hard.shape)
    inner = tuple(slice(k.start - s.start, k.stop - s.start) for k, s in zip(_slices(keep), _slices(source)))
    shift_y, shift_x = keep[0], keep[2]
    roi = (x0 + shift_x, y0 + shift_y, x0 + keep[3], y0 + keep[1])
    inv_roi[:, 0, 2] -= shift_x
    inv_roi[:, 1, 2] -= shift_y
    hard_keep = torch.from_numpy(np.ascontiguousarray(hard[_slices(keep)]))[None, None]
    center_source = np.ascontiguousarray(center[_slices(source)])
    if blur_device is not None:
        device = torch.device(blur_device)
        soft_t = gaussian_blur_on_device(torch.from_numpy(center_source).to(device, non_blocking=True), blur, sigma)
        return PasteMask(roi, inv_roi.to(device), hard_keep.to(device, non_blocking=True),
                         soft_t[inner].contiguous()[None, None])
    soft = cv2.GaussianBlur(center_source, (blur, blur), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    return PasteMask(roi, inv_roi, hard_keep, torch.from_numpy(np.ascontiguousarray(soft[inner]))[None, None])


def _empty_mask(roi: tuple[int, int, int, int], inv_roi: torch.Tensor) -> PasteMask:
    """Nothing to blend: a region of no pixels (the frame is returned as it is)."""
    empty = torch.zeros((1, 1, 0, 0))
    return PasteMask((roi[0], roi[1], roi[0], roi[1]), inv_roi, empty, empty)


def _nonzero_box(a: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) bounding the non-zero entries of a 2-D array, None when there are none."""
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _grow(box: tuple[int, int, int, int], margin: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    y0, y1, x0, x1 = box
    return max(0, y0 - margin), min(shape[0], y1 + margin), max(0, x0 - margin), min(shape[1], x1 + margin)


def _slices(box: tuple[int, int, int, int]) -> tuple[slice, slice]:
    return slice(box[0], box[1]), slice(box[2], box[3])


class PasteMaskCache:
    """`paste_mask` of the last few footprints: frames whose matrix (and frame size) repeat reuse their masks."""

    def __init__(self, crop_hw: tuple[int, int], size: int = 4, blur_device: torch.device | str | None = None):
        self.crop_hw, self.size = tuple(crop_hw), max(1, int(size))
        self.blur_device = blur_device
        self._masks: OrderedDict[tuple, PasteMask] = OrderedDict()
        self.hits = 0

    def get(self, matrix: torch.Tensor, frame_hw: tuple[int, int]) -> PasteMask:
        m = matrix.detach().to("cpu", torch.float32).contiguous()
        key = (m.numpy().tobytes(), tuple(frame_hw))
        found = self._masks.get(key)
        if found is not None:
            self._masks.move_to_end(key)
            self.hits += 1
            return found
        mask = paste_mask(self.crop_hw, m, frame_hw, self.blur_device)
        self._masks[key] = mask
        while len(self._masks) > self.size:
            self._masks.popitem(last=False)
        return mask


def restore_frame(frame: torch.Tensor, face: torch.Tensor, matrix: torch.Tensor,
                  mask: PasteMask | None = None) -> torch.Tensor:
    """One frame: frame (3, H, W) float 0..255, face (3, h, w) in [-1, 1] at crop size, matrix (2, 3)
    frame -> crop (same dtype/device). Returns the blended frame (3, H, W) float (not yet truncated).

    Only the region around the crop footprint is computed (the official code warps and blurs the whole frame;
    outside the footprint its soft mask is 0, so the result there is the frame itself).
    """
    out = frame.clone()
    mask = mask or paste_mask(tuple(face.shape[-2:]), matrix, tuple(frame.shape[-2:]))
    if mask.empty:
        return out  # the crop lies entirely outside the frame
    x0, y0, x1, y1 = mask.roi
    out[:, y0:y1, x0:x1] = paste_region(frame[:, y0:y1, x0:x1], face, mask.to(frame.device, frame.dtype))
    return out


def paste_region(region: torch.Tensor, face: torch.Tensor, mask: PasteMask) -> torch.Tensor:
    """The blend over a paste region: region (3, h, w) float 0..255, face (3, H_crop, W_crop) in [-1, 1], `mask` on
    their device and dtype. One warp of the face (kornia bilinear, fill 127) and the soft-mask blend."""
    fill = torch.full((3,), FILL_VALUE, device=region.device, dtype=region.dtype)
    inv_face = kornia.geometry.transform.warp_affine(
        face.unsqueeze(0), mask.inv_roi, tuple(region.shape[-2:]), mode="bilinear", padding_mode="fill",
        fill_value=fill)[0]
    inv_face = (inv_face / 2 + 0.5).clamp(0, 1) * 255
    pasted = mask.hard[0] * inv_face
    soft = mask.soft[0]
    return soft * pasted + (1 - soft) * region
