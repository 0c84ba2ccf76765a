"""The pack's own ComfyUI types, the objects that travel on them, and conversions to and from ComfyUI's types.

ComfyUI types used as they are: IMAGE (float (B, H, W, C) in [0, 1]), MASK (float (B, H, W)), AUDIO
({"waveform": (B, C, S), "sample_rate": int}), VIDEO (`VideoInput`), LATENT ({"samples": (B, 4, h, w)} in the
VAE's unscaled space) and VAE (ComfyUI's own `comfy.sd.VAE`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import torch
from comfy_api.latest import Input, io

if TYPE_CHECKING:
    from ..latentsync.pipeline import AlignedFaces

# ---------------------------------------------------------------------------------------------------------------
# custom socket types

LatentSyncModel = io.Custom("LATENTSYNC_MODEL")
"""The LatentSync 3-D U-Net (in a ModelPatcher), its version, face resolution and mouth mask."""

WhisperModel = io.Custom("LATENTSYNC_WHISPER")
"""The Whisper tiny encoder that turns speech into per-frame audio features."""

FaceAnalyzer = io.Custom("LATENTSYNC_FACE_ANALYZER")
"""A face detector with landmarks (InsightFace buffalo_l or the offline RetinaFace)."""

Faces = io.Custom("LATENTSYNC_FACES")
"""Aligned faces of a frame sequence: crops, affine matrices, boxes, which frames have a face, mouth mask."""

AudioEmbeddings = io.Custom("LATENTSYNC_AUDIO_EMBEDS")
"""Whisper features, one (50, 384) window per video frame."""

FaceLatents = io.Custom("LATENTSYNC_FACE_LATENTS")
"""VAE latents of the aligned faces: masked-image latents, reference latents, mask latents (+ what decoding needs)."""


# ---------------------------------------------------------------------------------------------------------------
# objects carried by the custom types


@dataclass(eq=False)
class LoadedLatentSync:
    """LATENTSYNC_MODEL. `patcher.model.diffusion_model` is the U-Net; ComfyUI moves it between devices."""

    patcher: Any  # comfy.model_patcher.ModelPatcher around a `UNetHolder`
    version: str  # "1.5" or "1.6"
    resolution: int  # face crop size in pixels (256 for 1.5, 512 for 1.6)
    mask: torch.Tensor  # (R, R) float, 1 = keep, 0 = regenerate
    dtype: torch.dtype
    path: str
    is_tiny: bool = False

    @property
    def unet(self):
        return self.patcher.model.diffusion_model


@dataclass(eq=False)
class LoadedWhisper:
    """LATENTSYNC_WHISPER."""

    patcher: Any  # ModelPatcher around a `WhisperHolder`
    path: str

    @property
    def encoder(self):
        return self.patcher.model.encoder


@dataclass(eq=False)
class LoadedFaceAnalyzer:
    """LATENTSYNC_FACE_ANALYZER."""

    detector: Any  # latentsync.face.detector.FaceDetector
    backend: str
    selection: str = "largest"
    requested: str = ""  # what the loader was asked for (auto, insightface, offline)
    reason: str = ""  # why this backend (shown on the loader node)


@dataclass(eq=False)
class FaceTrack:
    """LATENTSYNC_FACES: the library's `AlignedFaces` plus the mouth mask of the model they were aligned for."""

    aligned: AlignedFaces
    mask: torch.Tensor  # (R, R) float
    version: str

    def __len__(self) -> int:
        return len(self.aligned)

    @property
    def face_count(self) -> int:
        return int(self.aligned.has_face.sum())


@dataclass(eq=False)
class AudioFeatures:
    """LATENTSYNC_AUDIO_EMBEDS: (frames, 50, 384) float32 on CPU for frames shown at `fps`."""

    embeds: torch.Tensor
    fps: Fraction

    def __len__(self) -> int:
        return int(self.embeds.shape[0])


@dataclass(eq=False)
class EncodedFaces:
    """LATENTSYNC_FACE_LATENTS. Latents are scaled by 0.18215 and only exist for frames that have a face.

    `index[k]` is the frame of row k; every tensor is (K, ...) with K = number of frames with a face.
    """

    index: torch.Tensor  # long (K,)
    masked_image_latents: torch.Tensor  # (K, 4, h, w)
    ref_latents: torch.Tensor  # (K, 4, h, w)
    mask_latents: torch.Tensor  # (K, 1, h, w)
    faces: torch.Tensor  # uint8 (K, R, R, 3): the crops, restored outside the mask after decoding
    pixel_mask: torch.Tensor  # (R, R): 1 = keep
    num_frames: int
    resolution: int
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# conversions between ComfyUI values and the library's


