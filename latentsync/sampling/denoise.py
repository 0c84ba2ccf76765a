"""Denoising one window of frames: DDIM (eta 0), classifier-free guidance on zero audio, optional DeepCache."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from ..options import CFG_BATCH_MODES
from .deepcache import DeepCache


def check_cfg_batch(cfg_batch: str) -> str:
    if cfg_batch not in CFG_BATCH_MODES:
        raise ValueError(f"unknown cfg_batch {cfg_batch!r}: use 'joint' (one batch of two, faster) or 'sequential' "
                         "(two halves one after the other, about half the activation memory)")
    return cfg_batch


def feed_forward_chunking(unet, chunks: int):
    """A context in which `unet` runs its feed-forwards in `chunks` pieces (1: unchanged)."""
    if int(chunks) != chunks or chunks < 1:
        raise ValueError(f"feed-forward chunks must be an integer >= 1, got {chunks!r}")
    if chunks == 1:
        return contextlib.nullcontext()
    setting = getattr(unet, "feed_forward_chunks", None)
    if setting is None:
        raise TypeError(f"{type(unet).__name__} cannot chunk its feed-forwards (no feed_forward_chunks)")
    return setting(int(chunks))


def initial_noise(num_frames: int, height: int, width: int, generator: torch.Generator,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                  channels: int = 4) -> torch.Tensor:
    """Official initial latents: ONE `(1, channels, 1, height, width)` N(0,1) frame repeated over `num_frames`.

    `height`/`width` are latent sizes (image size / 8). Drawn in float32 on the generator's device (so a seed
    gives the same noise for every dtype), then moved to `device`/`dtype`. `init_noise_sigma` of DDIM is 1.
    Returns `(1, channels, num_frames, height, width)`.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError("initial_noise needs an explicit torch.Generator (no global RNG)")
    frame = torch.randn((1, channels, 1, height, width), generator=generator, device=generator.device,
                        dtype=torch.float32)
    return frame.to(device=device, dtype=dtype).repeat(1, 1, num_frames, 1, 1)


@torch.no_grad()
def denoise_window(
    unet: Callable[..., torch.Tensor],
    scheduler,
    latents: torch.Tensor,
    mask: torch.Tensor,
    masked_image_latents: torch.Tensor,
    ref_latents: torch.Tensor,
    audio_embeds: torch.Tensor,
    guidance_scale: float = 1.5,
    num_inference_steps: int = 20,
    deepcache_interval: int = 3,
    on_step: Callable[[int, int], None] | None = None,
    latents_callback: Callable[[int, torch.Tensor], None] | None = None,
    deepcache_branch: int = 0,
    cfg_batch: str = "joint",
    ff_chunks: int = 1,
) -> torch.Tensor:
    """Run the official LatentSync loop on one window and return the final latents `(1, 4, f, h, w)`.

    Inputs (already scaled by 0.18215): `latents (1, 4, f, h, w)`, `mask (1, 1, f, h, w)` (1 = keep),
    `masked_image_latents`/`ref_latents (1, 4, f, h, w)`, `audio_embeds (1, f, 50, 384)`. With
    `guidance_scale > 1` the batch is `[zero audio, audio]` and `eps = uncond + s * (cond - uncond)`. The U-Net
    input is `cat([x, mask, masked_image_latents, ref_latents])` (13 channels). `deepcache_interval <= 1` turns
    DeepCache off. `cfg_batch`: "joint" runs the two guidance halves as one batch of two (official), "sequential"
    as two calls of one (each with its own DeepCache state; same result, about half the activation memory).
    `ff_chunks > 1` runs the U-Net's feed-forwards in that many pieces (same result, less memory). `on_step(i, n)`
    runs after every step (it may raise to cancel); `latents_callback(i, x)` receives the latents after step `i`.
    Tensors keep the dtype/device of `latents`. `scheduler` is a diffusers `DDIMScheduler` (its timesteps are
    (re)set here).
    """
    if latents.dim() != 5:
        raise ValueError(f"latents must be (1, 4, frames, h, w), got shape {tuple(latents.shape)}")
    check_cfg_batch(cfg_batch)
    dtype, device = latents.dtype, latents.device
    do_cfg = guidance_scale > 1.0
    sequential = do_cfg and cfg_batch == "sequential"
    audio_embeds = audio_embeds.to(device=device, dtype=dtype)
    if audio_embeds.dim() == 3:
        audio_embeds = audio_embeds.unsqueeze(0)
    if audio_embeds.shape[1] != latents.shape[2]:
        raise ValueError(f"audio_embeds has {audio_embeds.shape[1]} frames but latents have {latents.shape[2]}")
    conditioning = [t.to(device=device, dtype=dtype) for t in (mask, masked_image_latents, ref_latents)]
    if do_cfg:
        audio_embeds = torch.cat([torch.zeros_like(audio_embeds), audio_embeds])
        if not sequential:
            conditioning = [torch.cat([t, t]) for t in conditioning]
    # one U-Net call per entry: (audio context, DeepCache state); batch order [uncond, cond] as the official code
    halves = audio_embeds.chunk(2) if sequential else (audio_embeds,)
    caches = [DeepCache(deepcache_interval, deepcache_branch) if deepcache_interval > 1 else None for _ in halves]

    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps

    x = latents
    total = len(timesteps)
    with feed_forward_chunking(unet, ff_chunks):
        for i, t in enumerate(timesteps):
            model_input = torch.cat([x, x]) if do_cfg and not sequential else x
            model_input = scheduler.scale_model_input(model_input, t)
            model_input = torch.cat([model_input, *conditioning], dim=1)
            outputs = []
            for context, deep_cache in zip(halves, caches):
                extra = {}
                if deep_cache is not None:
                    deep_cache.begin_step(i)
                    extra["deep_cache"] = deep_cache
                outputs.append(unet(model_input, t, encoder_hidden_states=context, **extra))
            eps = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
            del outputs
            if do_cfg:
                eps_uncond, eps_audio = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_audio - eps_uncond)
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
            if latents_callback is not None:
                latents_callback(i, x)
            if on_step is not None:
                on_step(i, total)
    return x
