"""Lip-sync scoring with SyncNet-v2: LSE-C (confidence), LSE-D (distance) and the audio-video offset, as the official
LatentSync / syncnet_python evaluation computes them, for any frame rate, window by window.

    frames (any fps) ─► 25 fps (frame picking) ─► chosen face, tracked ─► 224² crops ─► 5-frame windows ─► lip emb.
    audio (any rate) ─► 16 kHz mono int16 ─► MFCC 13 × 100 Hz ─► 20-step windows (4 per frame) ─► audio emb.
                                                   ─► distances at offsets −15…+15 frames ─► offset, LSE-D, LSE-C

Window v covers video frames v … v+4 and MFCC frames 4v … 4v+19; as in the official code a track of L frames gives
L − 5 windows (frames at 25 fps; at least 6 needed). Only the chosen face is scored (the official evaluation scores
every face track of the video and averages them; see `SyncScore.tracks`). When that face disappears for more than 25
frames its track ends and a new one starts when it is found again; the distance rows of all tracks are pooled (a
frame-weighted mean), which equals the official figures whenever there is one track.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..face.selection import FaceSelector
from .face_crops import CROP_SCALE, CropEvent, FaceCropTracker
from .frame_rate import TARGET_FPS, FrameRateSampler, num_target_frames
from .mfcc import SAMPLE_RATE, MfccFrontEnd, to_pcm16
from .sweep import VSHIFT, DistanceSweep, framewise_confidence, sweep_figures
from .syncnet_v2 import AUDIO_STEPS, LIP_FRAMES

SAMPLES_PER_FRAME = SAMPLE_RATE // TARGET_FPS  # 640
MFCC_PER_FRAME = 4
MIN_FRAMES = LIP_FRAMES + 1  # the official loop scores windows v < L - 5

ProgressFn = Callable[[int, int], None]


class SyncScoreError(ValueError):
    """The input cannot be scored. ``reason``: "no_face", "too_short" or "no_audio"."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class SyncScore:
    """Sync figures of one video (one chosen face).

    confidence (LSE-C, higher = better synced), distance (LSE-D, lower = better), offset_frames (at 25 fps;
    > 0: the audio is ahead of the video), per_frame ((num_frames,) float32 confidence of the window starting at each
    25 fps frame, NaN where no window was scored), mean_dists ((31,) mean distance at offsets +15 … −15, i.e. index j
    is offset 15 − j).
    """

    confidence: float
    distance: float
    offset_frames: int
    per_frame: torch.Tensor
    mean_dists: torch.Tensor
    num_frames_scored: int
    num_frames: int  # 25 fps frames looked at (the video, cut to the audio)
    frames_with_face: int
    tracks: list[dict] = field(default_factory=list)  # {"start_frame", "num_frames", "num_windows"} per track
    frame_rate: int = TARGET_FPS
    vshift: int = VSHIFT

    @property
    def offset_seconds(self) -> float:
        return self.offset_frames / self.frame_rate

    @property
    def offsets(self) -> list[int]:
        """The offset (frames) of each entry of `mean_dists`."""
        return [self.vshift - j for j in range(2 * self.vshift + 1)]

    def to_dict(self) -> dict:
        """JSON-ready (NaN -> None)."""
        per_frame = [None if math.isnan(v) else round(v, 5) for v in self.per_frame.tolist()]
        return {
            "confidence": self.confidence,
            "distance": self.distance,
            "offset_frames": self.offset_frames,
            "offset_seconds": self.offset_seconds,
            "num_frames_scored": self.num_frames_scored,
            "num_frames": self.num_frames,
            "frames_with_face": self.frames_with_face,
            "frame_rate": self.frame_rate,
            "offsets": self.offsets,
            "mean_dists": [round(v, 5) for v in self.mean_dists.tolist()],
            "per_frame": per_frame,
            "tracks": list(self.tracks),
        }


