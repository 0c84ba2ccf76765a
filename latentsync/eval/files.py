"""Score a video file (streamed from disk window by window) with its own audio track or a separate audio file."""
from __future__ import annotations

from pathlib import Path

import torch

from ..face.selection import FaceSelector
from ..video_io import iter_video_frames, read_audio, video_fps
from .score import ProgressFn, SyncScore, SyncScoreError, SyncScorer

READ_WINDOW = 32  # frames decoded at a time


def score_file(video: str | Path, audio: str | Path | None = None, *, syncnet, detector,
               selector: FaceSelector | None = None, device: str | torch.device = "cpu", batch_size: int = 20,
               progress: ProgressFn | None = None) -> SyncScore:
    """`score_sync` on a file: frames decoded in windows of 32 (never the whole video in memory), audio from
    ``audio`` or else the video's own first audio track. Errors are `SyncScoreError` ("no_audio", "no_face",
    "too_short") or ValueError / FileNotFoundError for files that cannot be read."""
    video = Path(video)
    fps = video_fps(video)
    source = Path(audio) if audio is not None else video
    try:
        waveform, sample_rate = read_audio(source)
    except ValueError as exc:
        if "no audio stream" not in str(exc):
            raise
        hint = "" if audio is not None else " (give the speech with --audio)"
        raise SyncScoreError("no_audio", f"{source} has no audio track{hint}") from exc
    scorer = SyncScorer(syncnet, detector, fps, waveform, sample_rate, selector=selector, device=device,
                        batch_size=batch_size, progress=progress)
    scorer.add_chunks(iter_video_frames(video, window=READ_WINDOW))
    return scorer.result()
