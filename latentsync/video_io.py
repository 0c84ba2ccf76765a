"""Video and audio reading/writing with PyAV only (no ffmpeg subprocess), streamed frame by frame.

Frames are uint8 RGB ``(N, H, W, 3)`` torch tensors; frame times are exact (`timeline.SourceTiming`: a constant rate
such as 30000/1001 stays 30000/1001, a variable-rate file keeps every frame's timestamp); audio is float32 ``(C, S)``
in [-1, 1] at the file's own sample rate and channel count.

Reading (`VideoFileSource`): opening reads the container's packets, which time and count the frames without decoding
them, and `verify()` decodes the stream once without converting any frame, which finds a damaged or truncated file
(at once, or while the models load); frames are then decoded as they are asked for, by seeking to the keyframe before
when a caller goes back (ping-pong looping re-reads the video instead of holding it). Any pixel format
PyAV decodes (grey, alpha, 10-bit, 4:2:2/4:4:4) is converted to 8-bit RGB (alpha dropped); a display rotation
(phone videos) is applied, so frames come out upright.

Writing (`VideoWriter`): H.264 (libx264, yuv420p, CRF and preset of `x264`) + AAC in ONE encode, frame by frame, into a hidden
``.NAME.<random>.part.mp4`` beside the output, renamed into place only when complete; on any error or Cancel the
part file is deleted, so a file under the final name is always whole. yuv420p needs even sizes: an odd width/height
is **padded** by one pixel on the right/bottom by repeating the last column/row (never cropped). Colours are
converted with BT.709 (limited range) and tagged so. Audio keeps its sample rate and channels (1 to 8; rates AAC
cannot store are resampled to the nearest one it can, with a warning).
"""
from __future__ import annotations

import errno
import io
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import av
import numpy as np
import torch
from av.video.reformatter import ColorPrimaries, ColorRange, ColorTrc, Colorspace

from .timeline import SourceTiming
from .x264 import DEFAULT_CRF, DEFAULT_PRESET, check_settings

_AUDIO_CHUNK = 1024  # samples per AAC frame
_SEEK_AHEAD = 48  # a forward jump of up to this many frames decodes through instead of seeking
AAC_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)

MediaSource = str | Path | bytes | io.BytesIO


class MediaError(ValueError):
    """An input file that cannot be used; the message names the file and what to do."""


class OutputError(OSError):
    """The output cannot be written (missing or read-only folder, full disk); nothing is left under its name."""


@dataclass
class VideoClip:
    """A decoded video: ``frames`` uint8 ``(N, H, W, 3)``, exact ``fps``, optional audio ``(C, S)`` float32, and the
    frame times (``timing``; its ``constant`` is False for a variable-frame-rate file)."""

    frames: torch.Tensor
    fps: Fraction
    audio: torch.Tensor | None
    sample_rate: int | None
    timing: SourceTiming | None = None

    @property
    def duration(self) -> float:
        if self.timing is not None:
            return float(self.timing.duration)
        return self.frames.shape[0] / float(self.fps)


# ---------------------------------------------------------------------------------------------------------------
# opening


def _check_input(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"input media file not found: {path}")
    if not path.is_file():
        raise ValueError(f"input media path is not a file: {path}")
    return path


class _BytesView(io.RawIOBase):
    """A read-only, seekable file over shared bytes: every open of an in-memory video gets its own position."""

    def __init__(self, data: memoryview):
        self._data, self._pos = data, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = max(0, min(len(b), len(self._data) - self._pos))
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._data)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _source_name(source: MediaSource, name: str | None) -> str:
    if name:
        return name
    return str(source) if isinstance(source, (str, Path)) else "the in-memory video"


def _open(source: MediaSource, name: str | None = None) -> av.container.InputContainer:
    """Open a path or in-memory bytes for reading; a file that FFmpeg cannot read is a MediaError naming it."""
    what = _source_name(source, name)
    if isinstance(source, (str, Path)):
        target = str(_check_input(source))
    elif isinstance(source, io.BytesIO):
        target = _BytesView(source.getbuffer())
    elif isinstance(source, (bytes, bytearray, memoryview)):
        target = _BytesView(memoryview(source))
    else:
        raise TypeError(f"expected a file path or bytes, got {type(source).__name__}")
    try:
        return av.open(target, mode="r")
    except av.error.FFmpegError as exc:
        raise MediaError(f"cannot open {what} as audio/video: the file is damaged, incomplete or not a media file "
                         f"(PyAV/FFmpeg said: {exc}). Check that it plays, or export it again.") from exc


