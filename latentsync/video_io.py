"""Video and audio reading/writing with PyAV only (no ffmpeg subprocess).

Frames are uint8 RGB ``(N, H, W, 3)`` torch tensors; fps is an exact `fractions.Fraction` (30000/1001 stays
30000/1001); audio is float32 ``(C, S)`` in [-1, 1] at the file's own sample rate.

Writing: H.264 (libx264, yuv420p, CRF) + AAC in ONE encode, streamed window by window, written to a temporary file
in the output folder and renamed into place only when complete. yuv420p needs even sizes: an odd width/height is
**padded** by one pixel on the right/bottom by repeating the last column/row, so no content is ever lost (the output
is then one pixel larger than the input in that dimension). Colours are converted with BT.709 (limited range) and
the stream is tagged so; decoding converts with the colorspace the file declares (untagged: swscale's BT.601).

Not handled: rotation metadata (frames are returned as stored) and variable frame rates (the average rate is
reported; frames are neither duplicated nor dropped).
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import av
import numpy as np
import torch
from av.video.reformatter import ColorPrimaries, ColorRange, ColorTrc, Colorspace

DEFAULT_CRF = 18
_AUDIO_CHUNK = 1024  # samples per AAC frame


@dataclass
class VideoClip:
    """A decoded video: ``frames`` uint8 ``(N, H, W, 3)``, exact ``fps``, optional audio ``(C, S)`` float32."""

    frames: torch.Tensor
    fps: Fraction
    audio: torch.Tensor | None
    sample_rate: int | None

    @property
    def duration(self) -> float:
        return self.frames.shape[0] / float(self.fps)


def _check_input(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"input media file not found: {path}")
    if not path.is_file():
        raise ValueError(f"input media path is not a file: {path}")
    return path


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot open {path} as audio/video (PyAV/FFmpeg said: {exc})") from exc


def _stream_fps(stream: av.video.stream.VideoStream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise ValueError(f"cannot determine the frame rate of video stream {stream.index}")
    return Fraction(rate)


def video_fps(path: str | Path) -> Fraction:
    """Frame rate of the first video stream, as an exact fraction."""
    path = _check_input(path)
    with _open(path) as container:
        if not container.streams.video:
            raise ValueError(f"no video stream in {path}")
        return _stream_fps(container.streams.video[0])


def iter_video_frames(path: str | Path, window: int = 16) -> Iterator[torch.Tensor]:
    """Decode the first video stream in windows of up to ``window`` frames: yields uint8 ``(n, H, W, 3)``."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    path = _check_input(path)
    with _open(path) as container:
        if not container.streams.video:
            raise ValueError(f"no video stream in {path}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        buffer: list[np.ndarray] = []
        for frame in container.decode(stream):
            buffer.append(frame.to_ndarray(format="rgb24"))
            if len(buffer) == window:
                yield torch.from_numpy(np.stack(buffer))
                buffer = []
        if buffer:
            yield torch.from_numpy(np.stack(buffer))


def _decode_audio(container: av.container.InputContainer) -> tuple[torch.Tensor, int]:
    stream = container.streams.audio[0]
    rate = stream.codec_context.sample_rate or stream.rate
    resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
    chunks: list[np.ndarray] = []
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray())
    for out in resampler.resample(None):
        chunks.append(out.to_ndarray())
    channels = stream.codec_context.layout.nb_channels
    wave = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    if stream.duration is not None and stream.time_base is not None:
        # AAC decoders emit the padding of the last frame; the container's duration says where the audio ends.
        declared = round(stream.duration * stream.time_base * rate)
        if 0 < declared < wave.shape[1]:
            wave = wave[:, :declared]
    return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), int(rate)


def read_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Decode the first audio stream of any file PyAV reads (wav, mp3, m4a, mp4...): ``((C, S) float32, rate)``."""
    path = _check_input(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise ValueError(f"no audio stream in {path}")
        return _decode_audio(container)


def read_video(path: str | Path) -> VideoClip:
    """Decode all frames of the first video stream (and its first audio stream, if any) into memory."""
    path = _check_input(path)
    fps = video_fps(path)
    windows = list(iter_video_frames(path, window=64))
    if not windows:
        raise ValueError(f"video {path} has no decodable frames")
    frames = torch.cat(windows)
    audio, rate = None, None
    with _open(path) as container:
        if container.streams.audio:
            audio, rate = _decode_audio(container)
    return VideoClip(frames=frames, fps=fps, audio=audio, sample_rate=rate)


def _as_uint8_frames(window: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = window.detach().cpu().numpy() if isinstance(window, torch.Tensor) else np.asarray(window)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (N, H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {arr.dtype} (convert with (x * 255).round().clamp(0, 255))")
    return arr


def _pad_even(frame: np.ndarray) -> np.ndarray:
    """Pad an odd height/width by repeating the last row/column (yuv420p needs even sizes; never crop content)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _frame_windows(frames: torch.Tensor | np.ndarray | Iterable) -> Iterator[np.ndarray]:
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        yield _as_uint8_frames(frames)
        return
    for window in frames:
        yield _as_uint8_frames(window)


def _normalise_audio(audio: torch.Tensor | np.ndarray, sample_rate: int | None) -> tuple[np.ndarray, int]:
    if sample_rate is None or int(sample_rate) <= 0:
        raise ValueError("sample_rate is required (a positive int) when audio is given")
    wave = audio.detach().cpu().float().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio, np.float32)
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2 or wave.shape[0] not in (1, 2):
        raise ValueError(f"audio must be (S,) or (C, S) with C = 1 or 2, got shape {wave.shape}")
    return np.ascontiguousarray(np.clip(wave, -1.0, 1.0), dtype=np.float32), int(sample_rate)


