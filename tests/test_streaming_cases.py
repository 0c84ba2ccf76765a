"""Long videos and bad input, case by case (issue 10, points 2-6), on media made at test time from ../shared/media.

Each case streams a real file through the library (`VideoFileSource` -> `LipSyncPipeline.run` -> `VideoWriter` or a
tensor) or the command line, and checks the documented behaviour: frame counts, frame rate, durations, the audio,
which frames changed, the report, the error text, and that nothing is left behind. The pipeline is the real one with
the tiny random models at a 64 px face size (the face size does not change any of these behaviours; it keeps the
U-Net and VAE cheap), and the real offline face detector.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import media_factory as mf
from conftest import REPO_ROOT
from latentsync.audio.features import AudioFeatureStream
from latentsync.audio.resample import to_mono_16k
from latentsync.face.align import FaceAligner
from latentsync.face.detector import create_face_detector
from latentsync.face.gaps import BRIDGED, FACE, NONE
from latentsync.face.mask import synthetic_mouth_mask
from latentsync.face.selection import FaceSelector
from latentsync.hub import VAE_NAME, read_unet_config
from latentsync.models.checkpoint import load_unet
from latentsync.pipeline import LipSyncPipeline, NoFaceError, TensorSink, detect_and_align
from latentsync.audio.whisper_encoder import WhisperAudioEncoder
from latentsync.options import LipSyncOptions, ModelOptions
from latentsync.precision import cpu_has_fast_bf16, safe_dtype, window_seconds
from latentsync.runner import run_lipsync
from latentsync.vae import VAECodec, load_vae
from latentsync.video_io import (MediaError, OutputError, VideoFileSource, VideoWriter, read_audio, read_video,
                                 write_video)

pytestmark = pytest.mark.slow
R = 64  # face size of the test pipeline


# ---------------------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def pipe(tiny_model_set) -> LipSyncPipeline:
    m = tiny_model_set
    unet = load_unet(m / "latentsync/v1.5/latentsync_unet.pt",
                     config=read_unet_config(m / "latentsync/v1.5/unet_config.yaml")).eval()
    encoder = WhisperAudioEncoder.from_file(m / "latentsync/whisper/tiny.pt", device="cpu")
    vae = load_vae(m / "vae" / VAE_NAME)
    return LipSyncPipeline(unet, VAECodec(vae), encoder, create_face_detector("offline"), synthetic_mouth_mask(R), R)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


def run(pipe, video: Path, wave: np.ndarray, rate: int, out: Path | None = None, **kw):
    """Stream `video` with audio `wave` (C, S) through the pipeline into `out` (a file) or a tensor.
    Returns (report, output frames uint8 or None, source frames uint8)."""
    kw = {"steps": 1, "guidance": 1.0, **kw}
    mode = kw.pop("length_mode", "pingpong")
    waveform = torch.from_numpy(np.ascontiguousarray(wave))
    with VideoFileSource(video) as source:
        plan = pipe.plan(source.timing, waveform, rate, mode)
        if out is None:
            sink = TensorSink(len(plan), source.frame_size)
            report = pipe.run(source, plan, waveform, rate, sink, **kw)
            frames = sink.frames
        else:
            with VideoWriter(out, plan.fps, source.frame_size, audio=waveform, sample_rate=rate,
                             audio_samples=plan.audio_samples(rate),
                             base=None if plan.constant else plan.base) as writer:
                report = pipe.run(source, plan, waveform, rate, writer, **kw)
                writer.close()
            frames = None
        src = source.read(0, len(source))
    return report, frames, src


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(video=0))
        info = {"fps": Fraction(v.average_rate), "width": frames[0].width, "height": frames[0].height,
                "frames": len(frames), "pts": [f.pts for f in frames], "time_base": Fraction(v.time_base)}
    wave, rate = read_audio(path)
    info.update(rate=rate, channels=wave.shape[0], audio_s=wave.shape[1] / rate, wave=wave)
    return info


def changed(out: torch.Tensor, src: torch.Tensor) -> list[bool]:
    return [bool((o != s).any()) for o, s in zip(out, src)]


def digest(*paths: Path) -> list[str]:
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


class MissingDetector:
    """The real detector, blind on the given frames (a detector miss: the picture itself is unchanged)."""

    def __init__(self, detector, blind: set[int]):
        self.detector, self.blind, self.calls = detector, blind, 0

    def detect(self, frame):
        k, self.calls = self.calls, self.calls + 1
        return [] if k in self.blind else self.detector.detect(frame)


@pytest.fixture(scope="module")
def clip12(media) -> Path:
    return mf.encode(media / "clip12.mp4", mf.clip_frames(12, (200, 200)), 15)


@pytest.fixture(scope="module")
def clip6(media) -> Path:
    return mf.encode(media / "clip6.mp4", mf.clip_frames(6, (200, 200)), 15)


# ---------------------------------------------------------------------------------------------------------------
# 1. streaming gives the in-memory result


def test_video_file_source_reads_any_frame_range_from_a_file_or_bytes(media):
    """Random access by seeking to the keyframe before (a keyframe every 8 frames here), from a path or from bytes
    in memory (what ComfyUI's VIDEO may hold), equals decoding the whole file."""
    video = mf.encode(media / "gop8.mp4", mf.clip_frames(40, (96, 96)), 15,
                      options={"preset": "ultrafast", "x264-params": "keyint=8:min-keyint=8:scenecut=0"})
    with VideoFileSource(video) as source:
        everything = source.read(0, 40)
        for start, stop in ((30, 34), (5, 9), (39, 40), (6, 30), (0, 3), (17, 18)):
            assert torch.equal(source.read(start, stop), everything[start:stop]), (start, stop)
    with VideoFileSource(io.BytesIO(video.read_bytes()), name="in-memory") as source:
        assert torch.equal(source.read(20, 40), everything[20:])
        assert torch.equal(source.read(0, 20), everything[:20]) and source.timing.fps == 15


def test_streaming_equals_the_in_memory_result_frame_for_frame(pipe, clip12, media):
    """File in, window by window (the backward half of the ping-pong re-read by seeking), against the same frames
    in memory; and the progressive writer's file against writing the in-memory result in one go."""
    wave = mf.speech(16000, 1, 1.2)  # 18 frames: 0..11, then 11..6
    settings = dict(steps=2, guidance=1.5, seed=5)
    report, streamed, src = run(pipe, clip12, wave, 16000, **settings)
    in_memory = pipe(src, Fraction(15), torch.from_numpy(wave), 16000, **settings)
    assert report.plan.source.tolist() == list(range(12)) + [11, 10, 9, 8, 7, 6]
    assert torch.equal(streamed, in_memory.frames)
    assert changed(streamed, src[report.plan.source]) == [True] * 18
    run(pipe, clip12, wave, 16000, media / "eq_stream.mp4", **settings)
    write_video(media / "eq_memory.mp4", in_memory.frames, 15, audio=in_memory.waveform, sample_rate=16000)
    a, b = read_video(media / "eq_stream.mp4"), read_video(media / "eq_memory.mp4")
    assert torch.equal(a.frames, b.frames) and a.fps == b.fps == 15
    assert torch.equal(a.audio, b.audio)


# ---------------------------------------------------------------------------------------------------------------
# 2. audio and video of different lengths: every length mode, audio longer and shorter than the video


# (mode, audio seconds, expected output frames, expected source order, expected output audio seconds); the video
# has 6 frames at 15 fps (0.4 s)
LENGTH_CASES = [
    ("pingpong", 0.6, 9, [0, 1, 2, 3, 4, 5, 5, 4, 3], 0.6),
    ("loop", 0.6, 9, [0, 1, 2, 3, 4, 5, 0, 1, 2], 0.6),
    ("freeze", 0.6, 9, [0, 1, 2, 3, 4, 5, 5, 5, 5], 0.6),
    ("cut_off", 0.6, 6, list(range(6)), 0.4),
    ("silence", 0.6, 6, list(range(6)), 0.4),
    ("pingpong", 0.2, 3, [0, 1, 2], 0.2),
    ("loop", 0.2, 3, [0, 1, 2], 0.2),
    ("freeze", 0.2, 3, [0, 1, 2], 0.2),
    ("cut_off", 0.2, 3, [0, 1, 2], 0.2),
    ("silence", 0.2, 6, list(range(6)), 0.4),  # the whole video; the audio padded with silence
]


@pytest.mark.parametrize("mode, seconds, count, order, audio_s", LENGTH_CASES,
                         ids=[f"{c[0]}-{c[1]}s" for c in LENGTH_CASES])
def test_length_modes(pipe, clip6, media, mode, seconds, count, order, audio_s):
    wave = mf.speech(22050, 2, seconds)
    out = media / f"len_{mode}_{seconds}.mp4"
    report, _, src = run(pipe, clip6, wave, 22050, out, length_mode=mode)
    assert report.plan.source.tolist() == order
    info = probe(out)
    assert info["frames"] == count and info["fps"] == 15
    assert info["rate"] == 22050 and info["channels"] == 2  # the user's audio at its own rate and channels
    assert info["audio_s"] == pytest.approx(audio_s, abs=0.025)
    if mode == "silence" and seconds < 0.4:  # padded with silence past the audio's end
        tail = info["wave"][:, int(seconds * 22050) + 1200:]
        assert tail.numel() > 0 and tail.abs().max() < 1e-3
    assert report.coverage()["processed"] == count  # a face in every frame


def test_silence_mode_gives_frames_past_the_audio_the_embeddings_of_silence(pipe, clip12):
    """The U-Net sees, for frames after the audio, the Whisper features of the audio followed by silence (not the
    last tokens repeated, as ping-pong/loop do past the end)."""
    seen = []
    original = pipe.unet

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = original

        def forward(self, sample, t, encoder_hidden_states=None, **kw):
            seen.append(encoder_hidden_states.detach().clone())
            return self.inner(sample, t, encoder_hidden_states=encoder_hidden_states, **kw)

    wave = mf.speech(16000, 1, 0.4)
    pipe.unet = Spy()
    try:
        run(pipe, clip12, wave, 16000, length_mode="silence")
    finally:
        pipe.unet = original
    audio = seen[0].reshape(12, 50, 384)  # one window, guidance 1: one call, every frame
    padded = torch.nn.functional.pad(to_mono_16k(torch.from_numpy(wave), 16000), (0, 16000 * 12 // 15 - 6400))
    expected = AudioFeatureStream(pipe.audio_encoder, padded).windows_at(np.arange(12) * 1, 15)
    assert torch.allclose(audio, expected, atol=1e-5)
    clamped = AudioFeatureStream(pipe.audio_encoder, to_mono_16k(torch.from_numpy(wave), 16000)).windows_at(
        np.arange(12), 15)
    assert not torch.allclose(audio[8:], clamped[8:], atol=1e-3)  # frames 6.. hear silence, not the last word


# ---------------------------------------------------------------------------------------------------------------
# 3. frames without a face: short gaps bridged, long gaps passed through, no face at all, strict mode


def test_short_gap_is_bridged_long_gap_passes_through(pipe, tiny_model_set, media):
    frames = mf.clip_frames(30)
    video = mf.encode(media / "gaps.mp4", frames, 15)
    wave = mf.speech(16000, 1, 2.0)
    detector = pipe.face_detector
    pipe.face_detector = MissingDetector(detector, blind={5, 6} | set(range(15, 23)))  # 2-frame and 8-frame misses
    try:
        report, out, src = run(pipe, video, wave, 16000)
    finally:
        pipe.face_detector = detector
    status = report.output_status.tolist()
    assert status[5:7] == [BRIDGED, BRIDGED]
    assert status[15:23] == [NONE] * 8 and status[:5] == [FACE] * 5 and status[23:] == [FACE] * 7
    ch = changed(out, src)
    assert all(ch[:15]) and all(ch[23:])  # the bridged frames were regenerated too: no flicker back
    assert not any(ch[15:23])  # the long gap passes through bit-identically
    cov = report.coverage()
    assert cov["bridged"] == 2 and cov["passed_through"] == 8 and cov["bridged_ranges"] == [[5, 7]]
    assert cov["passed_through_ranges"] == [[15, 23]]
    assert "no face found in 8 of 30 frames" in report.warnings[0]


def test_a_cut_inside_a_short_gap_is_not_bridged(pipe, media):
    frames = mf.clip_frames(12)
    frames[5] = 0  # one black frame: another picture, not a detector miss
    video = mf.encode(media / "flash.mp4", frames, 15)
    report, out, src = run(pipe, video, mf.speech(16000, 1, 0.8), 16000)
    assert report.output_status[5] == NONE and torch.equal(out[5], src[5])
    assert all(report.output_status[[0, 4, 6, 11]] == FACE)


def test_face_that_leaves_and_comes_back(pipe, media):
    frames = mf.clip_frames(30)
    frames[8:20] = 90  # the camera looks away: a plain wall for 12 frames
    video = mf.encode(media / "away.mp4", frames, 15)
    report, out, src = run(pipe, video, mf.speech(16000, 1, 2.0), 16000)
    status = report.output_status
    assert all(status[:8] == FACE) and all(status[8:20] == NONE) and all(status[20:] == FACE)
    ch = changed(out, src)
    assert not any(ch[8:20]) and all(ch[:8]) and all(ch[20:])


def test_no_face_at_all_returns_the_input_or_fails_in_strict_mode(pipe, media):
    frames = np.full((10, 120, 160, 3), 90, np.uint8)
    frames[:, 40:80, 50:110] = np.arange(60, dtype=np.uint8)[None, None, :, None]
    video = mf.encode(media / "noface.mp4", frames, 15)
    report, out, src = run(pipe, video, mf.speech(16000, 1, 0.6), 16000)
    assert torch.equal(out, src[:9])  # the input, unchanged
    assert report.no_face_at_all and "no face found in any of the 10 frames" in report.warnings[0]
    with pytest.raises(NoFaceError, match="strict faces: no face in output frame 0"):
        run(pipe, video, mf.speech(16000, 1, 0.6), 16000, strict_faces=True)


def test_two_people_the_chosen_one_stays_chosen(pipe):
    frames = mf.place(mf.clip_frames(16, (200, 200)), 720, 420, 10, 110)
    frames = mf.second_face(frames, scale=0.6)
    frames[8:] = mf.second_face(frames[8:], scale=1.0)  # the other person comes closer: now the larger face
    for selection, side in (("largest", "left"), ("index", "right")):
        selector = FaceSelector(mode=selection, index=1)
        aligned = detect_and_align(torch.from_numpy(frames), pipe.face_detector, FaceAligner(R), selector)
        centres = ((aligned.boxes[:, 0] + aligned.boxes[:, 2]) / 2).numpy()
        assert bool(aligned.has_face.all()), selection
        assert (centres < 300).all() if side == "left" else (centres > 300).all(), (selection, centres)


# ---------------------------------------------------------------------------------------------------------------
# 4. any frame rate and format


RATES = [Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30), Fraction(50),
         Fraction(60)]


@pytest.mark.parametrize("fps", RATES, ids=[f"{float(r):.3f}" for r in RATES])
def test_frame_rates_are_kept(pipe, media, fps):
    video = mf.encode(media / f"rate_{float(fps):.3f}.mp4", mf.clip_frames(6, (200, 200)), fps)
    seconds = float(6 / fps)
    out = media / f"rate_{float(fps):.3f}_out.mp4"
    report, _, _ = run(pipe, video, mf.speech(44100, 1, seconds), 44100, out)
    info = probe(out)
    assert info["fps"] == fps and info["frames"] == 6 and report.plan.constant
    assert info["audio_s"] == pytest.approx(seconds, abs=0.03)
    assert report.coverage()["processed"] == 6


def test_variable_frame_rate_keeps_every_timestamp_and_audio_follows_it(pipe, media):
    durations = [40, 40, 80, 40, 120, 40, 40, 60, 40, 40, 100, 40]  # ms
    pts = np.concatenate([[0], np.cumsum(durations)[:-1]]).tolist()
    video = mf.encode(media / "vfr.mkv", mf.clip_frames(12, (200, 200)), 25, pts=pts, time_base=Fraction(1, 1000))
    seconds = sum(durations) / 1000
    out = media / "vfr_out.mkv"
    report, _, _ = run(pipe, video, mf.speech(16000, 1, seconds), 16000, out)
    plan = report.plan
    assert not plan.constant and plan.source.tolist() == list(range(12))
    assert [Fraction(int(t), plan.base) for t in plan.starts] == [Fraction(p, 1000) for p in pts]
    info = probe(out)
    times = [Fraction(p) * info["time_base"] for p in info["pts"]]
    assert [t - times[0] for t in times] == [Fraction(p, 1000) for p in pts]  # kept in the output
    assert info["audio_s"] == pytest.approx(seconds, abs=0.03)
    # the audio window of each frame is centred on its own time: floor(50 t)
    from latentsync.audio.windows import window_indices_at

    centres = window_indices_at(10_000, plan.starts, plan.base)[:, 4]
    assert centres.tolist() == [p * 50 // 1000 for p in pts]


FORMAT_CASES = {  # name: (suffix, codec, pix_fmt, (W, H) of the content, canvas (W, H) or None, frames, rotation)
    "odd-size": (".mp4", "libx264", "yuv444p", (263, 263), (351, 263), 4, None),
    "portrait": (".mp4", "libx264", "yuv420p", (260, 260), (270, 480), 4, None),
    "4k": (".mp4", "libx264", "yuv420p", (1400, 1400), (3840, 2160), 2, None),
    "gray": (".mkv", "ffv1", "gray", (240, 240), None, 4, None),
    "alpha": (".mov", "png", "rgba", (240, 240), None, 4, None),
    "10-bit": (".mp4", "libx264", "yuv420p10le", (240, 240), None, 4, None),
    "rotated-phone": (".mp4", "libx264", "yuv420p", (240, 240), (240, 320), 4, 90),
}


@pytest.mark.parametrize("name", list(FORMAT_CASES))
def test_sizes_and_pixel_formats(pipe, media, name):
    suffix, codec, pix_fmt, content, canvas, n, rotation = FORMAT_CASES[name]
    frames = mf.clip_frames(n, content)
    if canvas is not None:
        frames = mf.place(frames, canvas[0], canvas[1], (canvas[0] - content[0]) // 2, (canvas[1] - content[1]) // 2)
    stored = np.ascontiguousarray(np.rot90(frames, k=-1, axes=(1, 2))) if rotation else frames  # as a phone stores
    video = mf.encode(media / f"fmt_{name}{suffix}", stored, 15, codec=codec, pix_fmt=pix_fmt, rotation=rotation)
    out = media / f"fmt_{name}_out.mp4"
    report, _, src = run(pipe, video, mf.speech(16000, 1, n / 15), 16000, out)
    h, w = frames.shape[1:3]
    assert src.shape[1:3] == (h, w)  # upright, 8-bit RGB whatever the source format
    info = probe(out)
    assert (info["height"], info["width"]) == (h + h % 2, w + w % 2)  # odd sizes padded by one pixel, never cropped
    assert info["frames"] == n and report.coverage()["processed"] == n
    if name == "gray":
        assert (src[..., 0] == src[..., 1]).all()
    if rotation:  # stored landscape, shown portrait: read upright (the detector found the face in every frame)
        assert tuple(src.shape[1:3]) == (320, 240) and stored.shape[1:3] == (240, 320)


@pytest.mark.parametrize("rate, channels", [(8000, 1), (22050, 2), (44100, 6), (48000, 2)])
def test_audio_rates_and_channels_are_kept(pipe, clip6, media, rate, channels):
    out = media / f"audio_{rate}_{channels}.mp4"
    run(pipe, clip6, mf.speech(rate, channels, 0.4), rate, out)
    info = probe(out)
    assert info["rate"] == rate and info["channels"] == channels and info["frames"] == 6
    assert info["audio_s"] == pytest.approx(0.4, abs=0.03)


def test_silent_audio_and_audio_shorter_than_a_frame(pipe, clip6, media):
    out = media / "silent.mp4"
    report, _, _ = run(pipe, clip6, np.zeros((1, 8000), np.float32), 16000, out)
    assert probe(out)["frames"] == 8 and report.coverage()["processed"] == 8
    # one output frame: at 64 px the U-Net's deepest level would be 1x1 for a single frame, so this case runs at
    # 128 px (the real sizes, 256 and 512, are far from it)
    pipe128 = LipSyncPipeline(pipe.unet, pipe.vae_codec, pipe.audio_encoder, pipe.face_detector,
                              synthetic_mouth_mask(128), 128)
    out = media / "blip.mp4"
    report, _, _ = run(pipe128, clip6, mf.speech(16000, 1, 0.01), 16000, out)  # 10 ms: less than a frame
    info = probe(out)
    assert info["frames"] == 1 and info["audio_s"] == pytest.approx(0.01, abs=0.002)
    assert report.coverage()["processed"] == 1


# ---------------------------------------------------------------------------------------------------------------
# 5. clear errors, nothing lost (the command line's run_lipsync, in-process; one real subprocess at the end)


@contextmanager
def special_folder(tmp: Path, kind: str):
    """A read-only or a nearly full folder: a real tmpfs mount where this process may mount (root), else the
    permission bits (read-only, non-root), else a simulated error at the writer's boundary (said in the id)."""
    folder = tmp / kind
    folder.mkdir()
    opts = "ro,size=64k" if kind == "readonly" else "size=16k"
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)],
                                                    capture_output=True).returncode == 0
    try:
        if mounted:
            yield folder, "real"
        elif kind == "readonly" and os.geteuid() != 0:
            folder.chmod(0o555)
            yield folder, "real"
        else:
            code = errno.EROFS if kind == "readonly" else errno.ENOSPC
            original = VideoWriter._mux

            def failing(self, packets):
                if kind == "readonly" or self.count > 3:
                    raise OSError(code, os.strerror(code))
                return original(self, packets)

            VideoWriter._mux = failing
            try:
                yield folder, "simulated"
            finally:
                VideoWriter._mux = original
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        folder.chmod(0o755)


def error_cases(media: Path, models: Path) -> dict:
    clip = mf.encode(media / "err_clip.mp4", mf.clip_frames(20, (200, 200)), 15)
    speech = mf.write_wav(media / "err_speech.wav", mf.speech(16000, 1, 1.0), 16000)
    fast = mf.faststart_clip(media / "err_fast.mp4", 30)
    empty_models = media / "empty_models"
    empty_models.mkdir(exist_ok=True)
    text_file = media / "err_text.mp4"
    text_file.write_text("this is not a video\n")
    broken_models = media / "broken_models"
    if not broken_models.exists():
        import shutil

        shutil.copytree(models, broken_models)
        unet = broken_models / "latentsync/v1.5/latentsync_unet.pt"
        unet.write_bytes(unet.read_bytes()[:2000])
    return {
        "truncated video": (dict(video=mf.truncated_copy(fast, media / "err_trunc.mp4"), audio=speech),
                            MediaError, ["err_trunc.mp4", "truncated", "export the video again"]),
        "not a video": (dict(video=text_file, audio=speech), MediaError, ["err_text.mp4", "not a media file"]),
        "no audio track, none given": (dict(video=clip, audio=None), MediaError,
                                       ["err_clip.mp4 has no audio track", "--audio"]),
        "zero-length audio": (dict(video=clip, audio=mf.write_wav(media / "err_empty.wav",
                                                                  np.zeros((1, 0), np.float32), 16000)),
                              MediaError, ["err_empty.wav", "empty (0 samples)"]),
        "missing model": (dict(video=clip, audio=speech, models=empty_models), FileNotFoundError,
                          ["latentsync_unet.pt", "ByteDance/LatentSync-1.5"]),
        "corrupt model": (dict(video=clip, audio=speech, models=broken_models), RuntimeError,
                          ["latentsync_unet.pt", "damaged", "download it again"]),
        "missing output folder": (dict(video=clip, audio=speech, out=media / "nowhere" / "o.mp4"),
                                  FileNotFoundError, ["output folder does not exist", "nowhere"]),
    }


ERRORS = ["truncated video", "not a video", "no audio track, none given", "zero-length audio", "missing model",
          "corrupt model", "missing output folder"]


@pytest.mark.parametrize("case", ERRORS)
def test_errors_name_the_file_and_what_to_do(tiny_model_set, media, tmp_path, case):
    kwargs, error, words = error_cases(media, tiny_model_set)[case]
    model = ModelOptions(models=kwargs.pop("models", tiny_model_set), face_backend="offline", download=False)
    kwargs = {"out": tmp_path / "out.mp4", **kwargs}
    inputs = [p for p in (kwargs["video"], kwargs.get("audio")) if p is not None]
    before = digest(*inputs)
    with pytest.raises(error) as info:
        run_lipsync(options=LipSyncOptions(steps=1), model=model, log=lambda *_: None, **kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert digest(*inputs) == before  # inputs never modified
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a part file


@pytest.mark.parametrize("kind", ["readonly", "full"])
def test_unwritable_or_full_output_leaves_nothing(tiny_model_set, media, tmp_path, kind):
    clip = mf.encode(media / "disk_clip.mp4", mf.clip_frames(40, (320, 320)), 15)
    speech = mf.write_wav(media / "disk_speech.wav", mf.speech(16000, 1, 40 / 15), 16000)
    before = digest(clip, speech)
    with special_folder(tmp_path, kind) as (folder, how):
        with pytest.raises(OutputError) as info:
            run_lipsync(clip, speech, folder / "out.mp4", options=LipSyncOptions(steps=1, guidance=1.0),
                        model=ModelOptions(models=tiny_model_set, face_backend="offline", download=False),
                        log=lambda *_: None)
        text = info.value.strerror
        if kind == "readonly":
            assert f"cannot write into {folder}" in text and "choose a folder you can write to" in text, text
        else:
            assert f"the disk holding {folder} is full" in text and "nothing was written" in text, text
        assert list(folder.iterdir()) == [], how
    assert digest(clip, speech) == before


def test_command_line_errors_exit_2_with_one_message_and_the_report(tiny_model_set, media, tmp_path):
    clip = mf.encode(media / "cli_clip.mp4", mf.clip_frames(8, (200, 200)), 15,
                     audio=mf.speech(44100, 2, 8 / 15), sample_rate=44100)
    trunc = mf.truncated_copy(mf.faststart_clip(media / "cli_fast.mp4", 30), media / "cli_trunc.mp4")
    base = [sys.executable, "-m", "latentsync", "--models", str(tiny_model_set), "--face-backend", "offline",
            "--steps", "1", "--no-download"]
    bad = subprocess.run(base + ["--video", str(trunc), "--out", str(tmp_path / "o.mp4")], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("error:") == 1 and "cli_trunc.mp4 is truncated" in bad.stderr
    report = tmp_path / "report.json"
    ok = subprocess.run(base + ["--video", str(clip), "--out", str(tmp_path / "o.mp4"), "--report", str(report),
                                "--dtype", "bf16", "--length-mode", "cut_off"],  # the video's own audio track
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["output_frames"] == 8 and data["length_mode"] == "cut_off" and data["fps"] == "15"
    assert data["coverage"]["processed"] == 8 and data["coverage"]["processed_ranges"] == [[0, 8]]
    if not cpu_has_fast_bf16():
        assert "bfloat16 requested on the CPU, using float32 instead" in ok.stderr
    assert "one 16-frame window takes about" in ok.stderr  # said before it starts
    assert ok.stderr.index("one 16-frame window takes about") < ok.stderr.index("progress")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4", "report.json"]


def test_missing_models_are_reported_before_the_video_is_decoded(media, tmp_path, monkeypatch):
    """With downloads off, a missing model file is the first thing said: no decode of the video is started (a long
    video would hold the message back), and the command line says it before importing the models' code."""
    clip = mf.encode(media / "early_clip.mp4", mf.clip_frames(8, (96, 96)), 15)
    speech = mf.write_wav(media / "early_speech.wav", mf.speech(16000, 1, 8 / 15), 16000)
    decoded = []
    monkeypatch.setattr(VideoFileSource, "verify", lambda self, stop=None: decoded.append(self))
    with pytest.raises(FileNotFoundError, match="latentsync_unet.pt"):
        run_lipsync(clip, speech, tmp_path / "o.mp4", model=ModelOptions(models=tmp_path, download=False),
                    log=lambda *_: None)
    assert decoded == []
    probe = ("import sys, runpy; sys.argv = ['latentsync'] + sys.argv[1:]\n"
             "try:\n    runpy.run_module('latentsync', run_name='__main__')\n"
             "except SystemExit as e:\n"
             "    print(e.code, sorted(m for m in ('diffusers', 'whisper', 'kornia') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe, "--video", str(clip), "--audio", str(speech), "--out",
                           str(tmp_path / "o.mp4"), "--models", str(tmp_path), "--no-download"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split("\n")[-2] == "2 []", proc.stdout + proc.stderr
    assert proc.stderr.count("error:") == 1 and "latentsync_unet.pt" in proc.stderr


def test_an_error_while_the_models_load_stops_the_verifying_decode(media, tmp_path, monkeypatch):
    """The decode that checks the whole file runs beside the model loading; when the loading fails, it is told to
    stop at its next frame, and the error comes out as raised."""
    clip = mf.encode(media / "stop_clip.mp4", mf.clip_frames(8, (96, 96)), 15)
    speech = mf.write_wav(media / "stop_speech.wav", mf.speech(16000, 1, 8 / 15), 16000)
    events = []
    verify = VideoFileSource.verify

    def spy(self, stop=None):
        events.append(stop)
        return verify(self, stop)

    def failing_models():
        raise RuntimeError("the models could not be loaded")

    monkeypatch.setattr(VideoFileSource, "verify", spy)
    with pytest.raises(RuntimeError, match="could not be loaded"):
        run_lipsync(clip, speech, tmp_path / "o.mp4", pipeline=failing_models, log=lambda *_: None)
    (stop,) = events
    assert stop is not None and stop.is_set()
    assert list(tmp_path.iterdir()) == []
    with VideoFileSource(clip, verify=False) as source:  # told to stop before it starts: nothing is verified
        stopped = type(stop)()
        stopped.set()
        verify(source, stopped)
        assert not source.verified
        verify(source)
        assert source.verified


# ---------------------------------------------------------------------------------------------------------------
# 6. choices that hurt


def test_bf16_on_a_cpu_without_native_bf16_becomes_fp32_with_a_warning():
    said = []
    assert safe_dtype(torch.bfloat16, "cpu", said.append, fast_bf16=False) == torch.float32
    assert "no native bf16" in said[0] and "30x slower" in said[0]
    assert safe_dtype(torch.bfloat16, "cpu", said.append, fast_bf16=True) == torch.bfloat16
    assert safe_dtype(torch.float16, "cpu", said.append) == torch.float32 and "fp16 is emulated" in said[-1]
    assert safe_dtype(torch.bfloat16, "cuda", said.append) == torch.bfloat16
    assert cpu_has_fast_bf16({"avx2", "avx512_bf16"}) and cpu_has_fast_bf16({"amx_bf16"})


def test_window_estimate_reproduces_the_measured_figures():
    # README: one 16-frame chunk, all stages, 20 steps, CFG, DeepCache 3, 2 cores: 536 s at 256 fp32, 2581 s at 512
    assert window_seconds(256, torch.float32, threads=2) == pytest.approx(536, rel=0.01)
    assert window_seconds(512, torch.float32, threads=2) == pytest.approx(2581, rel=0.01)
    assert window_seconds(512, torch.float32, threads=4) == pytest.approx(2581 / 2, rel=0.01)