def _stream_fps(stream: av.video.stream.VideoStream) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


def _first_video_stream(container: av.container.InputContainer, what: str):
    if not container.streams.video:
        raise MediaError(f"no video stream in {what}: choose a video file")
    return container.streams.video[0]


def _upright(frame: av.VideoFrame) -> np.ndarray:
    """8-bit RGB of any pixel format, rotated as the display matrix says (counter-clockwise degrees)."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = (int(round(frame.rotation or 0)) // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb


# ---------------------------------------------------------------------------------------------------------------
# reading


class VideoFileSource:
    """The frames of the first video stream of a file (or of in-memory bytes), decoded when asked for.

    `timing` (frame times), `frame_size` (H, W, upright), `len()`; `read(start, stop)` -> uint8 (n, H, W, 3).
    Opening reads the container's packets (frame times, count, keyframes: no decoding) and decodes the first frame
    (size, rotation); `verify()` decodes the whole stream without converting a frame, to find a damaged or
    truncated file (at once unless `verify=False`: then call it yourself, e.g. while models load). Reading forward
    continues the decoder; going back (or far ahead) seeks to the keyframe before and decodes from there
    (`keyframe_before`). `frames_decoded` counts the frames the decoder gave for reads. Call `close()` (or use
    `with`) to release the decoder.
    """

    def __init__(self, source: MediaSource, name: str | None = None, verify: bool = True):
        self.source = source
        self.name = _source_name(source, name)
        self._container = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._held: av.VideoFrame | None = None
        self._pos = 0
        self.frames_decoded = 0
        self.verified = False
        self._probe()
        if verify:
            self.verify()

    def _probe(self) -> None:
        """Frame times, count and keyframes from the packets; size and rotation from the first frame."""
        pts: list[int | None] = []
        durations: list[int | None] = []
        keyframes: list[bool] = []
        with _open(self.source, self.name) as container:
            stream = _first_video_stream(container, self.name)
            self._declared = int(stream.frames or 0)
            self._time_base = Fraction(stream.time_base) if stream.time_base else None
            self._nominal = _stream_fps(stream)
            try:
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue  # the demuxer's end-of-stream marker
                    pts.append(packet.pts)
                    durations.append(packet.duration)
                    keyframes.append(bool(packet.is_keyframe))
            except av.error.FFmpegError as exc:
                raise MediaError(f"{self.name} is damaged: reading stopped after {len(pts)} frames (PyAV/FFmpeg "
                                 f"said: {exc}). Repair or export the video again.") from exc
        if not pts:
            raise MediaError(f"{self.name} has no decodable video frames: choose another file or export it again")
        self._check_count(len(pts))
        with _open(self.source, self.name) as container:
            stream = container.streams.video[0]
            try:
                first = next(container.decode(stream), None)
            except av.error.FFmpegError as exc:
                raise MediaError(f"{self.name} is damaged: its first frame cannot be decoded (PyAV/FFmpeg said: "
                                 f"{exc}). Repair or export the video again.") from exc
            if first is None:
                raise MediaError(f"{self.name} has no decodable video frames: choose another file or export it again")
            turns = (int(round(first.rotation or 0)) // 90) % 4
            self.frame_size: tuple[int, int] = (first.height, first.width) if turns % 2 == 0 else (first.width,
                                                                                                  first.height)
        self._set_timing(pts, durations, keyframes)

    def _check_count(self, count: int) -> None:
        if self._declared and count < 0.9 * self._declared:
            raise MediaError(f"{self.name} is truncated: it declares {self._declared} frames but only {count} can be "
                             "decoded. Copy or export the video again.")

    def _set_timing(self, pts: list, durations: list, keyframes: list[bool] | None) -> None:
        if self._time_base is None or any(p is None for p in pts) or len(set(pts)) != len(pts):
            self._pts = None  # no usable timestamps (e.g. a raw stream): constant rate, seek by decoding from 0
            self.timing = SourceTiming.constant_rate(len(pts), self._nominal or Fraction(25))
            self._keyframes = np.zeros(1, dtype=np.int64)
            return
        order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
        self._pts = np.asarray(pts, dtype=np.int64)[order]
        last_duration = durations[int(order[-1])]
        self.timing = SourceTiming.from_timestamps(self._pts, self._time_base, last_duration or None, self._nominal)
        if keyframes is None:
            self._keyframes = np.zeros(1, dtype=np.int64)
        else:
            flags = np.asarray(keyframes, dtype=bool)[order]
            flags[0] = True
            self._keyframes = np.nonzero(flags)[0]

    def verify(self, stop: threading.Event | None = None) -> None:
        """Decode the whole stream once (no frame converted): a damaged or truncated file is a MediaError naming it.
        When the decoder's frames are not the packets' (a rare codec), their times replace the packets'. `stop` set
        (the run failed elsewhere meanwhile) ends the decode at the next frame, the file not verified."""
        if self.verified:
            return
        pts: list[int | None] = []
        durations: list[int | None] = []
        with _open(self.source, self.name) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    if stop is not None and stop.is_set():
                        return
                    pts.append(frame.pts)
                    durations.append(getattr(frame, "duration", None))
            except av.error.FFmpegError as exc:
                raise MediaError(f"{self.name} is damaged: decoding stopped after {len(pts)} frames (PyAV/FFmpeg "
                                 f"said: {exc}). Repair or export the video again.") from exc
        if not pts:
            raise MediaError(f"{self.name} has no decodable video frames: choose another file or export it again")
        self._check_count(len(pts))
        if len(pts) != len(self.timing) or (self._pts is not None and sorted(pts) != self._pts.tolist()):
            self._set_timing(pts, durations, None)
        self.verified = True

    def keyframe_before(self, index: int) -> int:
        """The index of the last keyframe at or before frame `index` (where a seek back lands)."""
        return int(self._keyframes[np.searchsorted(self._keyframes, int(index), side="right") - 1])

    def __len__(self) -> int:
        return len(self.timing)

    @property
    def fps(self) -> Fraction:
        return self.timing.fps

    # -- decoding
    def _restart(self) -> av.container.InputContainer:
        self.close()
        self._container = _open(self.source, self.name)
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        return self._container

    def _seek(self, index: int) -> None:
        container = self._restart()
        self._pos, self._held = 0, None
        if index > 0 and self._pts is not None:
            container.seek(int(self._pts[index]), stream=self._stream, backward=True, any_frame=False)
            self._frames = container.decode(self._stream)
            first = next(self._frames, None)
            self.frames_decoded += first is not None
            where = int(np.searchsorted(self._pts, first.pts)) if first is not None and first.pts is not None else -1
            if 0 <= where <= index and where < len(self._pts) and self._pts[where] == first.pts:
                self._pos, self._held = where, first
                return
            container = self._restart()  # the seek landed somewhere unexpected: decode from the start
        self._frames = container.decode(self._stream)

    def _next(self) -> av.VideoFrame:
        if self._held is not None:
            frame, self._held = self._held, None
            return frame
        try:
            frame = next(self._frames, None)
        except av.error.FFmpegError as exc:
            raise MediaError(f"{self.name} could not be decoded at frame {self._pos} (PyAV/FFmpeg said: {exc})") from exc
        if frame is not None:
            self.frames_decoded += 1
        if frame is None:
            raise MediaError(f"{self.name} ended at frame {self._pos} but had {len(self)} frames when opened: "
                             "was it changed while being read?")
        return frame

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Frames start..stop-1 as uint8 (n, H, W, 3)."""
        if not 0 <= start < stop <= len(self):
            raise IndexError(f"frames {start}..{stop - 1} are outside the video's 0..{len(self) - 1}")
        if self._frames is None or start < self._pos or start > self._pos + _SEEK_AHEAD:
            self._seek(start)
        out = np.empty((stop - start, *self.frame_size, 3), dtype=np.uint8)
        while self._pos < stop:
            frame = self._next()
            if self._pos >= start:
                out[self._pos - start] = _upright(frame)
            self._pos += 1
        return torch.from_numpy(out)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._held = None, None, None

    def __enter__(self) -> VideoFileSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def video_fps(path: str | Path) -> Fraction:
    """Nominal frame rate of the first video stream, as an exact fraction (no decoding)."""
    path = _check_input(path)
    with _open(path) as container:
        rate = _stream_fps(_first_video_stream(container, str(path)))
        if rate is None:
            raise MediaError(f"cannot determine the frame rate of {path}")
        return rate