def _check_output(path: Path, overwrite: bool, inputs: Sequence[str | Path]) -> None:
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {path.parent}")
    if path.exists() and path.is_dir():
        raise IsADirectoryError(f"output path is a folder: {path}")
    for source in inputs:
        source = Path(source).expanduser()
        if source.exists() and path.exists() and os.path.samefile(source, path):
            raise ValueError(f"refusing to overwrite the input file {source} with the output")
        if source.resolve() == path.resolve():
            raise ValueError(f"refusing to overwrite the input file {source} with the output")
    if path.exists() and not overwrite:
        raise FileExistsError(f"output file already exists: {path} (choose another name or pass overwrite=True)")


class _AudioWriter:
    """Feeds a waveform to an AAC stream in 1024-sample frames, up to a given time (keeps the muxer interleaved)."""

    def __init__(self, container: av.container.OutputContainer, wave: np.ndarray, rate: int) -> None:
        self.wave = wave
        self.rate = rate
        self.layout = "mono" if wave.shape[0] == 1 else "stereo"
        self.stream = container.add_stream("aac", rate=rate, layout=self.layout)
        self.stream.codec_context.bit_rate = 128_000 if wave.shape[0] == 1 else 192_000
        self.container = container
        self.pos = 0

    def write_until(self, seconds: float | None) -> None:
        end = self.wave.shape[1] if seconds is None else min(self.wave.shape[1], int(seconds * self.rate))
        while self.pos < end:
            stop = min(self.pos + _AUDIO_CHUNK, self.wave.shape[1])
            if seconds is not None and stop > end and stop < self.wave.shape[1]:
                break  # keep a partial frame for the next call unless it is the very end
            frame = av.AudioFrame.from_ndarray(self.wave[:, self.pos : stop], format="fltp", layout=self.layout)
            frame.sample_rate = self.rate
            frame.pts = self.pos
            frame.time_base = Fraction(1, self.rate)
            self.container.mux(self.stream.encode(frame))
            self.pos = stop

    def finish(self) -> None:
        self.write_until(None)
        self.container.mux(self.stream.encode(None))


def write_video(
    path: str | Path,
    frames: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
    fps: Fraction | float | int,
    audio: torch.Tensor | np.ndarray | None = None,
    sample_rate: int | None = None,
    crf: int = DEFAULT_CRF,
    overwrite: bool = False,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Encode uint8 RGB frames (a tensor ``(N, H, W, 3)`` or an iterable of such windows) to H.264 + AAC.

    ``fps``: a Fraction is kept exactly; a float is converted with ``Fraction(fps).limit_denominator(1001)``.
    ``audio``: ``(C, S)`` or ``(S,)`` float in [-1, 1] at ``sample_rate`` (written as is, not trimmed).
    The file appears at ``path`` only when complete (temp file + ``os.replace``); an existing ``path`` is refused
    unless ``overwrite``, and a path equal to any of ``inputs`` is always refused. Returns ``path``.
    """
    path = Path(path).expanduser()
    _check_output(path, overwrite, inputs)
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    wave = _normalise_audio(audio, sample_rate) if audio is not None else None

    # Hidden sibling, created exclusively (normal umask permissions, unlike mkstemp's 0600), renamed when complete.
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.part{path.suffix or '.mp4'}")
    tmp.open("xb").close()
    try:
        _encode(tmp, path.suffix, _frame_windows(frames), rate, wave, int(crf))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _encode(
    tmp: Path,
    suffix: str,
    windows: Iterator[np.ndarray],
    rate: Fraction,
    wave: tuple[np.ndarray, int] | None,
    crf: int,
) -> None:
    container_format = {".mkv": "matroska", ".mov": "mov"}.get(suffix.lower(), "mp4")
    with av.open(str(tmp), mode="w", format=container_format) as container:
        video = None
        audio_writer = None
        count = 0
        for window in windows:
            for frame_rgb in window:
                frame_rgb = _pad_even(frame_rgb)
                if video is None:
                    video = container.add_stream("libx264", rate=rate)
                    video.height, video.width = frame_rgb.shape[:2]
                    video.pix_fmt = "yuv420p"
                    video.codec_context.time_base = 1 / rate
                    video.options = {"crf": str(crf)}
                    # Tag what we convert with (BT.709, limited range): players then decode the colours as meant.
                    cc = video.codec_context
                    cc.colorspace, cc.color_range = Colorspace.ITU709, ColorRange.MPEG
                    cc.color_primaries, cc.color_trc = ColorPrimaries.BT709, ColorTrc.BT709
                    if wave is not None:
                        audio_writer = _AudioWriter(container, *wave)
                elif (video.height, video.width) != frame_rgb.shape[:2]:
                    raise ValueError(
                        f"all frames must have the same size: frame {count} is {frame_rgb.shape[:2]}, "
                        f"expected {(video.height, video.width)} (after even padding)"
                    )
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
                frame = frame.reformat(
                    format="yuv420p",
                    dst_colorspace=Colorspace.ITU709,
                    dst_color_range=ColorRange.MPEG,
                    dst_color_trc=ColorTrc.BT709,
                    dst_color_primaries=ColorPrimaries.BT709,
                )
                frame.pts = count
                frame.time_base = 1 / rate
                container.mux(video.encode(frame))
                count += 1
            if audio_writer is not None:
                audio_writer.write_until(count / rate)
        if video is None:
            raise ValueError("no frames to write")
        container.mux(video.encode(None))
        if audio_writer is not None:
            audio_writer.finish()