class _TrackWindows:
    """Crops of one face track -> lip and audio embeddings of its 5-frame windows -> distance rows."""

    def __init__(self, scorer: SyncScorer, start: int):
        self.scorer, self.start = scorer, start
        self.crops: list[np.ndarray] = []  # crops [crop_base, received)
        self.crop_base = 0
        self.received = 0
        self.next_window = 0
        self.sweep = DistanceSweep()

    def add(self, crop: np.ndarray) -> None:
        self.crops.append(crop)
        self.received += 1
        if self.received - LIP_FRAMES - self.next_window >= self.scorer.batch_size:
            self._run(self.scorer.batch_size)

    def finish(self) -> torch.Tensor:
        while (count := self.received - LIP_FRAMES - self.next_window) > 0:
            self._run(min(count, self.scorer.batch_size))
        return self.sweep.finish()

    def _run(self, count: int) -> None:
        """Windows next_window … next_window + count − 1 (window v needs crop v + 5 to exist: v < L − 5)."""
        sc = self.scorer
        v0 = self.next_window
        local = np.stack(self.crops[v0 - self.crop_base : v0 + count + LIP_FRAMES - 1 - self.crop_base])
        clip = torch.from_numpy(local).permute(3, 0, 1, 2).float()  # (3, count + 4, 224, 224) BGR 0..255
        lips = torch.stack([clip[:, i : i + LIP_FRAMES] for i in range(count)])  # (count, 3, 5, 224, 224)
        m0 = MFCC_PER_FRAME * (self.start + v0)
        mfcc = torch.from_numpy(sc.mfcc.frames(m0, m0 + MFCC_PER_FRAME * (count - 1) + AUDIO_STEPS)).float()
        audio = torch.stack([mfcc[:, MFCC_PER_FRAME * i : MFCC_PER_FRAME * i + AUDIO_STEPS] for i in range(count)])
        with torch.inference_mode():
            lip_emb = sc.syncnet.forward_lip(lips.to(sc.device))
            aud_emb = sc.syncnet.forward_aud(audio[:, None].to(sc.device))
        self.sweep.add(lip_emb.float().cpu(), aud_emb.float().cpu())
        self.next_window += count
        drop = self.next_window - self.crop_base  # crops before the next window are never needed again
        del self.crops[:drop]
        self.crop_base += drop


