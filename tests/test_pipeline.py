"""End to end with the tiny random model set on the real 15 fps clip and the real 4 s ARCTIC speech."""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from comfy_session import write_first_seconds
from conftest import REPO_ROOT, shared_path
from latentsync.pipeline import LipSyncPipeline, pingpong_indices
from latentsync.runner import build_pipeline
from latentsync.video_io import read_audio, read_video

CLIP = ("media", "clip_speaking_woman_frontal_350px_15fps.mp4")
SPEECH = ("media", "speech_cmu_arctic_a0007_16k.wav")
CLI_SECONDS = 1.2  # the command line's run: the first 1.2 s of SPEECH


@pytest.fixture(scope="module")
def tiny_models(tiny_model_set) -> Path:
    return tiny_model_set  # the session's set (256 px, seed 0)


@pytest.fixture(scope="module")
def pipeline(tiny_models) -> LipSyncPipeline:
    pipe, is_tiny = build_pipeline(tiny_models, "1.5", face_backend="offline", device="cpu", download=False,
                                   log=lambda *_: None)
    assert is_tiny
    return pipe


@pytest.fixture(scope="module")
def media():
    clip = read_video(shared_path(*CLIP))
    waveform, sr = read_audio(shared_path(*SPEECH))
    return clip, waveform, sr


@pytest.fixture(scope="module")
def result(pipeline, media):
    clip, waveform, sr = media
    return pipeline(clip.frames, clip.fps, waveform, sr, steps=3, seed=7)


def footprint(matrix: torch.Tensor, crop_wh: tuple[int, int], frame_hw: tuple[int, int], margin: int) -> np.ndarray:
    """Pixels of the frame covered by the aligned crop (its inverse-warped rectangle), dilated by `margin`."""
    m = np.vstack([matrix.double().numpy(), [0, 0, 1]])
    inv = np.linalg.inv(m)
    w, h = crop_wh
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], dtype=np.float64) @ inv.T
    out = np.zeros(frame_hw, dtype=np.uint8)
    cv2.fillConvexPoly(out, np.round(corners[:, :2]).astype(np.int32), 1)
    return cv2.dilate(out, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)).astype(bool)


def test_output_has_the_audio_duration_at_the_video_frame_rate(result, media):
    clip, waveform, sr = media
    assert clip.fps == 15
    assert result.fps == Fraction(15)
    duration = waveform.shape[-1] / sr
    assert result.frames.shape[0] == round(duration * 15) == 60  # 4.0 s of speech; the clip has 45 frames
    assert result.frames.shape[1:] == clip.frames.shape[1:]
    assert result.frames.dtype == torch.uint8
    assert abs(result.waveform.shape[-1] / result.sample_rate - 60 / 15) <= 1 / 15
    assert bool(result.has_face.all()), "the offline detector must find the face in every frame of the clip"


def test_video_loops_pingpong_when_audio_is_longer(result, media):
    clip, _, _ = media
    order = pingpong_indices(clip.frames.shape[0], result.frames.shape[0])
    assert order[:45].tolist() == list(range(45))
    assert order[45:60].tolist() == list(range(44, 29, -1))


def test_pixels_outside_the_face_region_are_unchanged(pipeline, result, media):
    clip, _, _ = media
    order = pingpong_indices(clip.frames.shape[0], result.frames.shape[0])
    from latentsync.face.align import FaceAligner
    from latentsync.pipeline import detect_and_align

    aligner = FaceAligner(256)
    aligned = detect_and_align(clip.frames, pipeline.face_detector, aligner)
    crop_wh = (210, 280)
    changed_inside = 0
    for i in range(result.frames.shape[0]):
        src = clip.frames[order[i]]
        inside = footprint(aligned.matrices[order[i]], crop_wh, src.shape[:2], margin=2)
        out = result.frames[i]
        assert torch.equal(out[~torch.from_numpy(inside)], src[~torch.from_numpy(inside)]), f"frame {i}"
        changed_inside += int((out != src).any())
    assert changed_inside == result.frames.shape[0], "every frame's face region must have been regenerated"