def iter_video_frames(path: str | Path, window: int = 16) -> Iterator[torch.Tensor]:
    """Decode the first video stream in windows of up to ``window`` frames: yields uint8 ``(n, H, W, 3)``."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    with VideoFileSource(_check_input(path)) as source:
        for start in range(0, len(source), window):
            yield source.read(start, min(start + window, len(source)))


def _decode_audio(container: av.container.InputContainer, what: str) -> tuple[torch.Tensor, int]:
    stream = container.streams.audio[0]
    rate = stream.codec_context.sample_rate or stream.rate
    resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
    chunks: list[np.ndarray] = []
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    except av.error.FFmpegError as exc:
        raise MediaError(f"the audio of {what} is damaged (PyAV/FFmpeg said: {exc}); export it again") from exc
    channels = stream.codec_context.layout.nb_channels
    wave = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    if stream.duration is not None and stream.time_base is not None:
        # AAC decoders emit the padding of the last frame; the container's duration says where the audio ends.
        declared = round(stream.duration * stream.time_base * rate)
        if 0 < declared < wave.shape[1]:
            wave = wave[:, :declared]
    return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), int(rate)


def read_audio(path: MediaSource, name: str | None = None) -> tuple[torch.Tensor, int]:
    """Decode the first audio stream of any file PyAV reads (wav, mp3, m4a, mp4...): ``((C, S) float32, rate)``."""
    what = _source_name(path, name)
    with _open(path, name) as container:
        if not container.streams.audio:
            raise MediaError(f"no audio stream in {what}")
        return _decode_audio(container, what)


def media_duration(path: str | Path) -> float | None:
    """Seconds of the first video stream (else the container) from the header, without decoding; None when the
    file cannot be opened (a batch orders its jobs by this, longest first)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0] if container.streams.video else None
            if stream is not None and stream.duration is not None and stream.time_base:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1_000_000
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    return None


