"""VAE decode of the sampled faces, batched by ComfyUI's memory manager, with the part of each crop outside the
mouth mask restored from the aligned face (as the official pipeline does)."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from . import runtime
from .types import EncodedFaces, FaceLatents, signed_to_image

CHUNK = 16


def decode(vae, latent: dict, encoded: EncodedFaces) -> torch.Tensor:
    samples = latent["samples"] if isinstance(latent, dict) else latent
    if samples.ndim != 4 or samples.shape[0] != encoded.num_frames:
        raise ValueError(f"expected {encoded.num_frames} latents (one per frame) of shape (4, h, w), got "
                         f"{tuple(samples.shape)}: connect the latent of the LatentSync Sampler that used these faces")
    k = int(encoded.index.numel())
    r = encoded.resolution
    out = torch.full((encoded.num_frames, r, r, 3), 127.0 / 255.0)
    if k == 0:
        return out
    progress = runtime.Progress(k)
    codec = runtime.ComfyVAECodec(vae, chunk=CHUNK)
    keep = encoded.pixel_mask.to(torch.float32)
    for start in range(0, k, CHUNK):
        rows = slice(start, min(k, start + CHUNK))
        frames = encoded.index[rows]
        decoded = codec.decode(samples[frames].float() * runtime.SCALING_FACTOR)
        if decoded.shape[-1] != r or decoded.shape[-2] != r:
            raise ValueError(f"the VAE decoded {tuple(decoded.shape[-2:])} images, expected {r}x{r}")
        ref = encoded.faces[rows].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        restored = decoded * (1.0 - keep) + ref * keep
        out[frames] = signed_to_image(restored)
        progress(min(k, start + CHUNK))
    return out


class LatentSyncDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncDecode",
            display_name="LatentSync VAE Decode Faces",
            category="LatentSync",
            description="Decodes the sampled latents to face crops in memory-sized batches and keeps the original "
                        "pixels outside the mouth mask. Frames without a face give a grey crop (ignored by Paste).",
            inputs=[
                io.Vae.Input("vae", tooltip="The same VAE as used for encoding."),
                io.Latent.Input("latent", tooltip="From LatentSync Sampler."),
                FaceLatents.Input("face_latents", tooltip="From LatentSync Encode Masked Faces (for the mask and the "
                                                          "original crops)."),
            ],
            outputs=[io.Image.Output(display_name="faces", tooltip="Generated face crops (frames, R, R, 3).")],
        )

    @classmethod
    def execute(cls, vae, latent, face_latents) -> io.NodeOutput:
        return io.NodeOutput(decode(vae, latent, face_latents))


NODES = [LatentSyncDecode]