def test_same_seed_reproduces_and_another_seed_differs(pipeline, result, media):
    clip, waveform, sr = media
    short = waveform[:, : sr // 2]  # 0.5 s -> 8 frames: one window
    a = pipeline(clip.frames, clip.fps, short, sr, steps=3, seed=7)
    b = pipeline(clip.frames, clip.fps, short, sr, steps=3, seed=7)
    c = pipeline(clip.frames, clip.fps, short, sr, steps=3, seed=8)
    assert torch.equal(a.frames, b.frames)
    assert not torch.equal(a.frames, c.frames)
    assert a.frames.shape[0] == 8


def test_frames_without_a_face_pass_through(pipeline, media):
    clip, waveform, sr = media
    frames = clip.frames[:8].clone()
    frames[3] = 0  # a black frame: no face
    out = pipeline(frames, clip.fps, waveform[:, : sr * 8 // 15], sr, steps=2, seed=1)
    assert out.frames.shape[0] == 8
    assert not bool(out.has_face[3]) and bool(out.has_face[[0, 1, 2, 4, 5, 6, 7]].all())
    assert torch.equal(out.frames[3], frames[3])


def test_progress_reaches_the_total_and_cancel_stops(pipeline, media):
    clip, waveform, sr = media
    seen = []
    pipeline(clip.frames[:4], clip.fps, waveform[:, : sr // 4], sr, steps=2, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1]

    class Cancelled(Exception):
        pass

    def cancel_after_detection(done, total):
        if done > 4:
            raise Cancelled

    with pytest.raises(Cancelled):
        pipeline(clip.frames[:4], clip.fps, waveform[:, : sr // 4], sr, steps=2, progress=cancel_after_detection)


def test_bad_inputs_are_clear_errors(pipeline, media):
    clip, waveform, sr = media
    with pytest.raises(ValueError, match="uint8"):
        pipeline(clip.frames.float(), clip.fps, waveform, sr)
    with pytest.raises(ValueError, match="no frames"):
        pipeline(clip.frames[:0], clip.fps, waveform, sr)
    with pytest.raises(ValueError):
        pipeline(clip.frames, 0, waveform, sr)
    with pytest.raises(ValueError, match="sample"):
        pipeline(clip.frames, clip.fps, waveform[:, :0], sr)


def test_command_line_writes_h264_aac_at_the_input_frame_rate(tiny_models, tmp_path):
    out, speech = tmp_path / "out.mp4", tmp_path / "speech.wav"
    write_first_seconds(shared_path(*SPEECH), speech, CLI_SECONDS)  # CI time: two windows, the second one short
    run = subprocess.run(
        [sys.executable, "-m", "latentsync", "--video", str(shared_path(*CLIP)), "--audio", str(speech),
         "--out", str(out), "--models", str(tiny_models), "--steps", "2",  # face backend: auto (the default)
         "--device", "cpu", "--no-download"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "TINY RANDOM model set" in run.stderr
    assert "face detector: auto -> offline RetinaFace: buffalo_l is not in" in run.stderr  # no buffalo_l in the set
    assert "--no-download is set" in run.stderr
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        assert v.average_rate == 15
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == round(CLI_SECONDS * 15) == 18
    waveform, sr = read_audio(out)
    assert abs(waveform.shape[-1] / sr - CLI_SECONDS) < 0.1


def test_command_line_reports_missing_models_clearly(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "latentsync", "--video", str(shared_path(*CLIP)), "--audio", str(shared_path(*SPEECH)),
         "--out", str(tmp_path / "o.mp4"), "--models", str(tmp_path), "--no-download", "--face-backend", "offline"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2
    assert "latentsync_unet.pt" in run.stderr and "ByteDance/LatentSync-1.5" in run.stderr
    assert not (tmp_path / "o.mp4").exists()
