"""Training-time noise and the one-step x0 estimate (official `scripts/train_unet.py`)."""
from __future__ import annotations

import torch


def mix_noise(shared_draw: torch.Tensor, independent_draw: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Mixed noise (PYoCo, arXiv 2305.10474) from two standard-normal draws `(b, c, f, h, w)`:
    `independent * sqrt(1/(1+a^2)) + (shared * sqrt(a^2/(1+a^2)))[:, :, :1]` repeated over the frames
    (the scaling is applied before slicing, bit-identical to the official expression)."""
    shared_std = (alpha**2 / (1 + alpha**2)) ** 0.5
    independent_std = (1 / (1 + alpha**2)) ** 0.5
    frames = shared_draw.shape[2]
    shared = (shared_draw * shared_std)[:, :, 0:1].repeat(1, 1, frames, 1, 1)
    return independent_draw * independent_std + shared


def training_noise(latents: torch.Tensor, generator: torch.Generator | None = None, mixed: bool = True,
                   alpha: float = 1.0) -> torch.Tensor:
    """Noise for `latents (b, c, f, h, w)`, drawn in the official order (shared draw first).

    mixed: `mix_noise`; otherwise one frame's noise repeated over all frames (arXiv 2308.09716).
    """
    def draw() -> torch.Tensor:
        return torch.randn(latents.shape, generator=generator, dtype=latents.dtype,
                           device=generator.device if generator is not None else latents.device).to(latents.device)

    shared = draw()
    if not mixed:
        return shared[:, :, 0:1].repeat(1, 1, latents.shape[2], 1, 1)
    return mix_noise(shared, draw(), alpha)


def one_step_sampling(scheduler, noise_pred: torch.Tensor, timesteps: torch.Tensor,
                      noisy_latents: torch.Tensor) -> torch.Tensor:
    """x0 estimate `(x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)` per sample (no clipping), with the scheduler's
    cumulative alphas cast to the dtype of `noise_pred`."""
    alphas = scheduler.alphas_cumprod.to(device=noise_pred.device, dtype=noise_pred.dtype)[timesteps.to(
        noise_pred.device)]
    shape = (-1,) + (1,) * (noise_pred.dim() - 1)
    alphas = alphas.reshape(shape)
    return (noisy_latents - (1 - alphas) ** 0.5 * noise_pred) / alphas**0.5
