"""The whole LatentSync data path, readable top to bottom, working on windows of frames.

video frames ─► detect + align faces ─► (per 16-frame window) VAE-encode masked / reference faces
audio ───────► Whisper features ─► one 50-token window per output frame ─┐
                                                                         ▼
            DDIM + classifier-free guidance + DeepCache in the 3-D U-Net ─► VAE decode ─► paste back ─► frames

Each stage is a plain function so that the ComfyUI nodes (one node per stage) and `LipSyncPipeline` run exactly the
same code. `LipSyncPipeline.run` streams: it reads a `FrameSource` (a video file, or frames in memory) window by
window and hands each finished window to a sink (a progressive video writer, or a tensor), so memory stays flat
whatever the video's length; `LipSyncPipeline.__call__` is the same run on frames in memory. Frames are read in
source order for face detection (the smoothing of the alignment follows the video), and looked up again for every
output window in the order the length mode gives (ping-pong re-reads the video rather than holding it).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

import cv2
import numpy as np
import torch

from .audio.features import AudioFeatureStream
from .audio.resample import to_mono_16k
from .audio.whisper_encoder import WhisperAudioEncoder
from .audio.windows import as_fraction
from .face.align import FaceAligner
from .face.gaps import BRIDGED, DEFAULT_MAX_GAP, FACE, NONE, GapBridger, ranges
from .face.selection import FaceSelector
from .overlap import run_stages
from .sampling.ddim import make_scheduler
from .sampling.denoise import check_cfg_batch, denoise_window, initial_noise
from .timeline import OutputPlan, SourceTiming, check_length_mode, plan_output, source_order

WINDOW = 16  # frames per U-Net call (the model was trained on 16-frame clips)
LATENT_CHANNELS = 4
VAE_DOWNSCALE = 8
SCENE_CUT_LEVELS = 30.0  # mean |difference| of 32x32 grey thumbnails above which a gap frame is another picture

ProgressFn = Callable[[int, int], None]
"""progress(done, total): called as work advances; it may raise to cancel the run."""


class NoFaceError(ValueError):
    """strict_faces: a frame that would pass through without a face."""


@dataclass
class AlignedFaces:
    """Faces of a frame sequence, aligned to the model's template; everything paste-back needs travels with it."""

    faces: torch.Tensor  # uint8 (N, R, R, 3): aligned crops (grey where a frame has no face)
    matrices: torch.Tensor  # float32 (N, 2, 3): frame -> crop affine (OpenCV convention); zeros where no face
    boxes: torch.Tensor  # float32 (N, 4): detection box x1, y1, x2, y2 in frame pixels; NaN where no face
    has_face: torch.Tensor  # bool (N,): detected, or bridged across a short gap
    resolution: int
    frame_size: tuple[int, int]  # (H, W) of the source frames
    bridged: torch.Tensor | None = None  # bool (N,): alignment interpolated across a short detection gap

    def __len__(self) -> int:
        return int(self.has_face.shape[0])

    def select(self, index: torch.Tensor | Sequence[int]) -> AlignedFaces:
        index = torch.as_tensor(index, dtype=torch.long)
        bridged = None if self.bridged is None else self.bridged[index]
        return AlignedFaces(self.faces[index], self.matrices[index], self.boxes[index], self.has_face[index],
                            self.resolution, self.frame_size, bridged)


@dataclass
class MaskedLatents:
    """The conditioning of one window: what the U-Net sees besides the noisy latents (all scaled by 0.18215)."""

    masked_image_latents: torch.Tensor  # (1, 4, F, h, w): the face with the mouth region greyed out
    ref_latents: torch.Tensor  # (1, 4, F, h, w): the unmasked face (official inference: the frame itself)
    mask_latents: torch.Tensor  # (1, 1, F, h, w): 1 = keep, 0 = regenerate (nearest-downsampled pixel mask)
    ref_pixels: torch.Tensor  # (F, 3, R, R) in [-1, 1]: restored outside the mask after decoding
    pixel_mask: torch.Tensor  # (R, R): 1 = keep, 0 = regenerate


# ---------------------------------------------------------------------------------------------------------------
# frame sources and sinks


class FrameSource(Protocol):
    """Random access to a video's frames: `timing`, `frame_size` (H, W), `len()`, `read(start, stop)` -> uint8
    (n, H, W, 3). `latentsync.video_io.VideoFileSource` reads a file; `TensorFrameSource` frames in memory."""

    timing: SourceTiming
    frame_size: tuple[int, int]

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> torch.Tensor: ...