class SyncScorer:
    """Streaming sync scorer: ``add(frames_chunk)`` as many times as needed (in playback order), then ``result()``.

    ``syncnet``: `SyncNetV2` (or anything with ``forward_lip`` / ``forward_aud``) on ``device``; ``detector``: a
    `latentsync.face.detector.FaceDetector`; ``selector``: which face to follow (default: the largest, tracked; it is
    reset here). ``fps``: the frames' rate (any, exact fractions kept); ``waveform`` ``(C, S)`` or ``(S,)`` at
    ``sample_rate``, the whole track (audio is small; the video is what streams). Frames after the end of the audio
    are ignored. ``progress(done, total)`` counts 25 fps frames and may raise to cancel; ``total_frames`` (source
    frames, when known) makes its total exact.
    """

    def __init__(self, syncnet, detector, fps, waveform, sample_rate, *, selector: FaceSelector | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 20, progress: ProgressFn | None = None,
                 total_frames: int | None = None, crop_scale: float = CROP_SCALE):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.syncnet, self.detector = syncnet, detector
        self.selector = selector if selector is not None else FaceSelector()
        self.selector.reset()
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.progress = progress
        self.sampler = FrameRateSampler(fps)
        try:
            pcm = to_pcm16(waveform, sample_rate)
        except ValueError as exc:
            raise SyncScoreError("no_audio", f"unusable audio: {exc}") from exc
        self.mfcc = MfccFrontEnd(pcm)
        self.audio_frames = pcm.shape[0] // SAMPLES_PER_FRAME  # 25 fps frames the audio covers
        if self.audio_frames < MIN_FRAMES:
            raise SyncScoreError("too_short", f"the audio is {pcm.shape[0] / SAMPLE_RATE:.3f} s long; SyncNet needs at "
                                 f"least {MIN_FRAMES / TARGET_FPS:.2f} s ({MIN_FRAMES} frames at 25 fps: a 5-frame "
                                 "window and one more)")
        self.total = self.audio_frames
        if total_frames is not None:
            self.total = min(self.total, num_target_frames(int(total_frames), self.sampler.fps))
        self.tracker = FaceCropTracker(crop_scale=crop_scale)
        self._track: _TrackWindows | None = None
        self._rows: list[tuple[int, torch.Tensor]] = []  # (start frame, rows) per finished track
        self._track_info: list[dict] = []
        self._detected: tuple[int, np.ndarray | None] = (-1, None)  # (source index, chosen box) of the last frame
        self.num_frames = 0  # 25 fps frames processed
        self._done: SyncScore | None = None

    # -- input ------------------------------------------------------------------------------------------------------

    def add(self, frames) -> None:
        """A chunk of frames: uint8 ``(n, H, W, 3)`` RGB, torch or numpy."""
        if self._done is not None:
            raise RuntimeError("SyncScorer.add after result()")
        chunk = _as_uint8_frames(frames)
        base = self.sampler.seen
        for k, j in self.sampler.extend(chunk.shape[0]):
            if k >= self.audio_frames:
                break
            frame = chunk[j - base]
            if j != self._detected[0]:  # a duplicated source frame keeps its detection
                face = self.selector.select(self.detector.detect(np.ascontiguousarray(frame)))
                self._detected = (j, None if face is None else np.asarray(face.bbox, dtype=np.float64))
            self._consume(self.tracker.push(k, frame[..., ::-1], self._detected[1]))
            self.num_frames = k + 1
            if self.progress is not None:
                self.progress(min(self.num_frames, self.total), self.total)

    @property
    def audio_covered(self) -> bool:
        """True once every frame the audio covers has been seen (later frames would be ignored)."""
        return self.num_frames >= self.audio_frames

    def add_chunks(self, chunks: Iterable) -> None:
        """`add` each chunk in turn, stopping early (without reading further chunks) once the audio is covered."""
        for chunk in chunks:
            self.add(chunk)
            if self.audio_covered:
                break

    def _consume(self, events: list[CropEvent]) -> None:
        for event in events:
            if event.is_end:
                self._end_track()
            else:
                if self._track is None:
                    self._track = _TrackWindows(self, event.frame)
                self._track.add(event.crop)

    def _end_track(self) -> None:
        track, self._track = self._track, None
        if track is None:
            return
        rows = track.finish()
        self._track_info.append({"start_frame": track.start, "num_frames": track.received,
                                 "num_windows": int(rows.shape[0])})
        if rows.shape[0]:
            self._rows.append((track.start, rows))

    # -- output -----------------------------------------------------------------------------------------------------

    def result(self) -> SyncScore:
        """The figures (after the last chunk). Raises `SyncScoreError` when nothing could be scored."""
        if self._done is not None:
            return self._done
        self._consume(self.tracker.finish())
        if not self._rows:
            raise self._why_nothing_scored()
        all_rows = torch.cat([rows for _, rows in self._rows])
        figures = sweep_figures(all_rows)
        per_frame = torch.full((self.num_frames,), float("nan"))
        for start, rows in self._rows:
            per_frame[start : start + rows.shape[0]] = framewise_confidence(rows, figures)
        if self.progress is not None:
            self.progress(self.total, self.total)
        self._done = SyncScore(
            confidence=figures.confidence, distance=figures.distance, offset_frames=figures.offset,
            per_frame=per_frame, mean_dists=figures.mean_dists, num_frames_scored=int(all_rows.shape[0]),
            num_frames=self.num_frames, frames_with_face=self.tracker.frames_with_face, tracks=self._track_info,
        )
        return self._done

    def _why_nothing_scored(self) -> SyncScoreError:
        n = self.num_frames
        if n == 0:
            return SyncScoreError("too_short", "no video frames were given")
        if n < MIN_FRAMES:
            return SyncScoreError("too_short", f"only {n} frame(s) at 25 fps ({n / TARGET_FPS:.2f} s, video cut to the "
                                  f"audio); SyncNet needs at least {MIN_FRAMES}: a 5-frame window and one more")
        if self.tracker.frames_with_face == 0:
            return SyncScoreError("no_face", f"no face found in any of the {n} frames (25 fps)")
        longest = max((t["num_frames"] for t in self._track_info), default=0)
        found = self.tracker.frames_with_face
        return SyncScoreError("no_face", f"a face was found in {found} of {n} frames, but never in {MIN_FRAMES} "
                              f"consecutive frames (longest face track: {longest} frames at 25 fps)")


def _as_uint8_frames(frames) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (N, H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {arr.dtype}")
    return arr


def score_sync(frames, fps, waveform, sample_rate, *, syncnet, detector, selector: FaceSelector | None = None,
               device: str | torch.device = "cpu", batch_size: int = 20,
               progress: ProgressFn | None = None) -> SyncScore:
    """Score lip sync. ``frames``: uint8 ``(N, H, W, 3)`` RGB (torch or numpy), or an iterable of such chunks (a long
    video is then never held whole). See `SyncScorer` for the other arguments."""
    whole = isinstance(frames, (torch.Tensor, np.ndarray))
    total = int(frames.shape[0]) if whole else None
    scorer = SyncScorer(syncnet, detector, fps, waveform, sample_rate, selector=selector, device=device,
                        batch_size=batch_size, progress=progress, total_frames=total)
    scorer.add_chunks([frames] if whole else frames)
    return scorer.result()
