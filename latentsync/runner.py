"""Files in, file out: load the model set, read the media, run `LipSyncPipeline`, write H.264 + AAC."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .config import VERSIONS
from .pipeline import LipSyncPipeline, LipSyncResult

Log = Callable[[str], None]


def default_dtype(device: torch.device | str) -> torch.dtype:
    """fp16 on CUDA GPUs of compute capability 8+ (as the official inference), else fp32."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        return torch.float16
    return torch.float32


def build_pipeline(models: Path, version: str = "1.5", face_backend: str = "auto", device: str = "cpu",
                   dtype: torch.dtype | None = None, download: bool = True, log: Log = print) -> tuple[LipSyncPipeline, bool]:
    """Locate (or download) every file of a model set and build the pipeline. Returns (pipeline, is_tiny)."""
    from .audio.whisper_encoder import WhisperAudioEncoder
    from .face.backend_choice import choose_face_backend
    from .face.detector import create_face_detector
    from .face.mask import load_mask
    from .hub import locate_model_set
    from .models.checkpoint import load_unet
    from .vae import VAECodec, load_vae

    resolution = VERSIONS[version]["resolution"]
    dtype = dtype or default_dtype(device)
    model_set = locate_model_set(models, version=version, download=download,
                                 include_insightface=face_backend == "insightface")
    if model_set.is_tiny:
        log("NOTE: using the TINY RANDOM model set (official weights not available): the pipeline runs end to end, "
            "but the generated mouth is noise. Put the official files in the models folder for real results.")
    log(f"loading U-Net {model_set.unet} ({dtype}, {device})")
    unet = load_unet(model_set.unet, config=model_set.unet_config_dict(), device=device, dtype=dtype).eval()
    log(f"loading Whisper {model_set.whisper}")
    encoder = WhisperAudioEncoder.from_file(model_set.whisper, device=device)
    log(f"loading VAE {model_set.vae}")
    vae = load_vae(model_set.vae, device=device, dtype=dtype)
    if face_backend == "insightface":
        face_dir = model_set.insightface_dir
    else:  # auto: InsightFace when buffalo_l is there or can be downloaded (never into a tiny set), else offline
        choice = choose_face_backend(face_backend, models, download=download and not model_set.is_tiny,
                                     no_download_reason="--no-download is set" if not download else
                                     "a tiny random model set is never completed with downloads")
        log(f"face detector: {choice.describe()}")
        face_backend, face_dir = choice.backend, choice.models_dir
    detector = create_face_detector(face_backend, models_dir=face_dir, device=device)
    mask = load_mask(model_set.mask, resolution)
    pipe = LipSyncPipeline(unet, VAECodec(vae), encoder, detector, mask, resolution, device=device)
    return pipe, model_set.is_tiny


def run_lipsync(video: Path, audio: Path, out: Path, version: str = "1.5", models: Path = Path("models"),
                face_backend: str = "auto", steps: int = 20, guidance: float = 1.5, seed: int = 1247,
                deepcache: bool = True, device: str = "cpu", download: bool = True, log: Log = print) -> LipSyncResult:
    from .video_io import read_audio, read_video, write_video

    video, audio, out = Path(video), Path(audio), Path(out)
    for p, what in ((video, "video"), (audio, "audio")):
        if not p.is_file():
            raise FileNotFoundError(f"{what} file not found: {p}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {out.parent}")
    if out.exists() and out.resolve() in (video.resolve(), audio.resolve()):
        raise ValueError(f"refusing to overwrite an input file: {out}")

    pipe, _ = build_pipeline(models, version, face_backend, device, download=download, log=log)
    clip = read_video(video)
    waveform, sample_rate = read_audio(audio)
    log(f"video: {clip.frames.shape[0]} frames {clip.frames.shape[2]}x{clip.frames.shape[1]} at {float(clip.fps):.3f} fps; "
        f"audio: {waveform.shape[-1] / sample_rate:.2f} s at {sample_rate} Hz")

    state = {"last": -1}

    def progress(done: int, total: int) -> None:
        pct = int(100 * done / max(total, 1))
        if pct // 10 != state["last"] // 10:
            state["last"] = pct
            log(f"progress {pct:3d}% ({done}/{total})")

    result = pipe(clip.frames, clip.fps, waveform, sample_rate, steps=steps, guidance=guidance, deepcache=deepcache,
                  seed=seed, progress=progress)
    missing = int((~result.has_face).sum())
    if missing:
        log(f"WARNING: no face found in {missing} of {len(result.has_face)} frames; they were passed through unchanged")
    write_video(out, result.frames, result.fps, audio=result.waveform, sample_rate=result.sample_rate)
    log(f"wrote {out} ({result.frames.shape[0]} frames at {float(result.fps):.3f} fps)")
    return result
