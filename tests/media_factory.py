"""Test media made at test time with PyAV from ../shared/media: the real speaking-face clip re-encoded at other
frame rates, sizes and pixel formats, cut, padded, with a variable frame rate, a second face composited in,
frames without a face, display rotation, and damaged files; the real speech at other rates and channel counts."""
from __future__ import annotations

import shutil
import wave as wave_module
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from conftest import shared_path

# the long videos of the streaming memory tests: 2 frames per second of 960x540 (cheap to lip-sync, big frames)
LONG_WIDTH, LONG_HEIGHT, LONG_FPS = 960, 540, 2
LONG_FRAME_BYTES = LONG_WIDTH * LONG_HEIGHT * 3


LONG_REFERENCE_S = 24  # 48 frames: the encoder's look-ahead and the frame cache are full, as in any longer run


SERVER_SLACK_MIB = 160  # the ComfyUI server's process: measured +207 MiB from 24 s to 60 s (bound 240 MiB), and by
# bench.memory at 720p +100 MiB from 60 s to 300 s of video: a warm-up of the allocator that levels off, not a cost
# per frame (holding the video, as before issue 10, cost 6.2 MB per frame here: ComfyUI's float32 IMAGE)


def window_bound(slack_mib: int = 96) -> int:
    """How much more a 60-second run may peak than the 24-second reference: the pipeline's frame cache (the window
    and the detection look-ahead) twice over -- the frames read and the window's output -- plus `slack_mib` for the
    allocator's fragmentation and a second 30-s Whisper window (more in the server: SERVER_SLACK_MIB). Derived from
    the window size, not the length."""
    from latentsync.pipeline import frame_cache_size  # noqa: PLC0415

    return 2 * frame_cache_size() * LONG_FRAME_BYTES + slack_mib * 2**20


CLIP = ("media", "clip_speaking_woman_frontal_350px_15fps.mp4")
SPEECH = ("media", "speech_cmu_arctic_a0007_16k.wav")
PHOTO = ("media", "face_astronaut_skimage.png")


def clip_frames(n: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """The real clip's frames (45 at 350x350), ping-ponged to `n`, resized to (W, H) `size` (area/cubic)."""
    with av.open(str(shared_path(*CLIP))) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    cycle = frames + frames[::-1]
    frames = [cycle[i % len(cycle)] for i in range(n or len(frames))]
    if size is not None:
        interp = cv2.INTER_AREA if size[0] < 350 else cv2.INTER_CUBIC
        frames = [cv2.resize(f, size, interpolation=interp) for f in frames]
    return np.stack(frames)


def place(frames: np.ndarray, width: int, height: int, x: int, y: int, background: int = 90) -> np.ndarray:
    """Frames pasted at (x, y) on a plain canvas of width x height (the canvas is what a wide shot looks like)."""
    n, h, w, _ = frames.shape
    out = np.full((n, height, width, 3), background, dtype=np.uint8)
    out[:, y:y + h, x:x + w] = frames
    return out


def encode(path: Path, frames: np.ndarray, fps=15, codec: str = "libx264", pix_fmt: str = "yuv420p",
           pts: list[int] | None = None, time_base: Fraction | None = None, audio: np.ndarray | None = None,
           sample_rate: int | None = None, rotation: int | None = None, options: dict | None = None,
           container_options: dict | None = None) -> Path:
    """Encode uint8 RGB frames (N, H, W, 3); `pts` + `time_base` give each frame its own time (variable rate)."""
    fmt = {".mkv": "matroska", ".mov": "mov"}.get(path.suffix, "mp4")
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(100000) if pts is None else None)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if options or codec == "libx264":
            s.options = options or {"preset": "ultrafast"}
        if pts is not None:
            s.codec_context.time_base = time_base
            s.time_base = time_base
        if rotation:
            s.set_display_rotation(rotation)
        a = None
        if audio is not None:
            layout = {1: "mono", 2: "stereo", 6: "5.1"}[audio.shape[0]]
            a = c.add_stream("aac", rate=sample_rate, layout=layout)
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if pts is not None:
                vf.pts, vf.time_base = pts[i], time_base
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
        if a is not None:
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, dtype=np.float32), format="fltp",
                                            layout=a.layout.name)
            af.sample_rate, af.pts = sample_rate, 0
            c.mux(a.encode(af))
            c.mux(a.encode(None))
    return path


def speech(rate: int = 16000, channels: int = 1, seconds: float | None = None) -> np.ndarray:
    """The real ARCTIC sentence (4.0 s) at `rate` with `channels` (channel k scaled by 1 - 0.1k so they differ),
    cut or padded with silence to `seconds`. float32 (C, S)."""
    from latentsync.video_io import read_audio  # noqa: PLC0415

    data, sr = read_audio(shared_path(*SPEECH))
    wave = data[0]
    if rate != sr:
        from latentsync.audio.resample import _resample  # noqa: PLC0415

        wave = _resample(wave, sr, rate)
    wave = wave.numpy()
    if seconds is not None:
        need = int(round(seconds * rate))
        wave = np.pad(wave, (0, max(0, need - len(wave))))[:need]
    return np.stack([wave * (1.0 - 0.1 * k) for k in range(channels)]).astype(np.float32)


def write_wav(path: Path, wave: np.ndarray, rate: int) -> Path:
    """PCM16 wav of float (C, S) (any channel count, stdlib `wave`)."""
    pcm = (np.clip(wave, -1, 1) * 32767).round().astype("<i2")
    with wave_module.open(str(path), "wb") as w:
        w.setnchannels(wave.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm.T).tobytes())
    return path


def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def faststart_clip(path: Path, n: int = 30) -> Path:
    """The clip with its index at the front (so a truncated copy opens and fails while decoding)."""
    return encode(path, clip_frames(n), 15, container_options={"movflags": "faststart"})


def copy(src: Path, dst: Path) -> Path:
    shutil.copy2(src, dst)
    return dst


def second_face(frames: np.ndarray, scale: float = 0.55, x: int | None = None) -> np.ndarray:
    """The astronaut photo's face (a second, smaller person) composited at the right of each frame."""
    photo = cv2.cvtColor(cv2.imread(str(shared_path(*PHOTO))), cv2.COLOR_BGR2RGB)
    face = photo[20:300, 100:360]  # her head
    h = int(frames.shape[1] * scale)
    w = int(face.shape[1] * h / face.shape[0])
    face = cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA)
    out = frames.copy()
    x = frames.shape[2] - w - 4 if x is None else x
    y = (frames.shape[1] - h) // 2
    out[:, y:y + h, x:x + w] = face
    return out
