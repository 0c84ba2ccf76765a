"""The whole LatentSync data path, readable top to bottom, working on windows of frames.

video frames ─► detect + align faces ─► (per 16-frame window) VAE-encode masked / reference faces
audio ───────► Whisper features ─► one 50-token window per output frame ─┐
                                                                         ▼
            DDIM + classifier-free guidance + DeepCache in the 3-D U-Net ─► VAE decode ─► paste back ─► frames

Each stage is a plain function so that the ComfyUI nodes (one node per stage) and the one-call
`LipSyncPipeline` run exactly the same code. Frames in which no face is found are passed through unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from .audio.resample import to_mono_16k
from .audio.whisper_encoder import WhisperAudioEncoder
from .audio.windows import as_fraction, frame_audio_windows, num_frames_for_duration
from .face.align import FaceAligner
from .face.selection import FaceSelector
from .sampling.ddim import make_scheduler
from .sampling.denoise import denoise_window, initial_noise

WINDOW = 16  # frames per U-Net call (the model was trained on 16-frame clips)
LATENT_CHANNELS = 4
VAE_DOWNSCALE = 8

ProgressFn = Callable[[int, int], None]
"""progress(done, total): called as work advances; it may raise to cancel the run."""


@dataclass
class AlignedFaces:
    """Faces of a frame sequence, aligned to the model's template; everything paste-back needs travels with it."""

    faces: torch.Tensor  # uint8 (N, R, R, 3): aligned crops (grey where a frame has no face)
    matrices: torch.Tensor  # float32 (N, 2, 3): frame -> crop affine (OpenCV convention); zeros where no face
    boxes: torch.Tensor  # float32 (N, 4): detection box x1, y1, x2, y2 in frame pixels; NaN where no face
    has_face: torch.Tensor  # bool (N,)
    resolution: int
    frame_size: tuple[int, int]  # (H, W) of the source frames

    def __len__(self) -> int:
        return int(self.has_face.shape[0])

    def select(self, index: torch.Tensor | Sequence[int]) -> AlignedFaces:
        index = torch.as_tensor(index, dtype=torch.long)
        return AlignedFaces(self.faces[index], self.matrices[index], self.boxes[index], self.has_face[index],
                            self.resolution, self.frame_size)


@dataclass
class MaskedLatents:
    """The conditioning of one window: what the U-Net sees besides the noisy latents (all scaled by 0.18215)."""

    masked_image_latents: torch.Tensor  # (1, 4, F, h, w): the face with the mouth region greyed out
    ref_latents: torch.Tensor  # (1, 4, F, h, w): the unmasked face (official inference: the frame itself)
    mask_latents: torch.Tensor  # (1, 1, F, h, w): 1 = keep, 0 = regenerate (nearest-downsampled pixel mask)
    ref_pixels: torch.Tensor  # (F, 3, R, R) in [-1, 1]: restored outside the mask after decoding
    pixel_mask: torch.Tensor  # (R, R): 1 = keep, 0 = regenerate


# ---------------------------------------------------------------------------------------------------------------
# stages


def detect_and_align(frames: torch.Tensor, detector, aligner: FaceAligner, selector: FaceSelector | None = None,
                     progress: ProgressFn | None = None) -> AlignedFaces:
    """Detect one face per frame and warp it to the template. frames: uint8 (N, H, W, 3) RGB."""
    frames = _as_uint8_frames(frames)
    n, h, w, _ = frames.shape
    selector = selector or FaceSelector()
    chosen = []
    for i in range(n):
        chosen.append(selector.select(detector.detect(frames[i].numpy())))
        if progress is not None:
            progress(i + 1, n)
    has_face = torch.tensor([c is not None for c in chosen], dtype=torch.bool)
    r = aligner.resolution
    faces = torch.full((n, r, r, 3), 127, dtype=torch.uint8)
    matrices = torch.zeros(n, 2, 3, dtype=torch.float32)
    boxes = torch.full((n, 4), float("nan"), dtype=torch.float32)
    idx = has_face.nonzero().flatten()
    if len(idx):
        points3 = np.stack([np.asarray(chosen[i].points3, dtype=np.float64) for i in idx.tolist()])
        aligned = aligner.align(frames[idx], points3)
        faces[idx] = torch.as_tensor(aligned.faces, dtype=torch.uint8).cpu()
        matrices[idx] = torch.as_tensor(aligned.matrices, dtype=torch.float32).cpu()
        boxes[idx] = torch.tensor(np.stack([np.asarray(chosen[i].bbox, dtype=np.float32) for i in idx.tolist()]))
    return AlignedFaces(faces, matrices, boxes, has_face, r, (h, w))


