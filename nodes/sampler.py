"""Sampler: model + face latents + audio embeddings -> LATENT (ComfyUI's type, in the VAE's unscaled space).

Frames are denoised in windows of 16 (what the model was trained on), every window starting from the same single
noise frame drawn from `seed` (the official scheme). DDIM + classifier-free guidance on silent audio + DeepCache.
"""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..latentsync.options import CFG_BATCH_MODES

from . import runtime
from .types import AudioEmbeddings, AudioFeatures, EncodedFaces, FaceLatents, LatentSyncModel


def sample(model, encoded: EncodedFaces, audio: AudioFeatures, seed: int = 1247, steps: int = 20,
           guidance: float = 1.5, deepcache: bool = True, deepcache_interval: int = 3, cfg_batch: str = "joint",
           ff_chunks: int = 1, compile: bool = False) -> dict:
    from ..latentsync.pipeline import WINDOW, MaskedLatents, sample_latents  # noqa: PLC0415 - heavy: when run
    from ..latentsync.sampling.denoise import initial_noise  # noqa: PLC0415

    n = encoded.num_frames
    if len(audio) < n:
        raise ValueError(f"the audio embeddings cover {len(audio)} frames but there are {n} frames: give the "
                         "Whisper node the same frame count (or 0 with audio at least as long as the video)")
    if encoded.resolution != model.resolution:
        raise ValueError(f"faces were aligned at {encoded.resolution} px but the model works at {model.resolution} "
                         "px: connect the same model to Detect & Align Faces")
    lat = encoded.resolution // 8
    out = torch.zeros(n, 4, lat, lat, dtype=torch.float32)
    generator = torch.Generator(device="cpu").manual_seed(int(seed) & 0xFFFFFFFFFFFFFFFF)
    shared_noise = initial_noise(1, lat, lat, generator=generator)
    windows = []
    for start in range(0, n, WINDOW):
        rows = ((encoded.index >= start) & (encoded.index < start + WINDOW)).nonzero().flatten()
        if rows.numel():
            windows.append(rows)
    progress = runtime.Progress(max(1, len(windows) * steps))
    unet = runtime.ManagedUNet(model.patcher, runtime.unet_memory_estimate(model.resolution, WINDOW, model.dtype,
                                                                            cfg_batch, int(ff_chunks)))
    if compile:
        unet.compile_blocks()
    interval = int(deepcache_interval) if deepcache else 1
    for w, rows in enumerate(windows):
        runtime.check_cancel()
        frames = encoded.index[rows]
        f = int(rows.numel())
        cond = MaskedLatents(
            masked_image_latents=_clip(encoded.masked_image_latents[rows]),
            ref_latents=_clip(encoded.ref_latents[rows]),
            mask_latents=_clip(encoded.mask_latents[rows]),
            ref_pixels=torch.empty(0),
            pixel_mask=encoded.pixel_mask,
        )
        base = w * steps
        latents = sample_latents(unet, cond, audio.embeds[frames], shared_noise.expand(-1, -1, f, -1, -1), steps,
                                 guidance, interval, on_step=lambda i, _n, b=base: progress(b + i + 1),
                                 cfg_batch=cfg_batch, ff_chunks=int(ff_chunks))
        out[frames] = latents[0].permute(1, 0, 2, 3).float().cpu()
    return {"samples": out / runtime.SCALING_FACTOR}


def small_card_inputs() -> list:
    """The optional inputs for small GPUs and speed, shared by the sampler and the one-node paths (appended last;
    the defaults are the behaviour without them)."""
    return [
        io.Combo.Input("cfg_batch", options=list(CFG_BATCH_MODES), default="joint", optional=True,
                       tooltip="Classifier-free guidance as one batch of two (joint: official, faster) or as two "
                               "halves one after the other (sequential: about half the U-Net's activation memory, "
                               "for small GPUs). The same frames."),
        io.Int.Input("ff_chunks", default=1, min=1, max=64, optional=True,
                     tooltip="Run the U-Net's feed-forward layers in this many pieces: 1 = in one; 2-4 lower the "
                             "activation peak on small GPUs (4: about 40 % lower), slightly slower. The same "
                             "frames."),
        io.Boolean.Input("compile", default=False, optional=True,
                         tooltip="Compile the U-Net's blocks with torch.compile: faster sampling on a GPU after a "
                                 "first window that takes minutes to compile (needs Triton / a C++ compiler). "
                                 "The same frames within rounding."),
    ]


def _clip(x: torch.Tensor) -> torch.Tensor:
    """(F, C, h, w) -> (1, C, F, h, w)"""
    return x.permute(1, 0, 2, 3).unsqueeze(0).contiguous()


class LatentSyncSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncSampler",
            display_name="LatentSync Sampler",
            category="LatentSync",
            description="Generates the lower half of every face from the audio: DDIM with classifier-free guidance "
                        "in the LatentSync U-Net, 16 frames at a time. Output: one latent per frame.",
            inputs=[
                LatentSyncModel.Input("model", tooltip="From Load LatentSync Model."),
                FaceLatents.Input("face_latents", tooltip="From LatentSync Encode Masked Faces."),
                AudioEmbeddings.Input("audio_embeds", tooltip="From LatentSync Whisper Audio Embeddings (same frame "
                                                              "count as the faces)."),
                io.Int.Input("seed", default=1247, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the starting noise (one noise frame shared by every frame)."),
                io.Int.Input("steps", default=20, min=1, max=1000,
                             tooltip="DDIM steps (official: 20)."),
                io.Float.Input("guidance", default=1.5, min=1.0, max=10.0, step=0.1,
                               tooltip="Classifier-free guidance on the audio (official: 1.5; 1.0 = off, faster)."),
                io.Boolean.Input("deepcache", default=True,
                                 tooltip="DeepCache: reuse the deep U-Net features between steps (faster, nearly "
                                         "identical)."),
                io.Int.Input("deepcache_interval", default=3, min=2, max=10,
                             tooltip="With DeepCache: a full U-Net pass every this many steps."),
                *small_card_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="latent",
                                      tooltip="One latent per frame in the VAE's own scale (zero where no face); "
                                              "ComfyUI's VAE Decode can decode it too.")],
        )

    @classmethod
    def execute(cls, model, face_latents, audio_embeds, seed, steps, guidance, deepcache,
                deepcache_interval, cfg_batch="joint", ff_chunks=1, compile=False) -> io.NodeOutput:
        return io.NodeOutput(sample(model, face_latents, audio_embeds, seed, steps, guidance, deepcache,
                                    deepcache_interval, cfg_batch, ff_chunks, compile))


NODES = [LatentSyncSampler]
