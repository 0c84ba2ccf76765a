"""Any video -> frames at exactly 25 fps (streamed) and its audio as 16 kHz mono, with PyAV."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from latentsync.audio.resample import to_mono_16k
from latentsync.video_io import read_audio

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640


class BrokenInput(ValueError):
    """The file cannot be used (not a video, undecodable, no audio track, no frames)."""


@dataclass
class SourceInfo:
    fps: Fraction
    width: int
    height: int
    duration: float
    audio_rate: int
    audio_channels: int


def probe(path: Path) -> SourceInfo:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BrokenInput("no video stream")
            if not container.streams.audio:
                raise BrokenInput("no audio track (training needs the speech)")
            v, a = container.streams.video[0], container.streams.audio[0]
            rate = v.average_rate or v.guessed_rate
            if not rate:
                raise BrokenInput("unknown frame rate")
            duration = float(container.duration / av.time_base) if container.duration else 0.0
            return SourceInfo(Fraction(rate), v.codec_context.width, v.codec_context.height, duration,
                              int(a.codec_context.sample_rate or a.rate), a.codec_context.layout.nb_channels)
    except av.error.FFmpegError as exc:
        raise BrokenInput(f"cannot open as video (PyAV/FFmpeg: {exc})") from exc


def frames_25fps(path: Path) -> Iterator[np.ndarray]:
    """uint8 (H, W, 3) RGB frames at 25 fps from time 0 of the video stream: output frame j (time j/25) is the
    source frame nearest in time (duplicated or dropped as the source rate requires)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            step = 1.0 / float(stream.average_rate or stream.guessed_rate or FPS)
            j, prev, prev_t, t0 = 0, None, 0.0, None
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else (prev_t + step if prev is not None else 0.0)
                t0 = t if t0 is None else t0
                t -= t0
                image = frame.to_ndarray(format="rgb24")
                if prev is not None:
                    boundary = (prev_t + t) / 2  # nearest frame in time
                    while j / FPS < boundary - 1e-9:
                        yield prev
                        j += 1
                prev, prev_t = image, t
            if prev is None:
                raise BrokenInput("no decodable video frames")
            while j / FPS < prev_t + step - 1e-9:
                yield prev
                j += 1
    except av.error.FFmpegError as exc:
        raise BrokenInput(f"decoding failed (PyAV/FFmpeg: {exc})") from exc


def audio_16k(path: Path) -> torch.Tensor:
    """float32 (S,) mono 16 kHz, starting at the first video frame."""
    try:
        waveform, rate = read_audio(path)
        with av.open(str(path)) as container:
            v, a = container.streams.video[0], container.streams.audio[0]
            v_start = float(v.start_time * v.time_base) if v.start_time is not None else 0.0
            a_start = float(a.start_time * a.time_base) if a.start_time is not None else 0.0
    except (av.error.FFmpegError, ValueError) as exc:
        raise BrokenInput(f"cannot read the audio ({exc})") from exc
    audio = to_mono_16k(waveform, rate)
    lead = int(round((v_start - a_start) * SAMPLE_RATE))
    if lead > 0:
        audio = audio[lead:]
    elif lead < 0:
        audio = torch.cat([torch.zeros(-lead), audio])
    return audio


def shift_audio(audio: torch.Tensor, frames: int) -> torch.Tensor:
    """Delay the audio by `frames` video frames (advance it when negative), keeping its length: the correction for a
    SyncNet offset of `frames` (> 0: the audio was ahead of the video), as the official `-itsoffset offset/25`."""
    k = int(frames) * SAMPLES_PER_FRAME
    if k == 0:
        return audio
    if k > 0:
        return torch.cat([torch.zeros(k, dtype=audio.dtype), audio[:-k]])
    return torch.cat([audio[-k:], torch.zeros(-k, dtype=audio.dtype)])
