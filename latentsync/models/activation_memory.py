"""How much memory the U-Net's activations take, for ComfyUI's memory manager (and anyone sizing a GPU).

The figures are measured by `python -m bench.unet_memory` on the real-size stage-2 U-Net: the peak of live tensor
bytes during one forward and during a denoising window with DeepCache, attention counted as a fused kernel (the GPU
path). They are exactly proportional to frames x latent pixels x bytes per element (checked at 256 and 512 px, 8
and 16 frames), so one coefficient per case describes every size:

    peak = bytes per element x frames x (resolution / 8)^2 x (batch per U-Net call x FORWARD[chunks] + WINDOW_EXTRA)

in elements per latent pixel and frame. With feed-forward chunking the peak moves from the feed-forward (the GEGLU
projection, 8 x width per token) to the attention blocks once there are 4 pieces or more.
"""
from __future__ import annotations

import torch

# elements per (frame x latent pixel) for one sample of a full forward, by feed-forward chunks (traced, stage 2)
FORWARD = {1: 8060, 2: 5980, 4: 4860}
FF_BASE, FF_SHARE = 3900, 4160  # forward peak at `c` chunks while the feed-forward holds it: FF_BASE + FF_SHARE / c
# a denoising window (DeepCache) holds a little more than one forward: the cached hidden state, the model input and
# the other guidance half's output (sequential)
WINDOW_EXTRA = {"joint": 82, "sequential": 375}
BASE_WIDTH = 320  # block_out_channels[0] of the real U-Net; other widths are scaled linearly (approximate)


def forward_coefficient(ff_chunks: int = 1) -> float:
    """Elements per frame and latent pixel of one sample's forward, with the feed-forwards in `ff_chunks` pieces."""
    if ff_chunks < 1:
        raise ValueError(f"ff_chunks must be >= 1, got {ff_chunks}")
    if ff_chunks in FORWARD:
        return float(FORWARD[ff_chunks])
    return float(max(FORWARD[4], FF_BASE + FF_SHARE / ff_chunks))


def activation_peak_bytes(resolution: int, frames: int = 16, dtype: torch.dtype = torch.float16,
                          cfg_batch: str = "joint", ff_chunks: int = 1, guidance: bool = True, window: bool = True,
                          base_width: int = BASE_WIDTH) -> int:
    """Estimated peak activation bytes of the U-Net: one denoising window (`window=True`, what a run needs) or one
    forward, at `resolution` px with `frames` frames, classifier-free guidance as one batch of two ("joint") or two
    halves ("sequential"), feed-forwards in `ff_chunks` pieces. Weights not included."""
    if cfg_batch not in WINDOW_EXTRA:
        raise ValueError(f"unknown cfg_batch {cfg_batch!r} (joint or sequential)")
    latent = resolution // 8
    elem = torch.finfo(dtype).bits // 8
    per_call = 2 if guidance and cfg_batch == "joint" else 1
    coefficient = per_call * forward_coefficient(ff_chunks)
    if window:
        coefficient += WINDOW_EXTRA[cfg_batch if guidance else "joint"]
    return int(elem * frames * latent * latent * coefficient * base_width / BASE_WIDTH)