def has_audio(path: MediaSource) -> bool:
    with _open(path) as container:
        return bool(container.streams.audio)


def read_video(path: str | Path) -> VideoClip:
    """Decode all frames of the first video stream (and its first audio stream, if any) into memory."""
    path = _check_input(path)
    with VideoFileSource(path) as source:
        frames = source.read(0, len(source))
        timing = source.timing
    audio, rate = (read_audio(path) if has_audio(path) else (None, None))
    return VideoClip(frames=frames, fps=timing.fps, audio=audio, sample_rate=rate, timing=timing)


# ---------------------------------------------------------------------------------------------------------------
# writing


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


def check_output(path: Path, overwrite: bool, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse an output whose folder is missing, that is a folder, an input, or exists (unless `overwrite`)."""
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {path.parent} (create it or choose another output)")
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


def _output_error(exc: OSError, path: Path) -> OutputError:
    """A clear message for an OS error while writing `path` (the part file is removed by the caller)."""
    folder = path.parent
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        text = (f"the disk holding {folder} is full (or over quota) while writing {path.name}: free some space or "
                "choose an output on another disk; nothing was written under that name")
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        text = (f"cannot write into {folder} ({os.strerror(exc.errno)}): choose a folder you can write to, or "
                "change its permissions")
    else:
        text = f"cannot write {path} ({exc}); nothing was written under that name"
    err = OutputError(exc.errno or errno.EIO, text)
    err.filename = str(path)
    return err


def _remove(path: Path) -> None:
    """Delete a part file if it is there (on a read-only disk, unlinking a missing file fails with EROFS)."""
    if path.exists():
        path.unlink()


def _aac_rate(rate: int) -> int:
    return rate if rate in AAC_RATES else min(AAC_RATES, key=lambda r: (abs(r - rate), -r))


class _AudioWriter:
    """Feeds a waveform to an AAC stream in 1024-sample frames up to a given time (keeps the muxer interleaved).
    The waveform is converted chunk by chunk (never copied whole); samples past its end are silence, up to
    `total` samples."""

    def __init__(self, container: av.container.OutputContainer, wave: torch.Tensor, rate: int, total: int) -> None:
        self.wave, self.rate, self.total = wave, rate, int(total)
        channels = wave.shape[0]
        self.layout = AAC_LAYOUTS[channels]
        self.stream = container.add_stream("aac", rate=rate, layout=self.layout)
        self.stream.codec_context.bit_rate = min(64_000 * channels, 512_000) if channels > 2 else 64_000 * (channels + 1)
        self.container = container
        self.pos = 0

    def _samples(self, a: int, b: int) -> np.ndarray:
        out = np.zeros((self.wave.shape[0], b - a), dtype=np.float32)
        have = min(b, self.wave.shape[1])
        if have > a:
            out[:, : have - a] = self.wave[:, a:have].float().clamp(-1.0, 1.0).numpy()
        return out

    def write_until(self, seconds: Fraction | float | None) -> None:
        end = self.total if seconds is None else min(self.total, int(seconds * self.rate))
        while self.pos < end:
            stop = min(self.pos + _AUDIO_CHUNK, self.total)
            if seconds is not None and stop > end and stop < self.total:
                break  # keep a partial frame for the next call unless it is the very end
            frame = av.AudioFrame.from_ndarray(self._samples(self.pos, stop), format="fltp", layout=self.layout)
            frame.sample_rate = self.rate
            frame.pts = self.pos
            frame.time_base = Fraction(1, self.rate)
            self.container.mux(self.stream.encode(frame))
            self.pos = stop

    def finish(self) -> None:
        self.write_until(None)
        self.container.mux(self.stream.encode(None))


def _as_waveform(audio, sample_rate) -> tuple[torch.Tensor, int]:
    if sample_rate is None or int(sample_rate) <= 0:
        raise ValueError("sample_rate is required (a positive int) when audio is given")
    wave = torch.as_tensor(audio).detach().cpu()
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2 or wave.shape[0] not in AAC_LAYOUTS:
        raise ValueError(f"audio must be (S,) or (C, S) with 1 to 8 channels, got shape {tuple(wave.shape)}")
    return wave, int(sample_rate)


class VideoWriter:
    """Progressive H.264 + AAC writer.

    `write(frames uint8 (n, H, W, 3), starts=None)` encodes frames as they come (`starts`: their start ticks of
    1/`base` s for variable-rate output; by default frames follow each other at `fps`). `close()` finishes the
    file and renames it into place; `abort()` (and leaving a `with` block with an exception) deletes it. `audio`
    ``(C, S)`` at `sample_rate` is written interleaved, as `audio_samples` samples (cut, or padded with silence).
    The part file is created at once, so an unwritable folder fails before any work starts.
    """

    def __init__(self, path: str | Path, fps, frame_size: tuple[int, int] | None = None, audio=None,
                 sample_rate: int | None = None, audio_samples: int | None = None, base: int | None = None,
                 crf: int = DEFAULT_CRF, overwrite: bool = False, inputs: Sequence[str | Path] = (),
                 log: Callable[[str], None] | None = None, preset: str = DEFAULT_PRESET):
        self.path = Path(path).expanduser()
        check_output(self.path, overwrite, inputs)
        crf, self.preset = check_settings(crf, preset)
        self.fps = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.base = base
        self.crf = int(crf)
        self.wave = None
        if audio is not None:
            wave, rate = _as_waveform(audio, sample_rate)
            aac = _aac_rate(rate)
            if aac != rate:
                from .audio.resample import _resample  # noqa: PLC0415 - rare path

                if log:
                    log(f"WARNING: AAC cannot store {rate} Hz audio; it is resampled to {aac} Hz")
                audio_samples = None if audio_samples is None else round(audio_samples * aac / rate)
                wave = torch.stack([_resample(c.float(), rate, aac) for c in wave])
                rate = aac
            self.wave = (wave, rate, wave.shape[1] if audio_samples is None else int(audio_samples))
        self.count = 0
        self._last_start: int | None = None
        self._video = None
        self._audio_writer = None
        self.tmp = self.path.with_name(f".{self.path.stem}.{secrets.token_hex(6)}.part{self.path.suffix or '.mp4'}")
        try:
            self.tmp.open("xb").close()  # hidden sibling, created exclusively (normal umask permissions)
            container_format = {".mkv": "matroska", ".mov": "mov"}.get(self.path.suffix.lower(), "mp4")
            self._container = av.open(str(self.tmp), mode="w", format=container_format)
        except OSError as exc:
            _remove(self.tmp)
            raise _output_error(exc, self.path) from exc
        if frame_size is not None:
            self._start_streams(_pad_even(np.zeros((*frame_size, 1), np.uint8)).shape[:2])

    def _start_streams(self, hw: tuple[int, int]) -> None:
        video = self._container.add_stream("libx264", rate=self.fps)
        video.height, video.width = hw
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = Fraction(1, self.base) if self.base else 1 / self.fps
        # x264's macroblock-tree rate control gives different bytes for the same frames from run to run on some
        # CPUs (measured on AVX-512 machines, even single-threaded); without it the encode is reproducible.
        video.options = {"crf": str(self.crf), "preset": self.preset, "x264-params": "mbtree=0"}
        # Tag what we convert with (BT.709, limited range): players then decode the colours as meant.
        cc = video.codec_context
        cc.colorspace, cc.color_range = Colorspace.ITU709, ColorRange.MPEG
        cc.color_primaries, cc.color_trc = ColorPrimaries.BT709, ColorTrc.BT709
        self._video = video
        if self.wave is not None:
            self._audio_writer = _AudioWriter(self._container, *self.wave)

    def _mux(self, packets) -> None:
        self._container.mux(packets)

    def _now(self) -> Fraction:
        """Seconds of video written so far."""
        if self.base and self._last_start is not None:
            return Fraction(self._last_start, self.base)
        return self.count / self.fps

    def write(self, frames: torch.Tensor | np.ndarray, starts: Sequence[int] | np.ndarray | None = None) -> None:
        frames = _as_uint8_frames(frames)
        if self.base and starts is None:
            raise ValueError("this writer has a time base: give each frame's start tick")
        try:
            for k, frame_rgb in enumerate(frames):
                frame_rgb = _pad_even(frame_rgb)
                if self._video is None:
                    self._start_streams(frame_rgb.shape[:2])
                elif (self._video.height, self._video.width) != frame_rgb.shape[:2]:
                    raise ValueError(
                        f"all frames must have the same size: frame {self.count} is {frame_rgb.shape[:2]}, "
                        f"expected {(self._video.height, self._video.width)} (after even padding)")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
                frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709,
                                       dst_color_range=ColorRange.MPEG, dst_color_trc=ColorTrc.BT709,
                                       dst_color_primaries=ColorPrimaries.BT709)
                if self.base:
                    self._last_start = int(starts[k])
                    frame.pts, frame.time_base = self._last_start, Fraction(1, self.base)
                else:
                    frame.pts, frame.time_base = self.count, 1 / self.fps
                self._mux(self._video.encode(frame))
                self.count += 1
            if self._audio_writer is not None:
                self._audio_writer.write_until(self._now())
        except OSError as exc:
            raise _output_error(exc, self.path) from exc

    def close(self) -> Path:
        """Finish the encode and move the file into place; returns the final path."""
        try:
            if self._video is None or self.count == 0:
                raise ValueError("no frames to write")
            self._mux(self._video.encode(None))
            if self._audio_writer is not None:
                self._audio_writer.finish()
            self._container.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise _output_error(exc, self.path) from exc
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Stop and delete the part file (nothing appears under the final name)."""
        try:
            self._container.close()
        except (OSError, av.error.FFmpegError, ValueError):
            pass  # the encode is being thrown away; a failure to finish it cleanly changes nothing
        _remove(self.tmp)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def _frame_windows(frames: torch.Tensor | np.ndarray | Iterable) -> Iterator[np.ndarray]:
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        yield _as_uint8_frames(frames)
        return
    for window in frames:
        yield _as_uint8_frames(window)


def write_video(
    path: str | Path,
    frames: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
    fps: Fraction | float | int,
    audio: torch.Tensor | np.ndarray | None = None,
    sample_rate: int | None = None,
    crf: int = DEFAULT_CRF,
    overwrite: bool = False,
    inputs: Sequence[str | Path] = (),
    preset: str = DEFAULT_PRESET,
) -> Path:
    """Encode uint8 RGB frames (a tensor ``(N, H, W, 3)`` or an iterable of such windows) to H.264 + AAC.

    ``fps``: a Fraction is kept exactly; a float is converted with ``Fraction(fps).limit_denominator(1001)``.
    ``audio``: ``(C, S)`` or ``(S,)`` float in [-1, 1] at ``sample_rate`` (written as is, not trimmed).
    The file appears at ``path`` only when complete; an existing ``path`` is refused unless ``overwrite``, and a
    path equal to any of ``inputs`` is always refused. Returns ``path``.
    """
    if audio is not None:
        audio, sample_rate = _as_waveform(audio, sample_rate)
        if not torch.is_floating_point(audio):
            raise ValueError(f"audio must be float samples in [-1, 1], got {audio.dtype}")
    writer = VideoWriter(path, fps, audio=audio, sample_rate=sample_rate, crf=crf, overwrite=overwrite,
                         inputs=inputs, preset=preset)
    with writer:
        for window in _frame_windows(frames):
            writer.write(window)
        return writer.close()
