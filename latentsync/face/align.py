"""Batched face alignment and paste-back: the official `AlignRestore` (StyleSync) in torch.

Precision: the official pipeline runs `AlignRestore` in float16 on CUDA, which also casts every matrix to
float16 before warping and inverting it (a translation of -246.68 becomes -246.625; spec §8.7). We keep the
matrices in float32 (the returned `matrices` are always float32); `dtype` is the precision of the image warps
and the blend. With dtype=float16 (CUDA only) the matrix is cast to float16 for the warps, as the official code
does. Kornia's float16 warps on the CPU return garbage, so float16 on the CPU is refused.
"""
from __future__ import annotations

import math

from dataclasses import dataclass

import cv2
import kornia
import numpy as np
import torch
import torch.nn.functional as F

from .paste import FILL_VALUE, PasteMask, PasteMaskCache, crop_bounds, paste_region
from .resize import resize_lanczos4
from .similarity import crop_size, face_template, transformation_from_points


@dataclass
class AlignedBatch:
    """faces: uint8 (N, R, R, 3) RGB model-resolution faces; matrices: float32 (N, 2, 3) frame -> crop pixels."""

    faces: torch.Tensor
    matrices: torch.Tensor

    def __iter__(self):  # `faces, matrices = aligner.align(...)` as in docs/architecture.md
        return iter((self.faces, self.matrices))


def _as_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (H, W, 3), numpy or torch -> torch uint8 (N, H, W, 3) (no copy when possible)."""
    t = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3) RGB, got shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8, got {t.dtype}")
    return t


def _sampled_region(matrix: torch.Tensor, crop_wh: tuple[int, int], frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the frame pixels a warp of the (w, h) crop by `matrix` (2, 3) frame -> crop (float64)
    reads, with 2 px to spare (bilinear reads the pixel after each sample point), clipped to the frame."""
    w, h = crop_wh
    if not bool(torch.isfinite(matrix).all()) or abs(float(torch.linalg.det(matrix[:, :2]))) < 1e-12:
        return 0, 0, frame_hw[1], frame_hw[0]  # degenerate: read the whole frame, as the warp itself would
    inv = kornia.geometry.transform.invert_affine_transform(matrix[None])
    lo, hi = crop_bounds(inv, (h, w))
    x0, y0 = max(0, math.floor(float(lo[0])) - 2), max(0, math.floor(float(lo[1])) - 2)
    x1 = min(frame_hw[1], math.ceil(float(hi[0])) + 3)
    y1 = min(frame_hw[0], math.ceil(float(hi[1])) + 3)
    return x0, y0, x1, y1