def audio_embeddings(encoder: WhisperAudioEncoder, waveform, sample_rate: int, fps: float | Fraction,
                     num_frames: int) -> torch.Tensor:
    """Per-frame Whisper windows (num_frames, 50, 384) for frames shown at `fps` from time 0."""
    features = encoder.features(to_mono_16k(waveform, sample_rate))
    return frame_audio_windows(features, fps, num_frames)


def encode_faces(codec, faces: torch.Tensor, mask: torch.Tensor) -> MaskedLatents:
    """VAE-encode a window of aligned faces (uint8 (F, R, R, 3)) into the U-Net's conditioning latents."""
    pixels = faces.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # == (x/255 - 0.5) / 0.5
    mask = mask.to(torch.float32)
    masked = pixels * mask
    masked_image_latents = codec.encode(masked)
    ref_latents = codec.encode(pixels)
    h, w = masked_image_latents.shape[-2:]
    mask_latents = torch.nn.functional.interpolate(mask[None, None], size=(h, w))  # nearest, as the official code
    f = pixels.shape[0]
    return MaskedLatents(
        masked_image_latents=_frames_to_clip(masked_image_latents),
        ref_latents=_frames_to_clip(ref_latents),
        mask_latents=mask_latents.expand(f, 1, h, w).permute(1, 0, 2, 3).unsqueeze(0).contiguous(),
        ref_pixels=pixels,
        pixel_mask=mask,
    )


