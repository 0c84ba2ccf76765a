"""Files in, file out: load the model set, stream the video through `LipSyncPipeline`, write H.264 + AAC progressively.

Nothing is held whole: frames are decoded, processed and encoded window by window (see `latentsync.pipeline`), the
output is written to a hidden `.part` file beside `out` and renamed into place only when complete. Inputs are only
ever opened for reading.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .config import VERSIONS
from .options import LipSyncOptions, ModelOptions

if TYPE_CHECKING:  # the pipeline's modules (diffusers and the models) are imported once the inputs are known good
    from .pipeline import LipSyncPipeline, LipSyncReport

Log = Callable[[str], None]


def default_dtype(device: torch.device | str) -> torch.dtype:
    """fp16 on CUDA GPUs of compute capability 8+ (as the official inference) and on Apple's MPS (what ComfyUI picks
    there; MPS has no float64 and bf16 only from macOS 14), else fp32."""
    device = torch.device(device)
    if device.type == "mps" or (device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8):
        return torch.float16
    return torch.float32


def _load(what: str, path, load: Callable[[], object]):
    """Run a model loader; a damaged file becomes one message naming it (a missing one is reported by the hub)."""
    from .hub import ModelNotFoundError, model_load_error

    try:
        return load()
    except (ModelNotFoundError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read the file is re-raised as one clear message
        raise model_load_error(what, path, exc) from exc


def build_pipeline(models: Path, version: str = "1.5", face_backend: str = "auto", device: str = "cpu",
                   dtype: torch.dtype | None = None, download: bool = True, log: Log = print,
                   selector=None, loras: Sequence[tuple[Path, float]] = ()) -> tuple[LipSyncPipeline, bool]:
    """Locate (or download) every file of a model set and build the pipeline. Returns (pipeline, is_tiny).
    A dtype the device runs badly (bf16 on a CPU without native bf16, fp16 on a CPU) is replaced by fp32.
    `loras`: (LoRA file, strength) pairs merged into the U-Net's weights."""
    from .audio.whisper_encoder import WhisperAudioEncoder
    from .face.backend_choice import choose_face_backend
    from .face.detector import create_face_detector, describe_face_detection
    from .face.mask import load_mask
    from .hub import locate_model_set
    from .models.checkpoint import load_unet
    from .pipeline import LipSyncPipeline
    from .precision import safe_dtype
    from .vae import VAECodec, load_vae

    resolution = VERSIONS[version]["resolution"]
    dtype = safe_dtype(dtype or default_dtype(device), device, log)
    model_set = locate_model_set(models, version=version, download=download,
                                 include_insightface=face_backend == "insightface")
    if model_set.is_tiny:
        log("NOTE: using the TINY RANDOM model set (official weights not available): the pipeline runs end to end, "
            "but the generated mouth is noise. Put the official files in the models folder for real results.")
    log(f"loading U-Net {model_set.unet} ({dtype}, {device})")
    for path, strength in loras:
        log(f"LoRA {path} at strength {strength:g}")
    unet = _load("LatentSync U-Net", model_set.unet, lambda: load_unet(
        model_set.unet, config=model_set.unet_config_dict(), device=device, dtype=dtype, loras=loras).eval())
    log(f"loading Whisper {model_set.whisper}")
    encoder = _load("Whisper model", model_set.whisper,
                    lambda: WhisperAudioEncoder.from_file(model_set.whisper, device=device))
    log(f"loading VAE {model_set.vae}")
    vae = _load("VAE", model_set.vae, lambda: load_vae(model_set.vae, device=device, dtype=dtype))
    if face_backend == "insightface":
        face_dir = model_set.insightface_dir
    else:  # auto: InsightFace when buffalo_l is there or can be downloaded (never into a tiny set), else offline
        choice = choose_face_backend(face_backend, models, download=download and not model_set.is_tiny,
                                     no_download_reason="--no-download is set" if not download else
                                     "a tiny random model set is never completed with downloads")
        log(f"face detector: {choice.describe()}")
        face_backend, face_dir = choice.backend, choice.models_dir
    detector = _load("face detector", face_dir or face_backend,
                     lambda: create_face_detector(face_backend, models_dir=face_dir, device=device))
    log(describe_face_detection(face_backend, device))
    mask = _load("mouth mask", model_set.mask, lambda: load_mask(model_set.mask, resolution))
    pipe = LipSyncPipeline(unet, VAECodec(vae), encoder, detector, mask, resolution, device=device, selector=selector)
    return pipe, model_set.is_tiny


def _input_file(path: Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}" if not path.exists() else
                                f"{what} path is not a file: {path}")
    return path


