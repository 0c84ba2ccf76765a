"""Property-based tests (hypothesis) of the windowing and alignment math.

- Every output frame, for any frame rate (constant or variable) and any video / audio length, in every length mode,
  maps to a valid source frame and to valid audio windows centred on its own time, and the output has the length
  and the audio each mode documents.
- Aligning a face and pasting the unchanged crop back returns the frame within +-2 levels, for random face
  positions, sizes and angles.
"""
from __future__ import annotations

import math
from fractions import Fraction

import cv2
import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from latentsync.audio.whisper_encoder import HOP_LENGTH, TOKENS_PER_WINDOW, WINDOW_MEL_FRAMES
from latentsync.audio.windows import num_frames_for_duration, window_indices, window_indices_at
from latentsync.face.align import FaceAligner
from latentsync.pipeline import pingpong_indices
from latentsync.timeline import AUDIO_DRIVEN, LENGTH_MODES, SourceTiming, plan_output, source_order

COMMON_RATES = [Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
                Fraction(50), Fraction(60000, 1001), Fraction(60), Fraction(15), Fraction(12), Fraction(1)]
rates = st.one_of(st.sampled_from(COMMON_RATES),
                  st.builds(Fraction, st.integers(1, 240_000), st.integers(1, 1001)).filter(lambda r: 0.5 <= r <= 240))
sample_rates = st.sampled_from([8000, 11025, 16000, 22050, 32000, 44100, 48000])


