"""Latent masking: aligned faces + VAE -> masked-image latents, reference latents and mask latents."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from . import runtime
from .types import EncodedFaces, FaceLatents, Faces, FaceTrack, uint8_to_image

WINDOW = 16


def encode_track(vae, track: FaceTrack, progress: runtime.Progress | None = None) -> EncodedFaces:
    from ..latentsync.pipeline import encode_faces  # noqa: PLC0415 - heavy: imported when run

    aligned = track.aligned
    index = aligned.has_face.nonzero().flatten()
    k = int(index.numel())
    progress = progress or runtime.Progress(max(1, k))
    codec = runtime.ComfyVAECodec(vae)
    parts = {"masked": [], "ref": [], "mask": []}
    for start in range(0, k, WINDOW):
        runtime.check_cancel()
        faces = aligned.faces[index[start:start + WINDOW]]
        cond = encode_faces(codec, faces, track.mask)
        # (1, C, F, h, w) -> (F, C, h, w)
        parts["masked"].append(cond.masked_image_latents[0].permute(1, 0, 2, 3).float().cpu())
        parts["ref"].append(cond.ref_latents[0].permute(1, 0, 2, 3).float().cpu())
        parts["mask"].append(cond.mask_latents[0].permute(1, 0, 2, 3).float().cpu())
        progress(min(k, start + WINDOW), max(1, k))
    r = aligned.resolution
    lat = r // 8
    empty = torch.zeros(0, 4, lat, lat)
    return EncodedFaces(
        index=index,
        masked_image_latents=torch.cat(parts["masked"]) if k else empty,
        ref_latents=torch.cat(parts["ref"]) if k else empty,
        mask_latents=torch.cat(parts["mask"]) if k else torch.zeros(0, 1, lat, lat),
        faces=aligned.faces[index],
        pixel_mask=track.mask.to(torch.float32),
        num_frames=len(aligned),
        resolution=r,
    )


def masked_preview(track: FaceTrack) -> torch.Tensor:
    """IMAGE of what the model sees: the aligned faces with the mouth region blanked."""
    keep = track.mask.to(torch.float32)[None, :, :, None]
    return uint8_to_image(track.aligned.faces) * keep


class LatentSyncMaskLatents(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncMaskLatents",
            display_name="LatentSync Encode Masked Faces",
            category="LatentSync",
            description="VAE-encodes the aligned faces twice: with the mouth region masked (what the model fills "
                        "in) and whole (the identity reference), plus the mask at latent size.",
            inputs=[
                Faces.Input("faces", tooltip="From LatentSync Detect & Align Faces."),
                io.Vae.Input("vae", tooltip="The SD 1.x VAE (ComfyUI's Load VAE, e.g. "
                                            "vae-ft-mse-840000-ema-pruned.safetensors)."),
            ],
            outputs=[
                FaceLatents.Output(display_name="face_latents",
                                   tooltip="Masked-image, reference and mask latents of every frame with a face."),
                io.Image.Output(display_name="masked_faces", tooltip="The aligned faces with the mouth blanked."),
            ],
        )

    @classmethod
    def execute(cls, faces, vae) -> io.NodeOutput:
        return io.NodeOutput(encode_track(vae, faces), masked_preview(faces))


NODES = [LatentSyncMaskLatents]
