"""One input video -> aligned, sync-checked training clips (the work of one `prepare_data` worker)."""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from latentsync.face.align import FaceAligner
from latentsync.face.selection import FaceSelector
from latentsync.video_io import write_video

from .decode import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, BrokenInput, audio_16k, frames_25fps, probe, shift_audio
from .scenes import SceneCuts
from .segments import Segment, split_scene, steady_face

LOG = logging.getLogger("latentsync.training")


@dataclass
class PrepareSettings:
    resolution: int = 256
    min_seconds: float = 5.0
    max_seconds: float = 10.0
    min_confidence: float = 3.0
    max_offset: int = 6
    sync_filter: bool = True
    scene_threshold: float | None = None  # None: the detector's default (adaptive 2, content 27)
    scene_detector: str = "adaptive"      # the official pipeline's AdaptiveDetector


class Tools:
    """What a worker builds once: the face detector, and SyncNet-v2 for the sync filter (None when off)."""

    def __init__(self, detector, syncnet=None, device: str = "cpu"):
        self.detector, self.syncnet, self.device = detector, syncnet, device


def input_key(path: Path) -> str:
    """Identifies an input file version (path, size, modification time): finished work is not redone."""
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _detect_all(path: Path, tools: Tools, cuts: SceneCuts) -> tuple[list, int]:
    """Pass 1: per 25 fps frame the chosen face (points3, bbox) or None, feeding the scene detector."""
    selector = FaceSelector()
    faces = []
    for frame in frames_25fps(path):
        cuts.push(frame)
        face = selector.select(tools.detector.detect(frame))
        faces.append(None if face is None else (np.asarray(face.points3, np.float64), np.asarray(face.bbox, np.float64)))
    return faces, len(faces)


def _plan(faces: list, num_frames: int, audio_len: int, cuts: SceneCuts, s: PrepareSettings) -> list[Segment]:
    segments = []
    for a, b in cuts.scenes(num_frames):
        segments.extend(split_scene(a, b, s.min_seconds, s.max_seconds))
    for seg in segments:
        if seg.reason is None and seg.end * SAMPLES_PER_FRAME > audio_len:
            seg.reason = "the audio ends before the segment"
        if seg.reason is None:
            seg.reason = steady_face([None if f is None else f[1] for f in faces[seg.start:seg.end]])
    return segments


def _aligned_segments(path: Path, faces: list, segments: list[Segment], resolution: int):
    """Pass 2: yields (segment, aligned uint8 (n, R, R, 3)) for the segments still kept, one smoothing state each."""
    wanted = [seg for seg in segments if seg.reason is None]
    if not wanted:
        return
    k, current, aligner, buffer = 0, None, None, []
    for i, frame in enumerate(frames_25fps(path)):
        while k < len(wanted) and i >= wanted[k].end:
            k += 1
        if k >= len(wanted):
            break
        seg = wanted[k]
        if i < seg.start:
            continue
        if current is not seg:
            current, aligner, buffer = seg, FaceAligner(resolution), []  # fresh smoothing state per segment
        buffer.append(aligner.align(frame[None], faces[i][0][None]).faces[0].cpu().numpy())
        if i == seg.end - 1:
            yield seg, np.stack(buffer)


def process_input(path: Path, out_dir: Path, tools: Tools, s: PrepareSettings) -> dict:
    """Everything for one input; returns its report entry. A broken input is reported, never raised."""
    report: dict = {"input": str(path), "status": "done", "segments": []}
    try:
        info = probe(path)
        report.update(fps=float(info.fps), size=[info.width, info.height], audio_rate=info.audio_rate,
                      audio_channels=info.audio_channels)
        audio = audio_16k(path)
        cuts = SceneCuts(threshold=s.scene_threshold, detector=s.scene_detector)
        faces, n = _detect_all(path, tools, cuts)
        report["frames_25fps"] = n
        report["scene_cuts"] = sorted(set(cuts.cuts))
        segments = _plan(faces, n, audio.shape[0], cuts, s)
        key = input_key(path)
        for seg, crops in _aligned_segments(path, faces, segments, s.resolution):
            _finish_segment(seg, crops, audio, tools, s, out_dir, f"{path.stem}-{key[:8]}")
    except BrokenInput as exc:
        return {"input": str(path), "status": "broken", "error": str(exc), "segments": []}
    for seg in segments:
        report["segments"].append({"start_s": round(seg.start / FPS, 3), "end_s": round(seg.end / FPS, 3),
                                   "kept": seg.reason is None, "reason": seg.reason, **seg.extra})
    if not any(seg.reason is None for seg in segments):
        report["status"] = "no_usable_segment"
    return report


def _finish_segment(seg: Segment, crops: np.ndarray, audio: torch.Tensor, tools: Tools, s: PrepareSettings,
                    out_dir: Path, stem: str) -> None:
    clip_audio = audio[seg.start * SAMPLES_PER_FRAME: seg.end * SAMPLES_PER_FRAME]
    if tools.syncnet is not None:
        from latentsync.eval import SyncScoreError, score_sync

        try:
            score = score_sync(crops, FPS, clip_audio, SAMPLE_RATE, syncnet=tools.syncnet, detector=tools.detector,
                               device=tools.device)
        except SyncScoreError as exc:
            seg.reason = f"sync check impossible: {exc}"
            return
        seg.extra.update(confidence=round(float(score.confidence), 4), offset_frames=int(score.offset_frames))
        if score.confidence < s.min_confidence:
            seg.reason = f"sync confidence {score.confidence:.2f} < {s.min_confidence:g}"
            return
        if abs(score.offset_frames) > s.max_offset:
            seg.reason = f"audio-video offset {score.offset_frames} frames > {s.max_offset}"
            return
        clip_audio = shift_audio(clip_audio, score.offset_frames)
    name = f"{stem}-{seg.start:06d}.mp4"
    clips = out_dir / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    write_video(clips / name, torch.from_numpy(crops), FPS, audio=clip_audio[None], sample_rate=SAMPLE_RATE,
                overwrite=True)
    seg.extra["clip"] = f"clips/{name}"
    seg.extra["frames"] = int(crops.shape[0])


def settings_dict(s: PrepareSettings) -> dict:
    return asdict(s)


def worker_threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))
