"""A small raw-video set for the data-preparation tests, made from ../shared/media with PyAV."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from latentsync.audio.resample import to_mono_16k
from latentsync.video_io import read_audio, read_video, write_video

SIZE = 350  # the shared clip's frame size
SECONDS = 2  # per scene: 50 frames at 25 fps, just above the 48 a training clip needs


def _speech(shared: Path, seconds: float) -> torch.Tensor:
    parts = []
    for name in ("speech_cmu_arctic_a0007_16k.wav", "speech_cmu_arctic_a0009_16k.wav"):
        wav, rate = read_audio(shared / name)
        parts.append(to_mono_16k(wav, rate))
    speech = torch.cat(parts)
    return speech[: int(seconds * 16000)]


def _zooming_photo(shared: Path, frames: int) -> torch.Tensor:
    """The astronaut photo with a slow zoom: a second scene with a steady face."""
    photo = torch.from_numpy(np.array(Image.open(shared / "face_astronaut_skimage.png").convert("RGB")))
    x = photo.permute(2, 0, 1)[None].float()
    out = []
    for i in range(frames):
        crop = int(x.shape[-1] * (1.0 - 0.04 * i / frames))
        off = (x.shape[-1] - crop) // 2
        tile = F.interpolate(x[..., off:off + crop, off:off + crop], size=(SIZE, SIZE), mode="bilinear",
                             antialias=True, align_corners=False)
        out.append(tile[0].permute(1, 2, 0).round().clamp(0, 255).byte())
    return torch.stack(out)


def _retime(frames: torch.Tensor, src_fps: int, dst_fps: int) -> torch.Tensor:
    n = round(frames.shape[0] * dst_fps / src_fps)
    idx = torch.clamp((torch.arange(n) * src_fps / dst_fps).floor().long(), max=frames.shape[0] - 1)
    return frames[idx]


def make_raw_set(shared_media: Path, folder: Path) -> dict[str, Path]:
    """cut.mp4 (the speaking woman, a hard cut, the zooming photo; 25 fps, 2 + 2 s), woman_15fps.mp4 (44.1 kHz
    stereo audio), woman_30fps.mp4 (2 s each), noface.mp4 (moving colours and speech, 1 s), broken.mp4 (a truncated
    file)."""
    folder.mkdir(parents=True, exist_ok=True)
    woman = read_video(shared_media / "clip_speaking_woman_frontal_350px_15fps.mp4").frames[:SECONDS * 15]
    speech = _speech(shared_media, 2 * SECONDS)
    files = {}
    cut = torch.cat([_retime(woman, 15, 25), _zooming_photo(shared_media, SECONDS * 25)])
    # CRF 10: at 18 the first two frames after the cut came out soft enough for the face filter to drop them
    files["cut"] = write_video(folder / "cut.mp4", cut, 25, audio=speech[None], sample_rate=16000, crf=10)
    speech_part = speech[: SECONDS * 16000]
    stereo_44k = torch.from_numpy(np.interp(np.arange(SECONDS * 44100) / 44100, np.arange(speech_part.shape[0]) / 16000,
                                            speech_part.numpy())).float()
    stereo = torch.stack([stereo_44k, 0.8 * stereo_44k])
    files["woman_15fps"] = write_video(folder / "woman_15fps.mp4", woman, 15, audio=stereo, sample_rate=44100)
    files["woman_30fps"] = write_video(folder / "woman_30fps.mp4", _retime(woman, 15, 30), 30, audio=speech_part[None],
                                       sample_rate=16000)
    t = torch.arange(SECONDS * 25, dtype=torch.float32)[:, None, None]
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    noface = torch.stack([(xx + 3 * t) % 256, (yy + 5 * t) % 256, (xx + yy + 7 * t) % 256], -1).byte()
    files["noface"] = write_video(folder / "noface.mp4", noface, 25, audio=speech_part[None], sample_rate=16000)
    broken = folder / "broken.mp4"
    broken.write_bytes(files["woman_30fps"].read_bytes()[:2000])
    files["broken"] = broken
    return files
