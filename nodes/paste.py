"""Paste faces: original frames + aligned faces + generated face crops -> frames with the new faces blended in."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from . import runtime
from .types import Faces, FaceTrack, image_to_signed, image_to_uint8, uint8_to_image

CHUNK = 16


def paste(images, track: FaceTrack, faces) -> torch.Tensor:
    from ..latentsync.face.align import FaceAligner  # noqa: PLC0415 - heavy (kornia, OpenCV): imported when run
    from ..latentsync.pipeline import paste_faces  # noqa: PLC0415

    frames = image_to_uint8(images)
    aligned = track.aligned
    n = frames.shape[0]
    if n != len(aligned) or faces.shape[0] != n:
        raise ValueError(f"frame counts differ: {n} frames, {len(aligned)} aligned faces, {faces.shape[0]} generated "
                         "faces; use the same frames for Detect & Align Faces and Paste Faces")
    if (frames.shape[1], frames.shape[2]) != tuple(aligned.frame_size):
        raise ValueError(f"frames are {frames.shape[2]}x{frames.shape[1]} but the faces were found in "
                         f"{aligned.frame_size[1]}x{aligned.frame_size[0]} frames")
    generated = image_to_signed(faces)
    if generated.shape[-1] != aligned.resolution:
        generated = torch.nn.functional.interpolate(generated, size=(aligned.resolution, aligned.resolution),
                                                    mode="bicubic", align_corners=False, antialias=True)
    aligner = FaceAligner(aligned.resolution, device=runtime.torch_device())
    progress = runtime.Progress(n)
    out = []
    for start in range(0, n, CHUNK):
        runtime.check_cancel()
        part = slice(start, min(n, start + CHUNK))
        out.append(paste_faces(frames[part], generated[part], aligned.select(range(part.start, part.stop)), aligner))
        progress(part.stop)
    return uint8_to_image(torch.cat(out))


class LatentSyncPasteFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncPasteFaces",
            display_name="LatentSync Paste Faces",
            category="LatentSync",
            description="Warps the generated faces back into the original frames with a soft edge. Frames without "
                        "a face are returned unchanged.",
            inputs=[
                io.Image.Input("images", tooltip="The original frames (the ones given to Detect & Align Faces)."),
                Faces.Input("faces", tooltip="From LatentSync Detect & Align Faces."),
                io.Image.Input("generated", tooltip="Generated face crops, one per frame (LatentSync VAE Decode "
                                                    "Faces, or ComfyUI's VAE Decode)."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="Lip-synced frames.")],
        )

    @classmethod
    def execute(cls, images, faces, generated) -> io.NodeOutput:
        result = paste(images, faces, generated)
        ui, _warning = runtime.face_report(faces.aligned.has_face)
        return io.NodeOutput(result, ui=ui)


NODES = [LatentSyncPasteFaces]