class FrameSink(Protocol):
    """Receives the output window by window: `write(frames uint8 (n, H, W, 3), starts)` (start ticks of the frames,
    in the plan's time base). `latentsync.video_io.VideoWriter` encodes them; `TensorSink` keeps them."""

    def write(self, frames: torch.Tensor, starts) -> None: ...


class TensorFrameSource:
    """Frames in memory: uint8 (N, H, W, 3), or float (N, H, W, C) in [0, 1] with C = 1, 3 or 4 (a ComfyUI IMAGE),
    converted to uint8 one window at a time (never copied whole)."""

    def __init__(self, frames: torch.Tensor, fps=None, timing: SourceTiming | None = None):
        frames = torch.as_tensor(frames)
        if frames.ndim != 4 or frames.shape[-1] not in ((3,) if frames.dtype == torch.uint8 else (1, 3, 4)):
            raise ValueError(f"frames must be (N, H, W, 3) RGB, got shape {tuple(frames.shape)}")
        if frames.shape[0] == 0:
            raise ValueError("the video has no frames")
        if frames.dtype != torch.uint8 and not frames.is_floating_point():
            raise ValueError(f"frames must be uint8 or float in [0, 1], got {frames.dtype}")
        self.frames = frames
        self.timing = timing if timing is not None else SourceTiming.constant_rate(frames.shape[0], fps)
        if len(self.timing) != frames.shape[0]:
            raise ValueError(f"{frames.shape[0]} frames but timing for {len(self.timing)}")
        self.frame_size = (int(frames.shape[1]), int(frames.shape[2]))

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def read(self, start: int, stop: int) -> torch.Tensor:
        return to_uint8_rgb(self.frames[start:stop])


def to_uint8_rgb(frames: torch.Tensor) -> torch.Tensor:
    """uint8 RGB as it is (on the CPU); float in [0, 1] (1, 3 or 4 channels) -> uint8 RGB, rounded."""
    if frames.dtype == torch.uint8:
        return frames.cpu()
    if frames.shape[-1] == 1:
        frames = frames.expand(*frames.shape[:-1], 3)
    return frames[..., :3].detach().float().cpu().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


class TensorSink:
    """Keeps the output in one preallocated tensor: uint8, or float32 in [0, 1] (`dtype=torch.float32`, a ComfyUI
    IMAGE) converted window by window."""

    def __init__(self, num_frames: int, frame_size: tuple[int, int], dtype: torch.dtype = torch.uint8):
        self.frames = torch.empty((num_frames, *frame_size, 3), dtype=dtype)
        self.count = 0

    def write(self, frames: torch.Tensor, starts=None) -> None:
        n = frames.shape[0]
        target = self.frames[self.count:self.count + n]
        if self.frames.dtype == torch.uint8:
            target.copy_(frames)
        else:
            target.copy_(frames).div_(255.0)
        self.count += n


def frame_cache_size(max_gap: int = DEFAULT_MAX_GAP) -> int:
    """Frames `LipSyncPipeline.run` keeps decoded: one window, the detection look-ahead and a few read ahead."""
    return WINDOW + max_gap + 6


REVERSE_READ_BYTES = 64 * 2**20  # how many frames a read back may keep (ping-pong's reverse pass, a loop's restart)


