"""Aligned training clips on disk: listing them, counting and decoding frames, reading their 16 kHz audio."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import torch

from latentsync.audio.resample import to_mono_16k
from latentsync.video_io import read_audio

FILESLIST_NAME = "fileslist.txt"
DECODE_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError)  # what a broken or truncated file raises
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


def list_clips(data_dir: str | Path | None = None, fileslist: str | Path | None = None) -> list[Path]:
    """Clips of a data set: the lines of `fileslist` (relative paths are relative to the list's folder), else
    `data_dir/fileslist.txt` (what `training.prepare_data` writes), else the video files directly in `data_dir`."""
    if fileslist in (None, "") and data_dir not in (None, ""):
        candidate = Path(data_dir).expanduser() / FILESLIST_NAME
        if candidate.is_file():
            fileslist = candidate
    if fileslist not in (None, ""):
        listing = Path(fileslist).expanduser()
        if not listing.is_file():
            raise FileNotFoundError(f"file list not found: {listing}")
        clips = []
        for line in listing.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                path = Path(line).expanduser()
                clips.append(path if path.is_absolute() else listing.parent / path)
    elif data_dir not in (None, ""):
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder not found: {folder}")
        clips = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    else:
        raise ValueError("no training data: set data_dir=DIR (a folder written by training.prepare_data, or of "
                         "aligned clips) or data.fileslist=FILE")
    missing = [str(p) for p in clips if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} listed clips do not exist, e.g. {missing[:3]}")
    if not clips:
        raise ValueError(f"no clips found in {fileslist or data_dir}")
    return clips


def count_frames(path: str | Path) -> int:
    """Number of video frames (container header when it has one, else by decoding)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.decode(stream))


def read_frames(path: str | Path, indices: Sequence[int]) -> torch.Tensor:
    """uint8 (len(indices), H, W, 3) RGB frames at `indices` (any order, repeats allowed), decoding up to the last."""
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        raise ValueError("no frame indices")
    found: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                found[i] = frame.to_ndarray(format="rgb24")
            if i >= wanted[-1]:
                break
    missing = [i for i in wanted if i not in found]
    if missing:
        raise ValueError(f"{path}: frames {missing[:5]} are past the end of the video")
    return torch.from_numpy(np.stack([found[int(i)] for i in indices]))


def read_audio_16k(path: str | Path) -> torch.Tensor:
    """The clip's audio as float32 (S,) mono at 16 kHz."""
    waveform, rate = read_audio(path)
    return to_mono_16k(waveform, rate)


def to_model_pixels(frames: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, R, R) in [-1, 1], resized (bicubic, antialiased) when H, W != R."""
    x = frames.permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (resolution, resolution):
        x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bicubic", antialias=True,
                                            align_corners=False).clamp(0, 255)
    return x / 127.5 - 1.0