def sample_latents(unet, conditioning: MaskedLatents, audio: torch.Tensor, noise: torch.Tensor, steps: int = 20,
                   guidance: float = 1.5, deepcache_interval: int = 3,
                   on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Denoise one window. audio: (F, 50, 384); noise: (1, 4, F, h, w). Returns scaled latents (1, 4, F, h, w)."""
    p = next(unet.parameters())
    cast = dict(device=p.device, dtype=p.dtype)
    return denoise_window(
        unet, make_scheduler(), noise.to(**cast), conditioning.mask_latents.to(**cast),
        conditioning.masked_image_latents.to(**cast), conditioning.ref_latents.to(**cast),
        audio.unsqueeze(0).to(**cast), guidance_scale=guidance, num_inference_steps=steps,
        deepcache_interval=deepcache_interval, on_step=on_step,
    )


def decode_faces(codec, latents: torch.Tensor, conditioning: MaskedLatents) -> torch.Tensor:
    """Decode (1, 4, F, h, w) latents and restore the pixels outside the mask: faces (F, 3, R, R) in [-1, 1]."""
    decoded = codec.decode(latents[0].permute(1, 0, 2, 3).float()).float().cpu()
    keep = conditioning.pixel_mask.to(decoded)
    return decoded * (1.0 - keep) + conditioning.ref_pixels.to(decoded) * keep


def paste_faces(frames: torch.Tensor, faces: torch.Tensor, aligned: AlignedFaces, aligner: FaceAligner) -> torch.Tensor:
    """Warp generated faces (N, 3, R, R) in [-1, 1] back into frames (N, H, W, 3); frames without a face pass through."""
    out = _as_uint8_frames(frames).clone()
    idx = aligned.has_face.nonzero().flatten()
    if len(idx):
        restored = aligner.restore(out[idx], faces[idx], aligned.matrices[idx])
        out[idx] = torch.as_tensor(restored, dtype=torch.uint8).cpu()
    return out


# ---------------------------------------------------------------------------------------------------------------
# frame bookkeeping


def pingpong_indices(num_source: int, num_out: int) -> torch.Tensor:
    """Source-frame index of every output frame: forward, reversed, forward, ... (the official loop_video)."""
    if num_source <= 0:
        raise ValueError("the video has no frames")
    cycle = list(range(num_source)) + list(range(num_source - 1, -1, -1))
    reps = math.ceil(num_out / len(cycle))
    return torch.tensor((cycle * reps)[:num_out], dtype=torch.long)


# ---------------------------------------------------------------------------------------------------------------
# the one-call pipeline


@dataclass
class LipSyncResult:
    frames: torch.Tensor  # uint8 (M, H, W, 3)
    fps: Fraction
    waveform: torch.Tensor  # float32 (C, S): the input audio (original rate and channels), trimmed to the video
    sample_rate: int
    has_face: torch.Tensor  # bool (M,)


class LipSyncPipeline:
    """frames + frame rate + waveform + sample rate -> lip-synced frames (same size and frame rate as the input)."""

    def __init__(self, unet, vae_codec, audio_encoder: WhisperAudioEncoder, face_detector, mask: torch.Tensor,
                 resolution: int, device: torch.device | str = "cpu", selector: FaceSelector | None = None):
        self.unet = unet
        self.vae_codec = vae_codec
        self.audio_encoder = audio_encoder
        self.face_detector = face_detector
        self.mask = mask.to(torch.float32).cpu()
        self.resolution = int(resolution)
        self.device = torch.device(device)
        self.selector = selector
        if tuple(self.mask.shape) != (self.resolution, self.resolution):
            raise ValueError(f"mask is {tuple(self.mask.shape)}, expected ({self.resolution}, {self.resolution})")

    def __call__(self, frames, fps, waveform, sample_rate: int, steps: int = 20, guidance: float = 1.5,
                 deepcache: bool = True, deepcache_interval: int = 3, seed: int = 1247,
                 progress: ProgressFn | None = None) -> LipSyncResult:
        frames = _as_uint8_frames(frames)
        waveform = _as_waveform(waveform)
        fps = as_fraction(fps)
        num_out = max(1, num_frames_for_duration(waveform.shape[-1], sample_rate, fps))
        order = pingpong_indices(frames.shape[0], num_out)
        windows = math.ceil(num_out / WINDOW)
        n_src = min(frames.shape[0], num_out)
        total = n_src + 1 + windows * (steps + 2)
        tracker = _Progress(progress, total)

        aligner = FaceAligner(self.resolution, device=self.device)
        aligned = detect_and_align(frames[:n_src], self.face_detector, aligner, self.selector,
                                   progress=lambda i, n: tracker.set(i))
        audio = audio_embeddings(self.audio_encoder, waveform, sample_rate, fps, num_out)
        tracker.advance(1)

        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        lat = self.resolution // VAE_DOWNSCALE
        shared_noise = initial_noise(1, lat, lat, generator=generator)  # one frame, shared by every frame
        if hasattr(self.vae_codec, "generator"):
            self.vae_codec.generator = generator

        out = []
        for start in range(0, num_out, WINDOW):
            idx = order[start:start + WINDOW]
            window_frames = frames[idx]
            window_faces = aligned.select(idx)
            out.append(self._window(window_frames, window_faces, audio[start:start + WINDOW], shared_noise,
                                    aligner, steps, guidance, deepcache_interval if deepcache else 1, tracker))
        result_frames = torch.cat(out)
        keep = round(Fraction(num_out) / fps * sample_rate)
        return LipSyncResult(result_frames, fps, waveform[:, :keep], sample_rate, aligned.has_face[order])

    def _window(self, frames, aligned: AlignedFaces, audio, shared_noise, aligner, steps, guidance,
                deepcache_interval, tracker: _Progress) -> torch.Tensor:
        idx = aligned.has_face.nonzero().flatten()
        if len(idx) == 0:
            tracker.advance(steps + 2)
            return frames.clone()
        faces = aligned.faces[idx]
        conditioning = encode_faces(self.vae_codec, faces, self.mask)
        tracker.advance(1)
        noise = shared_noise.expand(-1, -1, len(idx), -1, -1)
        latents = sample_latents(self.unet, conditioning, audio[idx], noise, steps, guidance, deepcache_interval,
                                 on_step=lambda i, n: tracker.advance(1))
        decoded = decode_faces(self.vae_codec, latents, conditioning)
        tracker.advance(1)
        generated = torch.zeros(len(aligned), *decoded.shape[1:])
        generated[idx] = decoded
        return paste_faces(frames, generated, aligned, aligner)


class _Progress:
    def __init__(self, fn: ProgressFn | None, total: int):
        self.fn, self.total, self.done = fn, total, 0

    def set(self, done: int) -> None:
        self.done = done
        if self.fn is not None:
            self.fn(self.done, self.total)

    def advance(self, n: int) -> None:
        self.set(self.done + n)


def _frames_to_clip(latents: torch.Tensor) -> torch.Tensor:
    """(F, C, h, w) -> (1, C, F, h, w)"""
    return latents.permute(1, 0, 2, 3).unsqueeze(0).contiguous()


def _as_uint8_frames(frames) -> torch.Tensor:
    frames = torch.as_tensor(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3) RGB, got shape {tuple(frames.shape)}")
    if frames.shape[0] == 0:
        raise ValueError("the video has no frames")
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    return frames.cpu()


def _as_waveform(waveform) -> torch.Tensor:
    waveform = torch.as_tensor(waveform, dtype=torch.float32)
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim != 2 or waveform.shape[-1] == 0:
        raise ValueError(f"audio must be (channels, samples) with at least one sample, got {tuple(waveform.shape)}")
    return waveform.cpu()