def write_report(path: Path, report: dict) -> None:
    """JSON written beside its final name and renamed into place (never a half-written report)."""
    path = Path(path).expanduser()
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_lipsync(video: Path, audio: Path | None, out: Path, options: LipSyncOptions | None = None,
                model: ModelOptions | None = None, log: Log = print, report: Path | None = None,
                overwrite: bool = False, pipeline: Callable[[], LipSyncPipeline] | None = None,
                before_commit: Callable[[], None] | None = None) -> LipSyncReport:
    """Lip-sync `video` to `audio` (None: the video's own audio track) into `out` (H.264 + AAC, written
    progressively) with the given options (default: the defaults). Returns the run's report (also written to
    `report` as JSON when given).

    `pipeline`: a function giving an already built pipeline to reuse (the batch runner loads the models once per
    process; called only once the inputs have opened); default: build one from `model`. `before_commit`: called
    when the output is complete, before it takes its final name (raise to throw it away)."""
    from .hub import locate_model_set
    from .precision import cpu_time_warning
    from .video_io import MediaError, VideoFileSource, VideoWriter, check_output, has_audio, read_audio

    options = (options or LipSyncOptions()).validate()
    model = (model or ModelOptions()).validate()
    device = model.resolved_device()
    video = _input_file(video, "video")
    audio = _input_file(audio, "audio") if audio is not None else None
    loras = [(_input_file(path, "LoRA"), float(strength)) for path, strength in model.loras]
    out = Path(out).expanduser()
    if report is not None and not Path(report).expanduser().parent.is_dir():
        raise FileNotFoundError(f"report folder does not exist: {Path(report).expanduser().parent}")

    check_output(out, overwrite, [video] + ([audio] if audio is not None else []))
    if pipeline is None and not model.download:  # a missing file is said now, not after the imports and the decode
        locate_model_set(model.models, version=model.version, download=False,
                         include_insightface=model.face_backend == "insightface")
    source = VideoFileSource(video, verify=False)  # the packets: frame count and times, a truncated file
    stop_verify = threading.Event()
    try:
        # The full decode that finds a damaged file runs while the models load (its own thread, always joined; on
        # an error here it stops at the next frame, so a long video does not hold the message back).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="latentsync-verify") as pool:
            verified = pool.submit(source.verify, stop_verify)
            try:
                if audio is None:
                    if not has_audio(video):
                        raise MediaError(f"{video} has no audio track: give the speech with --audio FILE")
                    waveform, sample_rate = read_audio(video)
                else:
                    waveform, sample_rate = read_audio(audio)
                if waveform.shape[-1] == 0:
                    raise MediaError(f"the audio of {audio or video} is empty (0 samples): choose a file with sound")
                selector = options.face_selector(source.frame_size)
                if pipeline is None:
                    pipe, _ = build_pipeline(model.models, model.version, model.face_backend, device,
                                             dtype=model.torch_dtype(), download=model.download, log=log,
                                             selector=selector, loras=loras)
                else:
                    pipe = pipeline()
                    pipe.selector = selector  # reset for this video by the pipeline's face tracker
            except BaseException:
                stop_verify.set()
                raise
            verified.result()
        h, w = source.frame_size
        timing = source.timing
        log(f"video: {len(source)} frames {w}x{h} at {float(timing.fps):.3f} fps"
            f"{'' if timing.constant else ' (variable frame rate: each frame keeps its time)'}; "
            f"audio: {waveform.shape[-1] / sample_rate:.2f} s, {waveform.shape[0]} channel(s) at {sample_rate} Hz")
        from .pipeline import WINDOW, LipSyncPipeline  # loaded with the models by now

        plan = LipSyncPipeline.plan(timing, waveform, sample_rate, options.length_mode)
        resolution = VERSIONS[model.version]["resolution"]
        inputs = [video] + ([audio] if audio is not None else [])
        with VideoWriter(out, plan.fps, source.frame_size, audio=waveform, sample_rate=sample_rate,
                         audio_samples=plan.audio_samples(sample_rate), base=None if plan.constant else plan.base,
                         overwrite=overwrite, inputs=inputs, log=log, **options.writer_kwargs()) as writer:
            if torch.device(device).type == "cpu":
                unet_dtype = next(pipe.unet.parameters()).dtype
                log(cpu_time_warning(resolution, unet_dtype, options.steps,
                                     options.deepcache_interval if options.deepcache else 1, options.guidance,
                                     -(-len(plan) // WINDOW)))
            log(f"output: {len(plan)} frames ({float(plan.duration):.2f} s, length mode {options.length_mode})")
            state = {"last": -1}

            def progress(done: int, total: int) -> None:
                pct = int(100 * done / max(total, 1))
                if pct // 10 != state["last"] // 10:
                    state["last"] = pct
                    log(f"progress {pct:3d}% ({done}/{total})")

            result = pipe.run(source, plan, waveform, sample_rate, writer, progress=progress,
                              **options.pipeline_kwargs())
            if before_commit is not None:
                before_commit()
            writer.close()
    finally:
        source.close()
    for warning in result.warnings:
        log(f"WARNING: {warning}")
    summary = result.to_dict()
    summary.update(video=str(video), audio=str(audio or video), output=str(out))
    if report is not None:
        write_report(Path(report), summary)
        log(f"wrote the report {report}")
    cov = summary["coverage"]
    log(f"wrote {out} ({len(plan)} frames at {float(plan.fps):.3f} fps; face regenerated in {cov['processed']} "
        f"of {cov['output_frames']} frames, {cov['bridged']} of them bridged)")
    return result