class _FrameCache:
    """The frames read most recently, by index (the detection look-ahead and the window being processed).

    Reading forward continues the decoder. A read that has to go back (ping-pong's reverse pass, a loop's restart)
    reads one block ending at the frame asked for and starting at the keyframe the decoder seeks to (what it decodes
    anyway is kept), at most `REVERSE_READ_BYTES` of frames (and never fewer than the capacity): so the reverse pass
    decodes each frame once more when keyframes are at most that far apart, instead of once per window."""

    def __init__(self, source: FrameSource, capacity: int, reverse_bytes: int = REVERSE_READ_BYTES):
        self.source, self.capacity = source, max(1, capacity)
        h, w = source.frame_size
        self.reverse_frames = max(self.capacity, int(reverse_bytes) // max(1, h * w * 3))
        self._frames: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._pos = 0  # where the last read stopped

    def _load(self, start: int, stop: int, keep: int) -> None:
        """Read [start, stop) and drop the least recently used frames beyond `keep`."""
        block = self.source.read(start, stop)
        for k in range(start, stop):
            self._frames[k] = block[k - start]
            self._frames.move_to_end(k)
        while len(self._frames) > keep:
            self._frames.popitem(last=False)
        self._pos = stop

    def get(self, indices: Sequence[int], read_ahead: int = 1) -> torch.Tensor:
        """uint8 (len(indices), H, W, 3); missing frames are read as one contiguous block."""
        indices = [int(i) for i in indices]
        for i in indices:  # mark the frames at hand as in use first, so that loading the others keeps them
            if i in self._frames:
                self._frames.move_to_end(i)
        missing = np.array(sorted({i for i in indices if i not in self._frames}), dtype=np.int64)
        for run in np.split(missing, np.nonzero(np.diff(missing) != 1)[0] + 1) if len(missing) else []:
            start, stop = int(run[0]), int(run[-1]) + 1  # each contiguous run of missing frames is read as one block
            if start >= self._pos or not hasattr(self.source, "keyframe_before"):
                self._load(start, min(len(self.source), max(stop, start + read_ahead)), self.capacity)
            else:
                first = max(0, stop - self.reverse_frames)
                keyframe = self.source.keyframe_before(start)
                first = min(start, keyframe if keyframe >= first else first)
                self._load(first, stop, max(self.capacity, stop - first))
        for i in indices:
            if i not in self._frames:  # dropped by a later block of this request (a long read back): read it again
                self._load(i, i + 1, self.capacity + len(indices))
            self._frames.move_to_end(i)
        return torch.stack([self._frames[i] for i in indices])


def _thumbnail(frame: torch.Tensor) -> np.ndarray:
    grey = cv2.cvtColor(frame.numpy(), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


class FaceTracker:
    """Per source frame, in video order: detect, choose the face (tracking the chosen person), bridge short gaps,
    and compute the (smoothed) alignment matrix. `ensure(k)` makes frames 0..k final, reading at most
    `max_gap + 1` frames further. `status` (NONE / FACE / BRIDGED), `matrices` and `boxes` cover every frame made
    final so far (a few bytes per frame: the video itself is never held).

    A detector with `detect_batch` (same faces as `detect`, frame by frame) gets the frames `ensure(k)` needs in
    any case, up to k, in batches of at most `WINDOW` frames; the look-ahead past k stays frame by frame."""

    def __init__(self, frames: _FrameCache, detector, aligner: FaceAligner, selector: FaceSelector | None = None,
                 max_gap: int = DEFAULT_MAX_GAP, on_detect: Callable[[], None] | None = None):
        n = len(frames.source)
        self.frames, self.detector, self.aligner = frames, detector, aligner
        self.selector = selector or FaceSelector()
        self.selector.reset()
        self.bridger = GapBridger(max_gap)
        self.on_detect = on_detect
        self.status = np.zeros(n, dtype=np.uint8)
        self.matrices = torch.zeros(n, 2, 3, dtype=torch.float32)
        self.boxes = torch.full((n, 4), float("nan"), dtype=torch.float32)
        self.detected = 0  # frames 0..detected-1 went through the detector
        self.final = 0  # frames 0..final-1 are final
        self._thumbs: dict[int, np.ndarray] = {}
        self._last_face = -1
        self._detect_batch = getattr(detector, "detect_batch", None)
        self._ahead: dict[int, list] = {}  # faces of frames detected in a batch, not yet taken

    def __len__(self) -> int:
        return int(self.status.shape[0])

    def ensure(self, index: int) -> None:
        index = min(int(index), len(self) - 1)
        while self.final <= index:
            if self.detected < len(self):
                k = self.detected
                faces = self._detect(k, index)
                chosen = self.selector.select(faces)
                self.detected += 1
                if chosen is None:
                    finished = self.bridger.push(k, None)
                else:
                    finished = self.bridger.push(k, chosen.points3, chosen.bbox)
                for item in list(finished):
                    self._finalize(item)
                if self.on_detect is not None:
                    self.on_detect()
            else:
                for item in list(self.bridger.finish()):
                    self._finalize(item)

    def _detect(self, k: int, index: int) -> list:
        """Frame k's faces (and its thumbnail kept for `_same_picture`)."""
        if k not in self._ahead:
            stop = min(max(k, index) + 1, k + WINDOW) if self._detect_batch is not None else k + 1
            frames = self.frames.get(list(range(k, stop)), read_ahead=4)
            if self._detect_batch is not None:
                self._ahead.update(zip(range(k, stop), self._detect_batch(frames)))
            else:
                self._ahead[k] = self.detector.detect(frames[0].numpy())
            for j, frame in enumerate(frames):
                self._thumbs[k + j] = _thumbnail(frame)
        return self._ahead.pop(k)

    def _finalize(self, item) -> None:
        k = item.index
        status = item.status
        if status == BRIDGED and not self._same_picture(k):
            status = NONE  # a cut or a flash frame inside the gap: not the same picture, pass it through
        if status != NONE:
            self.matrices[k] = self.aligner.matrices(item.points3)[0]
            if item.bbox is not None:
                self.boxes[k] = torch.as_tensor(item.bbox, dtype=torch.float32)
        if status == FACE:
            self._thumbs.pop(self._last_face, None)
            self._last_face = k
        else:
            self._thumbs.pop(k, None)  # only the last face and the frames of an open gap are compared
        self.status[k] = status
        self.final = k + 1

    def _same_picture(self, k: int) -> bool:
        """A gap frame looks like one of the detected frames around it (the detection just missed)."""
        before, after = self._last_face, self.detected - 1  # the bridge's end is the newest detected frame
        diffs = [float(np.abs(self._thumbs[k] - self._thumbs[j]).mean()) for j in (before, after) if j in self._thumbs]
        return bool(diffs) and min(diffs) <= SCENE_CUT_LEVELS


# ---------------------------------------------------------------------------------------------------------------
# stages


def detect_and_align(frames: torch.Tensor, detector, aligner: FaceAligner, selector: FaceSelector | None = None,
                     progress: ProgressFn | None = None, max_gap: int = DEFAULT_MAX_GAP) -> AlignedFaces:
    """Detect one face per frame, bridge gaps of up to `max_gap` frames, and warp each face to the template.
    frames: uint8 (N, H, W, 3) RGB (or a float IMAGE in [0, 1])."""
    source = TensorFrameSource(frames, fps=1)
    n = len(source)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], n)

    tracker = FaceTracker(_FrameCache(source, WINDOW), detector, aligner, selector, max_gap, on_detect=tick)
    tracker.ensure(n - 1)
    status = torch.from_numpy(tracker.status)
    has_face = status != NONE
    r = aligner.resolution
    faces = torch.full((n, r, r, 3), 127, dtype=torch.uint8)
    idx = has_face.nonzero().flatten()
    for start in range(0, len(idx), WINDOW):
        part = idx[start:start + WINDOW]
        window = torch.stack([source.read(i, i + 1)[0] for i in part.tolist()])
        faces[part] = align_faces(window, tracker.matrices[part], aligner)
    return AlignedFaces(faces, tracker.matrices, tracker.boxes, has_face, r, source.frame_size,
                        bridged=status == BRIDGED)