def num_tokens(samples_16k: int) -> int:
    """Whisper tokens of a clip (as `AudioFeatureStream`: 2 per mel frame pair, per 30-s window)."""
    mel = max(samples_16k, 3 * HOP_LENGTH) // HOP_LENGTH
    windows = -(-mel // WINDOW_MEL_FRAMES)
    return (windows - 1) * TOKENS_PER_WINDOW + (mel - (windows - 1) * WINDOW_MEL_FRAMES) // 2


def check_plan(plan, timing, audio_s: Fraction, sample_rate: int) -> None:
    n = len(timing)
    m = len(plan)
    assert m >= 1
    assert ((plan.source >= 0) & (plan.source < n)).all()
    assert plan.starts[0] == 0 and (np.diff(plan.starts) > 0).all() and plan.end > plan.starts[-1]
    durations = timing.durations[plan.source]
    assert (np.diff(np.append(plan.starts, plan.end)) == durations).all()  # each frame lasts as its source frame
    limit2 = 2 * audio_s * plan.base  # twice the audio's end, in ticks
    middles2 = 2 * plan.starts + durations
    if plan.mode in AUDIO_DRIVEN:
        assert m == 1 or (middles2 <= limit2).all()  # every frame's middle lies within the audio ...
        following = source_order(plan.mode, n, m + 1)[-1]
        assert 2 * plan.end + timing.durations[following] > limit2  # ... and the next frame's would not
    elif plan.mode == "cut_off":
        assert m == min(n, max(1, int(np.count_nonzero(2 * timing.starts + timing.durations <= limit2))))
        assert plan.source.tolist() == list(range(m))
    else:
        assert m == n and plan.source.tolist() == list(range(n))
    # the output audio: the user's, cut to the video; padded with silence only in silence mode
    samples = plan.audio_samples(sample_rate)
    video_samples = round(plan.duration * sample_rate)
    audio_samples = round(audio_s * sample_rate)
    assert samples == (video_samples if plan.mode == "silence" else min(video_samples, audio_samples))
    # every frame's audio window: valid tokens, centred on the frame's own start time
    wave_16k = round((plan.duration if plan.mode == "silence" else audio_s) * 16000)
    tokens = num_tokens(max(wave_16k, 1))
    idx = window_indices_at(tokens, plan.starts, plan.base)
    assert idx.shape == (m, 10) and int(idx.min()) >= 0 and int(idx.max()) <= tokens - 1
    centres = [math.floor(Fraction(int(t), plan.base) * 50) for t in plan.starts]
    assert idx[:, 4].tolist() == [min(max(c, 0), tokens - 1) for c in centres]


@settings(max_examples=150, deadline=None)
@given(fps=rates, n=st.integers(1, 120), seconds=st.fractions(Fraction(1, 1000), Fraction(40)),
       sample_rate=sample_rates, mode=st.sampled_from(LENGTH_MODES))
def test_constant_rate_plans(fps, n, seconds, sample_rate, mode):
    samples = max(1, round(seconds * sample_rate))
    audio_s = Fraction(samples, sample_rate)
    timing = SourceTiming.constant_rate(n, fps)
    plan = plan_output(timing, audio_s, mode)
    check_plan(plan, timing, audio_s, sample_rate)
    want = max(1, num_frames_for_duration(samples, sample_rate, fps))  # ComfyUI / README rule: round(D * fps)
    expected = {"pingpong": want, "loop": want, "freeze": want, "cut_off": min(want, n), "silence": n}[mode]
    assert len(plan) == expected
    j = np.arange(len(plan))
    order = {"pingpong": pingpong_indices(n, len(plan)).numpy(), "loop": j % n, "freeze": np.minimum(j, n - 1),
             "cut_off": j, "silence": j}[mode]
    assert plan.source.tolist() == order.tolist()
    # at a constant rate the windows are exactly the frame-index ones
    tokens = num_tokens(round(audio_s * 16000))
    assert torch.equal(window_indices_at(tokens, plan.starts, plan.base), window_indices(tokens, fps, len(plan)))


@settings(max_examples=120, deadline=None)
@given(durations=st.lists(st.integers(1, 250), min_size=1, max_size=60), seconds=st.fractions(Fraction(1, 100), 30),
       mode=st.sampled_from(LENGTH_MODES), sample_rate=sample_rates)
def test_variable_rate_plans(durations, seconds, mode, sample_rate):
    pts = np.concatenate([[0], np.cumsum(durations)[:-1]])
    nominal = Fraction(len(durations) * 1000, sum(durations)).limit_denominator(1001)
    timing = SourceTiming.from_timestamps(pts, Fraction(1, 1000), durations[-1], nominal)
    audio_s = Fraction(max(1, round(seconds * sample_rate)), sample_rate)
    plan = plan_output(timing, audio_s, mode)
    check_plan(plan, timing, audio_s, sample_rate)
    if not timing.constant:
        assert [int(t) for t in timing.starts] == pts.tolist()


# ---------------------------------------------------------------------------------------------------------------
# align -> restore of an unchanged crop


def smooth_frame(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth, skin-like test image (low-frequency colour waves): resampling keeps it within a level or two."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
        out[..., c] = 128 + 50 * np.sin(2 * np.pi * (fx * x / w + fy * y / h) + ph)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(magnification=st.floats(1.0, 2.4), angle=st.floats(-35, 35), fx=st.floats(0.25, 0.75),
       fy=st.floats(0.25, 0.75), seed=st.integers(0, 1000), resolution=st.sampled_from([256, 512]))
def test_align_then_restore_an_unchanged_crop_returns_the_frame(magnification, angle, fx, fy, seed, resolution):
    """Faces magnified at most 2.4x into the aligned crop (at least 88 px wide in the frame for 1.5, 175 px for
    1.6). Smaller faces keep their interior but the official feathered edge darkens by up to ~13 levels."""
    aligner = FaceAligner(resolution)
    h, w = 1080, 1440
    frame = smooth_frame(h, w, seed)
    crop_w, crop_h = aligner.crop_wh
    k = 1.0 / magnification  # frame pixels per crop pixel
    # alignment points of a face rotated by `angle`, centred at (fx, fy), whose crop is magnified as asked
    template = aligner.template - aligner.template.mean(0)
    theta = np.deg2rad(angle)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    points = (template @ rot.T) * k + np.array([fx * w, fy * h])
    reach = np.hypot(crop_w, crop_h) * k  # the whole crop footprint must lie inside the frame
    assume(reach < fx * w < w - reach and reach < fy * h < h - reach)
    frames = torch.from_numpy(frame)[None]
    aligned = aligner.align(frames, points[None], smooth=False)
    faces = aligned.faces.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    restored = aligner.restore(frames, faces, aligned.matrices)
    diff = (restored.int() - frames.int()).abs()[0].amax(-1).numpy()
    # the crop's footprint in the frame: the 2-pixel ring on its border is where the official feathering may
    # blend a level or two towards black; everywhere else the frame comes back within 2 levels
    inv = np.linalg.inv(np.vstack([aligned.matrices[0].double().numpy(), [0, 0, 1]]))
    corners = np.array([[0, 0, 1], [crop_w, 0, 1], [crop_w, crop_h, 1], [0, crop_h, 1]], dtype=np.float64) @ inv.T
    footprint = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(footprint, np.round(corners[:, :2]).astype(np.int32), 1)
    ring = cv2.dilate(footprint, np.ones((5, 5), np.uint8)) > cv2.erode(footprint, np.ones((5, 5), np.uint8))
    assert int(diff[~ring].max()) <= 2, (int(diff[~ring].max()), magnification, angle)
    outside = cv2.dilate(footprint, np.ones((5, 5), np.uint8)) == 0
    assert int(diff[outside].max()) == 0  # outside the face region: bit-identical
