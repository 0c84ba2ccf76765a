"""SyncNet-v2 sync scoring (latentsync.eval): parity with the official evaluation, the offset rule and its sign, the
MFCC front end, 25 fps sampling, the face crops and tracks, the safe loader, and the scorer end to end on the real clip
re-muxed with its audio shifted by ±4 frames."""
from __future__ import annotations

import pickle
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import shared_path

from latentsync.eval import (DistanceSweep, MfccFrontEnd, SyncNetLoadError, SyncNetV2, SyncScoreError, distance_rows,
                             load_syncnet_v2, mfcc, score_sync, sweep_figures, to_pcm16)
from latentsync.eval.face_crops import FaceCropTracker, crop_face
from latentsync.eval.frame_rate import FrameRateSampler, num_target_frames, source_index
from latentsync.eval.sweep import medfilt_zero

REPO = Path(__file__).resolve().parents[1]
FIXTURE = ("golden", "golden_syncnet_v2.pt")


# ---------------------------------------------------------------------------------------------------------------
# parity (the command line, as the README shows it, parsed here)


def test_parity_command_on_the_golden_fixture():
    path = shared_path(*FIXTURE)
    run = subprocess.run([sys.executable, "-m", "latentsync.parity", "syncnet_v2", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    results = {line.split()[0]: line for line in lines}
    for name in ("key_manifest.keys", "key_manifest.shapes", "num_parameters", "forward_lip", "forward_aud",
                 "forward_lipfeat", "bn_perturbed.forward_lip", "bn_perturbed.forward_aud", "confidence.dists",
                 "confidence.mean_dists", "confidence.min_dist", "confidence.conf", "confidence.av_offset",
                 "confidence.minidx", "confidence.framewise_conf", "mfcc_front_end.mfcc", "mfcc_front_end.cct",
                 "inputs.mfcc_windows"):
        assert name in results, f"{name} not compared:\n{run.stdout}"
    assert all(line.endswith(" OK") for line in lines), run.stdout
    assert "confidence.av_offset max_abs_err=0 tol=0 OK" in results["confidence.av_offset"]


def test_parity_command_fails_on_a_wrong_fixture(tmp_path):
    from latentsync.parity.syncnet_v2 import check

    fx = torch.load(shared_path(*FIXTURE), weights_only=True)
    fx["confidence"]["av_offset"] = torch.tensor(2)
    fx["outputs"]["forward_aud"] = fx["outputs"]["forward_aud"] + 1e-3
    bad = tmp_path / "bad.pt"
    torch.save(fx, bad)
    failed = {r.name for r in check(bad) if not r.ok}
    assert failed == {"forward_aud", "confidence.av_offset"}


# ---------------------------------------------------------------------------------------------------------------
# the offset rule and its sign


def shifted_features(k: int, n: int = 60, dim: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip features and audio features whose audio is ``k`` frames AHEAD of the video: a[i] = v[i + k] (+ noise),
    the construction of the fixture's case (offset +3)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n + 40, dim, generator=g)
    visual = base[20 : 20 + n]
    audio = base[20 + k : 20 + k + n] + 0.1 * torch.randn(n, dim, generator=g)
    return visual, audio


@pytest.mark.parametrize("k", range(-10, 11))
def test_a_known_shift_is_reported_as_that_offset(k):
    visual, audio = shifted_features(k)
    fig = sweep_figures(distance_rows(visual, audio))
    assert fig.offset == k
    assert fig.confidence > 1.0
    sweep = DistanceSweep()  # the streaming sweep gives the same rows
    for a in range(0, 60, 7):
        sweep.add(visual[a : a + 7], audio[a : a + 7])
    assert torch.equal(sweep.finish(), distance_rows(visual, audio))


def test_sign_convention_is_the_official_one():
    """The fixture's features were built with the audio 3 frames ahead (v[i + 3] ~ a[i]); the official code reports
    +3 for them, and so do we."""
    c = torch.load(shared_path(*FIXTURE), weights_only=True)["confidence"]
    v, a = c["visual_feats"], c["audio_feats"]
    err = {s: float((v[s:] - a[: len(a) - s]).norm(dim=1).mean()) for s in range(1, 6)}
    err.update({-s: float((v[: len(v) - s] - a[s:]).norm(dim=1).mean()) for s in range(1, 6)})
    ahead_by = min(err, key=err.get)
    assert ahead_by == int(c["true_offset_by_construction"]) == 3
    assert sweep_figures(distance_rows(v, a)).offset == ahead_by == int(c["av_offset"])
    assert shifted_features(3)[1][0].sub(shifted_features(3)[0][3]).abs().max() < 1  # same construction as ours


def test_medfilt_zero_matches_scipy():
    from scipy.signal import medfilt

    x = np.random.default_rng(0).normal(size=37)
    for k in (3, 9, 13):
        np.testing.assert_array_equal(medfilt_zero(x, k), medfilt(x, k))


# ---------------------------------------------------------------------------------------------------------------
# audio front end


def test_mfcc_in_pieces_equals_the_whole_and_any_input_rate_works():
    g = np.random.default_rng(1)
    pcm = (g.normal(size=16000 * 3) * 3000).astype(np.int16)
    whole = mfcc(pcm)
    front = MfccFrontEnd(pcm)
    assert whole.shape == (13, front.num_frames) == (13, 1 + -(-(48000 - 400) // 160))
    for a, b in ((0, 7), (7, 100), (100, front.num_frames), (57, 57)):
        np.testing.assert_allclose(front.frames(a, b), whole[:, a:b], rtol=0, atol=1e-9)
    stereo_44k = torch.from_numpy(g.normal(size=(2, 44100)).astype(np.float32) * 0.1)
    pcm44 = to_pcm16(stereo_44k, 44100)
    assert pcm44.dtype == np.int16 and pcm44.shape == (16000,)
    assert to_pcm16(torch.full((100,), 2.0), 16000).max() == 32767  # clipped like ffmpeg's s16 conversion


# ---------------------------------------------------------------------------------------------------------------
# 25 fps sampling


def test_25fps_sampling_follows_ffmpegs_fps_filter():
    assert [source_index(k, Fraction(15)) for k in range(8)] == [0, 0, 1, 2, 2, 3, 3, 4]
    assert [source_index(k, Fraction(25)) for k in range(5)] == [0, 1, 2, 3, 4]
    assert [source_index(k, Fraction(50)) for k in range(4)] == [0, 2, 4, 6]  # timestamps round half up
    assert num_target_frames(45, Fraction(15)) == 75
    assert num_target_frames(300, Fraction(30000, 1001)) == round(300 * 25 * 1001 / 30000)
    for fps in (Fraction(15), Fraction(30000, 1001), Fraction(60), Fraction(24)):
        whole = FrameRateSampler(fps).extend(97)
        pieces, sampler = [], FrameRateSampler(fps)
        for n in (1, 16, 7, 40, 33):
            pieces += sampler.extend(n)
        assert pieces == whole and len(whole) == num_target_frames(97, fps)
        assert all(j == source_index(k, fps) for k, j in whole)


# ---------------------------------------------------------------------------------------------------------------
# face crops and tracks


def padded_reference_crop(frame: np.ndarray, s: float, x: float, y: float, cs: float = 0.4) -> np.ndarray:
    """The crop written the way the official crop_video does it: pad the whole frame, slice, resize."""
    import cv2

    bsi = int(s * (1 + 2 * cs))
    padded = np.pad(frame, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=(110, 110))
    my, mx = y + bsi, x + bsi
    face = padded[int(my - s) : int(my + s * (1 + 2 * cs)), int(mx - s * (1 + cs)) : int(mx + s * (1 + cs))]
    return cv2.resize(face, (224, 224))


@pytest.mark.parametrize("s, x, y", [(60.3, 170.2, 160.7), (80.0, 20.5, 30.2), (90.7, 330.1, 335.9), (40, 175, 175)])
def test_crop_equals_the_padded_frame_slice(s, x, y):
    frame = np.random.default_rng(2).integers(0, 256, (350, 350, 3), dtype=np.uint8)
    np.testing.assert_array_equal(crop_face(frame, s, x, y), padded_reference_crop(frame, s, x, y))


def test_tracks_bridge_short_gaps_split_long_ones_and_smooth_like_medfilt():
    rng = np.random.default_rng(3)
    n = 80
    boxes = [np.array([100.0, 90.0, 200.0, 215.0]) + rng.normal(0, 4, 4) + [i, 0, i, 0] for i in range(n)]
    missing = set(range(10, 14)) | set(range(40, 67))  # 4 frames (bridged), 27 frames (> 25: the track ends)
    frames = [rng.integers(0, 256, (300, 400, 3), dtype=np.uint8) for _ in range(n)]
    tracker, events = FaceCropTracker(), []
    for k in range(n):
        events += tracker.push(k, frames[k], None if k in missing else boxes[k])
    events += tracker.finish()
    ends = [e for e in events if e.is_end]
    crops = [e for e in events if not e.is_end]
    assert [(e.track, e.frame) for e in ends] == [(0, 39), (1, 79)]
    assert [e.frame for e in crops] == list(range(40)) + list(range(67, 80))
    # track 0: gap boxes interpolated, then s/x/y median-filtered over 13 frames with zero padding (scipy medfilt)
    track = [b.copy() for b in boxes[:40]]
    for k in range(10, 14):
        t = (k - 9) / (14 - 9)
        track[k] = boxes[9] + t * (boxes[14] - boxes[9])
    geo = np.array([[max(b[3] - b[1], b[2] - b[0]) / 2, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in track])
    smooth = np.stack([medfilt_zero(geo[:, c], 13) for c in range(3)], 1)
    for e in crops[:40]:
        np.testing.assert_array_equal(e.crop, crop_face(frames[e.frame], *smooth[e.frame]))


# ---------------------------------------------------------------------------------------------------------------
# the safe loader


def test_loader_is_strict_and_safe(tmp_path):
    good = SyncNetV2().state_dict()
    no_counters = {k: v for k, v in good.items() if not k.endswith("num_batches_tracked")}
    torch.save({f"module.{k}": v.half() if v.is_floating_point() else v for k, v in no_counters.items()},
               tmp_path / "old.model")
    net = load_syncnet_v2(tmp_path / "old.model")  # old-PyTorch files lack the counters; DDP prefix; fp16
    assert not net.training and next(net.parameters()).dtype == torch.float32

    torch.save({**good, "extra.weight": torch.zeros(1)}, tmp_path / "extra.model")
    with pytest.raises(SyncNetLoadError, match="unexpected keys 1: extra.weight"):
        load_syncnet_v2(tmp_path / "extra.model")
    torch.save({**good, "netfcaud.3.weight": torch.zeros(512, 512)}, tmp_path / "shape.model")
    with pytest.raises(SyncNetLoadError, match=r"shape mismatches 1: netfcaud.3.weight \(file \(512, 512\), model"):
        load_syncnet_v2(tmp_path / "shape.model")
    del good["netcnnlip.0.weight"]
    torch.save(good, tmp_path / "missing.model")
    with pytest.raises(SyncNetLoadError, match="missing keys 1: netcnnlip.0.weight"):
        load_syncnet_v2(tmp_path / "missing.model")
    torch.save(SyncNetV2(), tmp_path / "pickled_module.model")  # a whole pickled model: refused, explained
    with pytest.raises(SyncNetLoadError, match="weights_only=True.*plain state dict"):
        load_syncnet_v2(tmp_path / "pickled_module.model")
    (tmp_path / "junk.model").write_bytes(b"not a torch file at all")
    with pytest.raises(SyncNetLoadError):
        load_syncnet_v2(tmp_path / "junk.model")
    with pytest.raises(FileNotFoundError):
        load_syncnet_v2(tmp_path / "absent.model")


def test_pickle_error_is_not_swallowed_for_other_objects(tmp_path):
    path = tmp_path / "list.model"
    with open(path, "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(SyncNetLoadError):
        load_syncnet_v2(path)
