"""A tiny U-Net configuration (same block layout and key pattern as stage 2) for tests and offline demos."""
from __future__ import annotations

from typing import Any

import torch

from .unet_3d import UNet3DConditionModel, resolve_unet_config


def tiny_unet_config(**overrides: Any) -> dict[str, Any]:
    """Stage-2 layout with widths 32 (GroupNorm needs >= 32 channels), 4 heads and audio dim 24."""
    base = {
        "block_out_channels": [32, 32, 32, 32],
        "attention_head_dim": 4,
        "cross_attention_dim": 24,
        "motion_module_kwargs": {"num_attention_heads": 4},
    }
    base.update(overrides)
    return resolve_unet_config(base)


def random_tiny_unet(generator: torch.Generator, **overrides: Any) -> UNet3DConditionModel:
    """Tiny U-Net whose parameters are all drawn from `generator`, so it is reproducible without global RNG and
    every path (including the zero-initialised `conv_out` and motion-module `proj_out`) contributes.

    Matrices/kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.05^2), norm scales ~ 1 + N(0, 0.05^2). Eval mode.
    """
    with torch.device("meta"):
        unet = UNet3DConditionModel(**tiny_unet_config(**overrides))
    state = {}
    for name, t in unet.state_dict().items():
        noise = torch.randn(t.shape, generator=generator)
        if name.endswith(".pe"):
            continue  # recomputed sinusoidal buffer
        if t.dim() > 1:
            state[name] = noise / (t[0].numel() ** 0.5)
        elif name.endswith("weight"):
            state[name] = 1.0 + 0.05 * noise
        else:
            state[name] = 0.05 * noise
    from .checkpoint import load_state_dict_into_unet

    load_state_dict_into_unet(unet, state, device="cpu", dtype=torch.float32)
    return unet.eval()