class FaceAligner:
    """Official AlignRestore for resolution R (256 or 512): crop (W, H) = (210, 280) * R/256, template
    [[17, 20], [58, 20], [37.5, 40]] * R/256 * 2.8. Holds the nose-bias smoothing state across calls."""

    def __init__(self, resolution: int, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 blur_on_device: bool | None = None):
        if resolution <= 0 or resolution % 8:
            raise ValueError(f"resolution must be a positive multiple of 8, got {resolution}")
        self.resolution = int(resolution)
        self.device = torch.device(device)
        if dtype not in (torch.float32, torch.float16, torch.float64):
            raise ValueError(f"dtype must be float32, float16 or float64, got {dtype}")
        if dtype == torch.float16 and self.device.type == "cpu":
            raise ValueError("float16 warps are not supported on the CPU (kornia gives NaN/garbage); use float32")
        self.dtype = dtype
        self.template = face_template(self.resolution)
        self.crop_wh = crop_size(self.resolution)
        self.p_bias: torch.Tensor | None = None
        if blur_on_device is None:  # the paste mask's Gaussian blur: on a GPU there, elsewhere OpenCV's own
            blur_on_device = self.device.type == "cuda"
        self._masks = PasteMaskCache((self.crop_wh[1], self.crop_wh[0]),
                                     blur_device=self.device if blur_on_device else None)

    def reset(self) -> None:
        """Forget the smoothing state (call between unrelated videos)."""
        self.p_bias = None

    # ---------------------------------------------------------------- alignment pieces
    def matrices(self, points3: np.ndarray | torch.Tensor, smooth: bool = True) -> torch.Tensor:
        """(N, 3, 2) alignment points -> float32 (N, 2, 3) frame -> crop matrices (CPU), in frame order,
        updating the smoothing state when `smooth`."""
        pts = np.asarray(points3.cpu() if isinstance(points3, torch.Tensor) else points3, dtype=np.float64)
        if pts.ndim == 2:
            pts = pts[None]
        if pts.ndim != 3 or pts.shape[1:] != (3, 2):
            raise ValueError(f"points3 must be (N, 3, 2), got {pts.shape}")
        out = []
        for p in pts:
            m, bias = transformation_from_points(p, self.template, smooth=smooth, p_bias=self.p_bias)
            if smooth:
                self.p_bias = bias
            out.append(m)
        return torch.stack(out) if out else torch.zeros((0, 2, 3))

    def warp_to_crop(self, frames: np.ndarray | torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
        """Warp frames uint8 (N, H, W, 3) to crops uint8 (N, H_crop, W_crop, 3) on self.device (bilinear,
        fill 127, align_corners=True, truncation to uint8). Only the part of each frame the crop samples (its
        footprint's bounding box, 2 px more) is converted to float: for a 1080p close-up that is a fifth of the
        frame. The warp is the same up to float32 rounding of the coordinates (within the ±1 level of truncation)."""
        frames = _as_frames(frames)
        w, h = self.crop_wh
        fill = torch.full((3,), FILL_VALUE, device=self.device, dtype=self.dtype)
        out = []
        for frame, m in zip(frames, matrices):
            m = m.detach().to("cpu", torch.float64)
            x0, y0, x1, y1 = _sampled_region(m, (w, h), tuple(frame.shape[:2]))
            if x1 <= x0 or y1 <= y0:  # the crop samples nothing inside the frame: all fill
                out.append(torch.full((1, h, w, 3), int(FILL_VALUE), dtype=torch.uint8, device=self.device))
                continue
            img = frame[y0:y1, x0:x1].to(self.device).permute(2, 0, 1)[None].to(self.dtype)
            shifted = m.clone()
            shifted[:, 2] += m[:, :2] @ torch.tensor([float(x0), float(y0)], dtype=torch.float64)
            crop = kornia.geometry.transform.warp_affine(
                img, shifted[None].to(self.device, self.dtype), (h, w), mode="bilinear", padding_mode="fill",
                fill_value=fill, align_corners=True)
            out.append(crop.permute(0, 2, 3, 1).to(torch.uint8))
        return torch.cat(out) if out else torch.zeros((0, h, w, 3), dtype=torch.uint8, device=self.device)

    def resize_to_model(self, crops: torch.Tensor, on_device: bool | None = None) -> torch.Tensor:
        """Crops uint8 (N, H_crop, W_crop, 3) -> uint8 (N, R, R, 3) Lanczos (INTER_LANCZOS4), returned on
        self.device. On the CPU: cv2 itself (the exact official resampling); on a GPU (or `on_device=True`): the same
        kernel as two matrix products where the crops are (`resize.resize_lanczos4`, within 1 level of cv2)."""
        r = self.resolution
        if on_device if on_device is not None else crops.device.type != "cpu":
            return resize_lanczos4(crops, (r, r)).to(self.device)
        src = crops.cpu().numpy()
        res = [cv2.resize(c, (r, r), interpolation=cv2.INTER_LANCZOS4) for c in src]
        arr = np.stack(res) if res else np.zeros((0, r, r, 3), np.uint8)
        return torch.from_numpy(arr).to(self.device)

    def align(self, frames: np.ndarray | torch.Tensor, points3: np.ndarray | torch.Tensor,
              smooth: bool = True) -> AlignedBatch:
        """Frames uint8 (N, H, W, 3) RGB + points3 (N, 3, 2) -> AlignedBatch(faces uint8 (N, R, R, 3),
        matrices float32 (N, 2, 3)), both on self.device. Frames must be processed in video order."""
        frames = _as_frames(frames)
        mats = self.matrices(points3, smooth=smooth)
        if mats.shape[0] != frames.shape[0]:
            raise ValueError(f"{frames.shape[0]} frames but {mats.shape[0]} sets of points")
        crops = self.warp_to_crop(frames, mats)
        return AlignedBatch(faces=self.resize_to_model(crops), matrices=mats.to(self.device))

    # ---------------------------------------------------------------- paste-back
    def face_to_crop(self, faces: torch.Tensor) -> torch.Tensor:
        """Faces (N, 3, R, R) in [-1, 1] -> (N, 3, H_crop, W_crop) with bicubic + antialias (torchvision's
        tensor resize); not clamped, as in the official code."""
        w, h = self.crop_wh
        # MPS has the antialiased bicubic only from torch 2.8 on: there it runs on the CPU (same numbers)
        where = torch.device("cpu") if self.device.type == "mps" else self.device
        x = faces.to(where, torch.float32)
        x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        return x.to(self.device, self.dtype)

    def paste_masks(self, matrices: torch.Tensor, frame_hw: tuple[int, int]) -> list[PasteMask]:
        """The paste region and soft masks of each matrix (N, 2, 3) (OpenCV, on the CPU, but the blur on the device
        when `blur_on_device`; reused while a footprint repeats). They depend only on the matrices, so they can be
        made before the faces exist."""
        return [self._masks.get(m, frame_hw) for m in matrices]

    def restore_crop(self, frames: np.ndarray | torch.Tensor, crop_faces: torch.Tensor,
                     matrices: torch.Tensor, masks: list[PasteMask] | None = None,
                     in_place: bool = False) -> torch.Tensor:
        """Paste crop-size faces (N, 3, H_crop, W_crop) in [-1, 1] into frames uint8 (N, H, W, 3) with the
        official soft mask; returns uint8 (N, H, W, 3) on self.device (float -> uint8 by truncation). Only each
        crop's paste region is converted and blended (elsewhere the frame is returned as it is); `masks` from
        `paste_masks` (made here when not given). No step waits for the device, frame by frame. `in_place`: frames
        already on self.device are pasted into and returned (no full-frame copy)."""
        frames = _as_frames(frames)
        n = frames.shape[0]
        if crop_faces.shape[0] != n or matrices.shape[0] != n:
            raise ValueError(f"restore needs as many faces ({crop_faces.shape[0]}) and matrices "
                             f"({matrices.shape[0]}) as frames ({n})")
        if masks is None:
            masks = self.paste_masks(matrices, tuple(frames.shape[1:3]))
        out = frames if in_place and frames.device == self.device else frames.to(self.device, copy=True)
        faces = crop_faces.to(self.device, self.dtype)
        for i, mask in enumerate(masks):
            if mask.empty:
                continue
            x0, y0, x1, y1 = mask.roi
            region = out[i, y0:y1, x0:x1].permute(2, 0, 1).to(self.dtype)
            blended = paste_region(region, faces[i], mask.to(self.device, self.dtype))
            out[i, y0:y1, x0:x1] = blended.permute(1, 2, 0).to(torch.uint8)
        return out

    def restore(self, frames: np.ndarray | torch.Tensor, faces: torch.Tensor,
                matrices: torch.Tensor, masks: list[PasteMask] | None = None, in_place: bool = False) -> torch.Tensor:
        """Frames uint8 (N, H, W, 3), generated faces (N, 3, R, R) in [-1, 1], matrices (N, 2, 3) from `align`
        -> frames uint8 (N, H, W, 3) with the faces pasted back (spec §2.12); `in_place`: see `restore_crop`."""
        if faces.ndim != 4 or faces.shape[1] != 3:
            raise ValueError(f"faces must be (N, 3, R, R), got {tuple(faces.shape)}")
        return self.restore_crop(frames, self.face_to_crop(faces), matrices, masks, in_place)