def align_faces(frames: torch.Tensor, matrices: torch.Tensor, aligner: FaceAligner) -> torch.Tensor:
    """Warp frames uint8 (N, H, W, 3) with their alignment matrices to model-size faces uint8 (N, R, R, 3)."""
    crops = aligner.warp_to_crop(frames, matrices)
    return torch.as_tensor(aligner.resize_to_model(crops), dtype=torch.uint8).cpu()


def audio_embeddings(encoder: WhisperAudioEncoder, waveform, sample_rate: int, fps: float | Fraction,
                     num_frames: int) -> torch.Tensor:
    """Per-frame Whisper windows (num_frames, 50, 384) for frames shown at `fps` from time 0."""
    fps = as_fraction(fps)
    stream = AudioFeatureStream(encoder, to_mono_16k(waveform, sample_rate))
    ticks = np.arange(num_frames, dtype=np.int64) * fps.denominator
    return stream.windows_at(ticks, fps.numerator)


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
                   on_step: Callable[[int, int], None] | None = None, cfg_batch: str = "joint",
                   ff_chunks: int = 1) -> torch.Tensor:
    """Denoise one window. audio: (F, 50, 384); noise: (1, 4, F, h, w). Returns scaled latents (1, 4, F, h, w).
    `cfg_batch` / `ff_chunks`: see `denoise_window`. The inputs go to the U-Net's compute device and dtype (its
    `device` / `dtype` attributes, else those of its first parameter)."""
    if hasattr(unet, "device") and hasattr(unet, "dtype"):
        cast = dict(device=unet.device, dtype=unet.dtype)
    else:
        p = next(unet.parameters())
        cast = dict(device=p.device, dtype=p.dtype)
    return denoise_window(
        unet, make_scheduler(), noise.to(**cast), conditioning.mask_latents.to(**cast),
        conditioning.masked_image_latents.to(**cast), conditioning.ref_latents.to(**cast),
        audio.unsqueeze(0).to(**cast), guidance_scale=guidance, num_inference_steps=steps,
        deepcache_interval=deepcache_interval, on_step=on_step, cfg_batch=cfg_batch, ff_chunks=ff_chunks,
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
    return torch.from_numpy(source_order("pingpong", num_source, num_out))


# ---------------------------------------------------------------------------------------------------------------
# the pipeline


@dataclass
class LipSyncReport:
    """What a run did: the output plan, each source frame's face status (NONE / FACE / BRIDGED; frames never
    needed stay NONE), and the warnings it gave."""

    plan: OutputPlan
    source_status: np.ndarray
    warnings: list[str] = field(default_factory=list)
    decoded_frames: int | None = None  # frames the source's decoder gave during the run (None: frames in memory)
    stage_seconds: dict | None = None  # busy seconds of each stage: prepare (read, detect, align, audio), model, finish

    @property
    def no_face_at_all(self) -> bool:
        return not bool(np.any(self.source_status == FACE))

    @property
    def output_status(self) -> np.ndarray:
        return self.source_status[self.plan.source]

    @property
    def has_face(self) -> torch.Tensor:
        """bool per output frame: its face was regenerated (detected or bridged)."""
        return torch.from_numpy(self.output_status != NONE)

    def coverage(self) -> dict:
        out = self.output_status
        m = int(out.shape[0])
        processed = int(np.count_nonzero(out != NONE))
        return {
            "output_frames": m, "processed": processed, "detected": int(np.count_nonzero(out == FACE)),
            "bridged": int(np.count_nonzero(out == BRIDGED)), "passed_through": m - processed,
            "fraction_processed": round(processed / m, 6) if m else 0.0,
            "processed_ranges": ranges(out != NONE), "bridged_ranges": ranges(out == BRIDGED),
            "passed_through_ranges": ranges(out == NONE),
        }

    def to_dict(self) -> dict:
        plan = self.plan
        fps = plan.fps
        return {
            "length_mode": plan.mode, "fps": f"{fps.numerator}/{fps.denominator}" if fps.denominator != 1 else str(fps),
            "variable_frame_rate": not plan.constant, "source_frames": int(self.source_status.shape[0]),
            "output_frames": len(plan), "output_seconds": round(float(plan.duration), 6),
            "audio_seconds": round(float(plan.audio_duration), 6), "coverage": self.coverage(),
            "decoded_frames": self.decoded_frames, "stage_seconds": self.stage_seconds, "warnings": list(self.warnings),
        }


@dataclass
class LipSyncResult:
    frames: torch.Tensor  # uint8 (M, H, W, 3)
    fps: Fraction
    waveform: torch.Tensor  # float32 (C, S): the input audio (original rate and channels), cut (or padded) to the video
    sample_rate: int
    has_face: torch.Tensor  # bool (M,)
    report: LipSyncReport | None = None


def output_waveform(waveform: torch.Tensor, sample_rate: int, plan: OutputPlan) -> torch.Tensor:
    """The output's audio: the user's audio cut to the video, or padded with silence (`silence` mode)."""
    keep = plan.audio_samples(sample_rate)
    if keep <= waveform.shape[-1]:
        return waveform[:, :keep]
    return torch.nn.functional.pad(waveform, (0, keep - waveform.shape[-1]))


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
                 progress: ProgressFn | None = None, length_mode: str = "pingpong",
                 max_gap: int = DEFAULT_MAX_GAP, strict_faces: bool = False, overlap: bool = True,
                 **model_options) -> LipSyncResult:
        """In memory: the same run as `run`, from frames (uint8 (N, H, W, 3)) to a frame tensor."""
        frames = _as_uint8_frames(frames)
        waveform = _as_waveform(waveform)
        source = TensorFrameSource(frames, fps=as_fraction(fps))
        plan = self.plan(source.timing, waveform, sample_rate, length_mode)
        sink = TensorSink(len(plan), source.frame_size)
        report = self.run(source, plan, waveform, sample_rate, sink, steps=steps, guidance=guidance,
                          deepcache=deepcache, deepcache_interval=deepcache_interval, seed=seed, progress=progress,
                          max_gap=max_gap, strict_faces=strict_faces, overlap=overlap, **model_options)
        return LipSyncResult(sink.frames, plan.fps, output_waveform(waveform, sample_rate, plan), sample_rate,
                             report.has_face, report)

    @staticmethod
    def plan(timing: SourceTiming, waveform, sample_rate: int, length_mode: str = "pingpong") -> OutputPlan:
        """Which source frame each output frame shows, and when (see `latentsync.timeline`)."""
        check_length_mode(length_mode)
        samples = _as_waveform(waveform).shape[-1]
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {sample_rate}")
        return plan_output(timing, Fraction(samples, int(sample_rate)), length_mode)

    def run(self, source: FrameSource, plan: OutputPlan, waveform, sample_rate: int, sink: FrameSink,
            steps: int = 20, guidance: float = 1.5, deepcache: bool = True, deepcache_interval: int = 3,
            seed: int = 1247, progress: ProgressFn | None = None, max_gap: int = DEFAULT_MAX_GAP,
            strict_faces: bool = False, overlap: bool = True, cfg_batch: str = "joint", ff_chunks: int = 1,
            compile: bool = False) -> LipSyncReport:
        """Stream `plan`'s output frames window by window from `source` into `sink`. Memory holds a few windows, the
        detection look-ahead (`max_gap` + a few frames) and a few numbers per frame, whatever the length.

        overlap: while the model works on window k, a producer thread reads, detects, aligns and gathers the audio of
        the next windows and a finisher thread pastes back and writes the previous ones (`latentsync.overlap`); the
        output is the same frame for frame as with `overlap=False` (one stage after another). The model (VAE and
        U-Net) and every call of `progress` stay in the calling thread. `cfg_batch`, `ff_chunks`: see
        `denoise_window`; `compile`: the U-Net's blocks are compiled first (`UNet3DConditionModel.compile_blocks`)."""
        sampling = dict(cfg_batch=check_cfg_batch(cfg_batch), ff_chunks=int(ff_chunks))
        if compile:
            self.unet.compile_blocks()
        waveform = _as_waveform(waveform)
        m = len(plan)
        windows = -(-m // WINDOW)
        needed = min(len(source), int(plan.source.max()) + max_gap + 2)
        tracker_progress = _Progress(progress, needed + 1 + windows * (steps + 2))

        aligner = FaceAligner(self.resolution, device=self.device)
        cache = _FrameCache(source, frame_cache_size(max_gap))
        tracker = FaceTracker(cache, self.face_detector, aligner, self.selector, max_gap,
                              on_detect=lambda: tracker_progress.advance(1))

        wave16k = to_mono_16k(waveform, sample_rate)
        if plan.mode == "silence":  # frames past the audio hear silence
            total = round(plan.duration * 16000)
            wave16k = torch.nn.functional.pad(wave16k, (0, max(0, total - wave16k.shape[0])))
        audio = AudioFeatureStream(self.audio_encoder, wave16k)
        tracker_progress.advance(1)

        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        lat = self.resolution // VAE_DOWNSCALE
        shared_noise = initial_noise(1, lat, lat, generator=generator)  # one frame, shared by every frame
        if hasattr(self.vae_codec, "generator"):
            self.vae_codec.generator = generator

        def prepare():
            """Producer: frames, face status, alignment, aligned faces and audio of each output window in turn. (The
            paste masks are made by the finisher, frame by frame: over a face's region they weigh more than the
            frame itself, too much to queue.)"""
            for start in range(0, m, WINDOW):
                stop = min(start + WINDOW, m)
                src = plan.source[start:stop]
                tracker.ensure(int(src.max()))
                status = tracker.status[src]
                if strict_faces and np.any(status == NONE):
                    j = start + int(np.nonzero(status == NONE)[0][0])
                    t = float(Fraction(int(plan.starts[j]), plan.base))
                    raise NoFaceError(f"strict faces: no face in output frame {j} (source frame {int(plan.source[j])}, "
                                      f"at {t:.2f} s). Turn strict faces off to pass such frames through unchanged.")
                frames = cache.get(src.tolist())
                ticks = plan.starts[start:stop]
                idx = torch.from_numpy(np.nonzero(status != NONE)[0])
                window = _Window(frames, ticks, idx, tracker.matrices[torch.from_numpy(src)][idx])
                if len(idx):
                    window.faces = align_faces(frames[idx], window.matrices, aligner)
                    window.audio = audio.windows_at(ticks, plan.base)[idx]
                yield window
                del window, frames  # not held while the next window is made (this one may be finished by then)

        def sample(window: _Window) -> _Window:
            """The model, in the caller's thread: VAE-encode, denoise, VAE-decode the window's faces."""
            if len(window.idx) == 0:
                tracker_progress.advance(steps + 1)
                return window
            conditioning = encode_faces(self.vae_codec, window.faces, self.mask)
            tracker_progress.advance(1)
            noise = shared_noise.expand(-1, -1, len(window.idx), -1, -1)
            latents = sample_latents(self.unet, conditioning, window.audio, noise, steps, guidance,
                                     deepcache_interval if deepcache else 1,
                                     on_step=lambda i, n: tracker_progress.advance(1), **sampling)
            window.decoded = decode_faces(self.vae_codec, latents, conditioning)
            window.faces = window.audio = None
            return window

        def finish(window: _Window) -> None:
            """Finisher: paste the generated faces back and hand the window to the sink."""
            out = window.frames  # the window's own copy (cache.get stacks them): pasted into in place
            if len(window.idx):
                every = len(window.idx) == len(out)
                restored = aligner.restore(out if every else out[window.idx], window.decoded, window.matrices,
                                           in_place=True)
                if not (every and restored.device == out.device):
                    out[window.idx] = restored.cpu()
            window.decoded = None
            sink.write(out, window.ticks)
            tracker_progress.advance(1)

        decoded_before = getattr(source, "frames_decoded", None)
        busy = run_stages(prepare(), sample, finish, overlap=overlap, poll=tracker_progress.poll)
        tracker_progress.report()  # what the other threads counted last, in this thread

        report = LipSyncReport(plan, tracker.status.copy())
        report.stage_seconds = {"prepare": round(busy["produce"], 4), "model": round(busy["work"], 4),
                                "finish": round(busy["finish"], 4)}
        if decoded_before is not None:
            report.decoded_frames = int(source.frames_decoded - decoded_before)
        cov = report.coverage()
        if report.no_face_at_all:
            report.warnings.append(f"no face found in any of the {len(source)} frames: the output is the input "
                                   "video unchanged (with the audio)")
        elif cov["passed_through"]:
            report.warnings.append(f"no face found in {cov['passed_through']} of {m} frames; they are passed "
                                   "through unchanged")
        return report


@dataclass
class _Window:
    """One output window on its way through the stages (what each stage adds is freed by the next)."""

    frames: torch.Tensor  # uint8 (n, H, W, 3): the source frames the window shows
    ticks: np.ndarray  # start ticks of its frames, in the plan's time base
    idx: torch.Tensor  # positions of the frames with a face (detected or bridged)
    matrices: torch.Tensor  # (len(idx), 2, 3) their alignment matrices
    faces: torch.Tensor | None = None  # uint8 (len(idx), R, R, 3) aligned faces
    audio: torch.Tensor | None = None  # (len(idx), 50, 384) their audio windows
    decoded: torch.Tensor | None = None  # (len(idx), 3, R, R) generated faces in [-1, 1]


class _Progress:
    """Progress counted from any stage's thread, reported (through `fn`, which may raise to cancel) only in the
    thread that created it: at once when counted there, else at the caller's next `poll`."""

    def __init__(self, fn: ProgressFn | None, total: int, poll_seconds: float = 0.25):
        self.fn, self.total, self.done = fn, total, 0
        self._owner = threading.get_ident()
        self._lock = threading.Lock()
        self._poll_seconds = poll_seconds
        self._last = 0.0

    def advance(self, n: int) -> None:
        with self._lock:
            self.done = min(self.done + n, self.total)
        if threading.get_ident() == self._owner:
            self.report()

    def report(self) -> None:
        self._last = time.monotonic()
        if self.fn is not None:
            self.fn(self.done, self.total)

    def poll(self) -> None:
        """While the caller waits for another stage: report now and then (a Cancel is seen there)."""
        if time.monotonic() - self._last >= self._poll_seconds:
            self.report()


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