def image_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B, H, W, C) float in [0, 1] -> uint8 (B, H, W, 3) RGB on CPU (alpha dropped, grey expanded)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected an IMAGE batch (B, H, W, C), got {shape}")
    if images.shape[0] == 0:
        raise ValueError("the IMAGE batch is empty (no frames)")
    channels = images.shape[-1]
    if channels == 1:
        images = images.expand(-1, -1, -1, 3)
    elif channels >= 3:
        images = images[..., :3]
    else:
        raise ValueError(f"IMAGE has {channels} channels; expected 1, 3 or 4")
    return images.detach().float().cpu().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def uint8_to_image(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> ComfyUI IMAGE float32 (B, H, W, 3) in [0, 1]."""
    return frames.to(torch.float32).div_(255.0)


def signed_to_image(faces: torch.Tensor) -> torch.Tensor:
    """(B, 3, R, R) in [-1, 1] -> IMAGE (B, R, R, 3) in [0, 1]."""
    return faces.float().add(1.0).div_(2.0).clamp_(0.0, 1.0).permute(0, 2, 3, 1).contiguous().cpu()


def image_to_signed(images: torch.Tensor) -> torch.Tensor:
    """IMAGE (B, R, R, 3) in [0, 1] -> (B, 3, R, R) in [-1, 1] (rounded through uint8 like every frame here)."""
    return image_to_uint8(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_fraction(fps: float | int | Fraction) -> Fraction:
    """A frame rate as an exact fraction: 29.97 -> 2997/100, 30000/1001 stays as it is."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        value = float(fps)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"frame rate must be a finite number, got {fps!r}")
        rate = Fraction(value).limit_denominator(100000)
    if rate <= 0:
        raise ValueError(f"frame rate must be positive, got {fps!r}")
    return rate


def audio_to_waveform(audio: dict) -> tuple[torch.Tensor, int]:
    """ComfyUI AUDIO -> (float32 (C, S) on CPU, sample rate). Only the first item of a batch is used."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError("expected an AUDIO value ({'waveform': (B, C, S), 'sample_rate': int})")
    waveform = torch.as_tensor(audio["waveform"])
    if waveform.ndim == 3:
        waveform = waveform[0]
    elif waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim != 2 or waveform.shape[-1] == 0:
        raise ValueError(f"the audio is empty or has an unexpected shape {tuple(torch.as_tensor(audio['waveform']).shape)}")
    sample_rate = int(audio["sample_rate"])
    if sample_rate <= 0:
        raise ValueError(f"audio sample rate must be positive, got {audio['sample_rate']!r}")
    return waveform.detach().to(torch.float32).cpu(), sample_rate


def waveform_to_audio(waveform: torch.Tensor, sample_rate: int) -> dict:
    """(C, S) -> ComfyUI AUDIO {"waveform": (1, C, S), "sample_rate": int}."""
    if waveform.ndim == 1:
        waveform = waveform[None]
    return {"waveform": waveform.detach().to(torch.float32).cpu().unsqueeze(0).contiguous(), "sample_rate": int(sample_rate)}


def trim_audio(audio: dict, num_frames: int, fps: Fraction) -> dict:
    """AUDIO cut (never padded) to the duration of `num_frames` frames at `fps`."""
    waveform, sample_rate = audio_to_waveform(audio)
    keep = round(Fraction(num_frames) / fps * sample_rate)
    return waveform_to_audio(waveform[:, :keep], sample_rate)


def open_video(video, read_own_audio: bool = True) -> tuple[object, dict | None, str | None]:
    """(frame source, the video's own AUDIO or None, the file behind it or None). A VIDEO that has its own stream
    source (Load Video's file) is read lazily from it; any other VIDEO through its components (already in memory).
    `read_own_audio=False`: the file's audio track is not read (None is returned for it)."""
    from ..latentsync.pipeline import TensorFrameSource  # noqa: PLC0415
    from ..latentsync.video_io import VideoFileSource, has_audio, read_audio  # noqa: PLC0415

    own_source = type(video).get_stream_source is not Input.Video.get_stream_source
    if own_source:
        stream = video.get_stream_source()
        name = stream if isinstance(stream, str) else "the input video"
        source = VideoFileSource(stream, name=name)
        audio = None
        if read_own_audio and has_audio(stream):
            waveform, rate = read_audio(stream, name=name)
            audio = waveform_to_audio(waveform, rate)
        return source, audio, stream if isinstance(stream, str) else None
    components = video.get_components()
    return TensorFrameSource(components.images, fps=to_fraction(components.frame_rate)), components.audio, None


def face_region_mask(aligned: AlignedFaces, device: torch.device | str = "cpu") -> torch.Tensor:
    """MASK (N, H, W) on the CPU: the soft blend weight with which each frame's face is pasted back (its face
    region in frame coordinates); 0 everywhere in frames without a face. Computed on `device`."""
    import kornia  # noqa: PLC0415 - only needed here

    from ..latentsync.face.paste import soft_paste_mask  # noqa: PLC0415
    from ..latentsync.face.similarity import crop_size  # noqa: PLC0415

    h, w = aligned.frame_size
    crop_w, crop_h = crop_size(aligned.resolution)
    out = torch.zeros(len(aligned), h, w, dtype=torch.float32)
    for i in aligned.has_face.nonzero().flatten().tolist():
        matrix = aligned.matrices[i : i + 1].to(device=device, dtype=torch.float32)
        inv = kornia.geometry.transform.invert_affine_transform(matrix)
        _hard, soft = soft_paste_mask((crop_h, crop_w), inv, (h, w), torch.float32)
        out[i] = soft[0, 0].clamp(0.0, 1.0).cpu()
    return out
