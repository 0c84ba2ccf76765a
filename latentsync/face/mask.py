"""The fixed mouth mask (official `load_fixed_mask`, spec §2.7): 1 = keep, 0 = regenerate."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import torch

# sha256 of the official latentsync/utils/mask.png (256x256, binary).
MASK_SHA256 = "aa233251b9ff5691a1565a4108f0910ab1e5e7ad79a7bb2b741ab4d92c81053c"


class MaskError(ValueError):
    """The mask file is missing, unreadable or not the official one."""


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise MaskError(f"mask file not found: {p} (the official LatentSync mask.png, from the "
                        f"ByteDance/LatentSync-1.5 or -1.6 repository: latentsync/utils/mask.png)")
    return p


def verify_mask(path: str | Path) -> None:
    """Raise MaskError unless the file at `path` is the official mask.png (sha256 MASK_SHA256)."""
    p = _check_file(path)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if digest != MASK_SHA256:
        raise MaskError(f"{p} is not the official LatentSync mask.png: sha256 {digest}, expected {MASK_SHA256}")


def load_mask(path: str | Path, resolution: int, channels: int = 1, verify: bool = False,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """cv2.imread -> RGB -> cv2.resize((R, R), INTER_LANCZOS4) -> /255, as the official loader.

    Returns `dtype` (R, R) (channels=1) or (3, R, R) (channels=3); the official tensor is float64.
    Binary at 256, soft-edged at 512.
    """
    p = _check_file(path)
    if verify:
        verify_mask(p)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = cv2.imread(str(p))
    if img is None:
        raise MaskError(f"could not decode the mask image {p}")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    mask = torch.from_numpy(img.astype(np.float64) / 255.0).permute(2, 0, 1)
    return (mask[0] if channels == 1 else mask).to(dtype)


def synthetic_mouth_mask(resolution: int) -> torch.Tensor:
    """A stand-in for the official mask when it cannot be had (tiny random model set, offline demos only).

    float32 (R, R), 1 = keep, 0 = regenerate: the lower face, shaped like the official mask (narrow at the nose,
    almost full width from ~half height to the chin): rows 0.37R..0.95R, a trapezoid from 0.30R wide at the top
    to 0.93R wide from 0.5R down. Not the official mask: models trained with the official one expect its shape.
    """
    r = resolution
    y = torch.arange(r, dtype=torch.float32).view(-1, 1) / r
    x = torch.arange(r, dtype=torch.float32).view(1, -1) / r
    top, full, bottom = 0.37, 0.50, 0.95
    half_width = torch.where(y < full, 0.15 + (y - top) / (full - top) * (0.465 - 0.15), torch.tensor(0.465))
    inside = (y >= top) & (y <= bottom) & ((x - 0.5).abs() <= half_width)
    return (~inside).float()
