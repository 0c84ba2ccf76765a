"""SyncNet-v2 sync scoring (latentsync.eval): parity with the official evaluation, the offset rule and its sign, the
MFCC front end, 25 fps sampling, the face crops and tracks, the safe loader, and the scorer end to end on the real clip
re-muxed with its audio shifted by ±4 frames."""
from __future__ import annotations

import json
import math
import pickle
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

FIXTURE = ("golden", "golden_syncnet_v2.pt")


# ---------------------------------------------------------------------------------------------------------------
# parity (the command line, as the README shows it, parsed here)


def test_parity_command_on_the_golden_fixture(capsys):
    from latentsync.parity.__main__ import main  # what `python -m latentsync.parity syncnet_v2 FILE` runs

    rc = main(["syncnet_v2", str(shared_path(*FIXTURE))])
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = out.strip().splitlines()
    results = {line.split()[0]: line for line in lines}
    for name in ("key_manifest.keys", "key_manifest.shapes", "num_parameters", "forward_lip", "forward_aud",
                 "forward_lipfeat", "bn_perturbed.forward_lip", "bn_perturbed.forward_aud", "confidence.dists",
                 "confidence.mean_dists", "confidence.min_dist", "confidence.conf", "confidence.av_offset",
                 "confidence.minidx", "confidence.framewise_conf", "mfcc_front_end.mfcc", "mfcc_front_end.cct",
                 "inputs.mfcc_windows"):
        assert name in results, f"{name} not compared:\n{out}"
    assert all(line.endswith(" OK") for line in lines), out
    assert "confidence.av_offset max_abs_err=0 tol=0 OK" in results["confidence.av_offset"]


def test_parity_command_fails_on_a_wrong_fixture(tmp_path, capsys):
    from latentsync.parity.__main__ import main

    fx = torch.load(shared_path(*FIXTURE), weights_only=True)
    for part in (fx["inputs"], fx["outputs"], fx["bn_perturbed"]):  # one sample: shapes are read from the file
        for key in ("visual", "mfcc", "forward_lip", "forward_aud", "forward_lipfeat"):
            if key in part:
                part[key] = part[key][:1]
    fx["inputs"]["mfcc_vframes"] = fx["inputs"]["mfcc_vframes"][:1]
    fx["confidence"]["av_offset"] = torch.tensor(2)
    fx["outputs"]["forward_aud"] = fx["outputs"]["forward_aud"] + 1e-3
    bad = tmp_path / "bad.pt"
    torch.save(fx, bad)
    assert main(["syncnet_v2", str(bad)]) == 1
    failed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.endswith(" FAIL")]
    assert failed == ["forward_aud", "confidence.av_offset"]


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


def test_medfilt_pads_with_zeros_like_scipy():
    # padded [0, 5, 1, 4, 2, 3, 0] -> medians of 3: 1, 4, 2, 3, 2 (scipy.signal.medfilt gives the same)
    np.testing.assert_array_equal(medfilt_zero(np.array([5.0, 1, 4, 2, 3]), 3), [1, 4, 2, 3, 2])
    np.testing.assert_array_equal(medfilt_zero(np.array([7.0, 7, 7]), 9), [0, 0, 0])  # zeros outnumber the values


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


# ---------------------------------------------------------------------------------------------------------------
# end to end on the real clip, re-muxed with its audio shifted (PyAV, at test time)

CLIP = ("media", "clip_speaking_woman_frontal_350px_15fps.mp4")
SPEECH = ("media", "speech_cmu_arctic_a0009_16k.wav")
SHIFT = 4  # frames at 25 fps
RATE = 16000


def remux(video: Path, waveform: np.ndarray, out: Path) -> Path:
    """The video's own H.264 packets copied unchanged + ``waveform`` (16 kHz mono float) as a PCM track, in .mkv."""
    pcm = np.clip(np.rint(waveform * 32768), -32768, 32767).astype(np.int16)
    with av.open(str(video)) as src, av.open(str(out), "w", format="matroska") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        aout = dst.add_stream("pcm_s16le", rate=RATE, layout="mono")
        for packet in src.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            dst.mux(packet)
        frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, 0
        dst.mux(aout.encode(frame))
        dst.mux(aout.encode(None))
    return out


def shifted(waveform: np.ndarray, frames: int) -> np.ndarray:
    """The audio moved ``frames`` frames (25 fps) LATER (> 0: delayed, silence first) or earlier (< 0)."""
    n = abs(frames) * RATE // 25
    if frames > 0:
        return np.concatenate([np.zeros(n, waveform.dtype), waveform])
    return waveform[n:]


def shifted_set(folder: Path, video: Path, waveform: np.ndarray) -> dict[int, Path]:
    """{0: in sync, +4: audio delayed by 4 frames, -4: audio 4 frames early} as re-muxed files."""
    return {d: remux(video, shifted(waveform, d), folder / f"shift_{d:+d}.mkv") for d in (0, SHIFT, -SHIFT)}


@pytest.fixture(scope="module")
def detector():
    from latentsync.face.detector import create_face_detector

    return create_face_detector("offline")


@pytest.fixture(scope="module")
def random_syncnet_file(tmp_path_factory) -> Path:
    """A models root holding only a random-weight SyncNet-v2 at its real size (as make_tiny writes it)."""
    from latentsync import hub
    from latentsync.tools.make_tiny import write_syncnet_v2

    root = tmp_path_factory.mktemp("syncnet_models")
    path = root / hub.SYNCNET_V2_FILE.relpath
    path.parent.mkdir(parents=True)
    write_syncnet_v2(path, torch.Generator().manual_seed(5))
    return root


class SignalProbe(torch.nn.Module):
    """Stands in for SyncNet with features anyone can predict: a lip window's embedding is its 5 per-frame mean
    brightnesses, an audio window's is its 5 per-frame log energies (MFCC c0, 4 steps per frame), each centred and
    normalised. On a video whose brightness and loudness follow the same random sequence, the distances are smallest
    where lips and audio line up — so the scorer's timing (25 fps picking, crops, MFCC windows, sweep, sign) decides
    the offset."""

    @staticmethod
    def _unit(x: torch.Tensor, floor: float) -> torch.Tensor:
        x = x - x.mean(dim=1, keepdim=True)
        return x / x.norm(dim=1, keepdim=True).clamp_min(floor)

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:  # (N, 3, 5, 224, 224)
        return self._unit(frames.mean(dim=(1, 3, 4)), 5.0)

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:  # (N, 1, 13, 20)
        return self._unit(mfcc[:, 0, 0, :].reshape(-1, 5, 4).mean(dim=2), 0.5)


def test_offset_follows_a_shift_of_the_audio_in_real_files(tmp_path, detector):
    """The real clip, its brightness modulated by a random on/off sequence (one value per source frame, 15 fps), and
    a noise track loud/quiet with the same sequence: in sync the offset is 0; with the audio re-muxed 4 frames later
    it is -4, 4 frames earlier +4 (the official sign: > 0 = audio ahead)."""
    from latentsync.eval.files import score_file
    from latentsync.video_io import read_video, write_video

    clip = read_video(shared_path(*CLIP))
    clip.frames = clip.frames[:30]  # 2 s: 50 frames at 25 fps, 45 windows
    on = np.random.default_rng(11).integers(0, 2, clip.frames.shape[0])
    frames = np.clip(clip.frames.numpy().astype(np.int16) + np.where(on, 45, -45)[:, None, None, None], 0, 255)
    video = write_video(tmp_path / "modulated.mp4", frames.astype(np.uint8), clip.fps)
    per_source = RATE / float(clip.fps)
    envelope = np.where(on[(np.arange(int(len(on) * per_source)) // per_source).astype(int)], 0.5, 0.02)
    noise = np.random.default_rng(12).uniform(-1, 1, envelope.shape[0]) * envelope
    offsets = {}
    for d, path in shifted_set(tmp_path, video, noise).items():
        score = score_file(path, syncnet=SignalProbe(), detector=detector)
        offsets[d] = score.offset_frames
        assert score.confidence > 0.3, (d, score.confidence)
    assert offsets == {0: 0, SHIFT: -SHIFT, -SHIFT: SHIFT}


def test_real_clip_with_its_audio_and_shifts_gives_well_formed_figures(tmp_path, detector, random_syncnet_file):
    """Tiny-cost version of the real thing: SyncNet-v2 at its real size (random weights) on the real clip with the
    real speech (first 0.4 s) re-muxed in sync and shifted by ±4 frames (5, 9 and 1 windows)."""
    from latentsync import hub
    from latentsync.eval.files import score_file
    from latentsync.video_io import read_audio

    net = load_syncnet_v2(random_syncnet_file / hub.SYNCNET_V2_FILE.relpath)
    wav, rate = read_audio(shared_path(*SPEECH))
    assert rate == RATE
    speech = wav[0, : int(0.4 * RATE)].numpy()
    scores = {}
    for d, path in shifted_set(tmp_path, shared_path(*CLIP), speech).items():
        calls = []
        score = score_file(path, syncnet=net, detector=detector, batch_size=8,
                           progress=lambda i, n: calls.append((i, n)))
        frames = (speech.shape[0] + max(d, 0) * RATE // 25 - max(-d, 0) * RATE // 25) // 640
        assert score.num_frames == frames and score.frames_with_face == frames
        assert score.num_frames_scored == frames - 5 and score.tracks == [
            {"start_frame": 0, "num_frames": frames, "num_windows": frames - 5}]
        assert math.isfinite(score.confidence) and score.confidence >= 0 and score.distance > 0
        assert -15 <= score.offset_frames <= 15 and score.offset_seconds == score.offset_frames / 25
        assert score.mean_dists.shape == (31,) and float(score.mean_dists.min()) == pytest.approx(score.distance)
        assert score.per_frame.shape == (frames,) and torch.isfinite(score.per_frame[: frames - 5]).all()
        assert torch.isnan(score.per_frame[frames - 5 :]).all()
        json.loads(json.dumps(score.to_dict()))
        assert calls[-1] == (frames, frames) and [i for i, _ in calls] == sorted(i for i, _ in calls)
        scores[d] = score
    # the audio changed, so did the distances (the scorer really reads the re-muxed track)
    assert not torch.allclose(scores[0].mean_dists, scores[SHIFT].mean_dists)
    assert not torch.allclose(scores[0].mean_dists, scores[-SHIFT].mean_dists)


def test_streamed_chunks_give_the_same_score_as_the_whole_video(detector):
    from latentsync.video_io import read_video

    clip = read_video(shared_path(*CLIP))
    frames = clip.frames[:20]
    wav = torch.from_numpy(np.random.default_rng(4).normal(size=RATE).astype(np.float32) * 0.1)
    probe = SignalProbe()
    whole = score_sync(frames, clip.fps, wav, RATE, syncnet=probe, detector=detector)
    chunks = score_sync((frames[i : i + 3] for i in range(0, 20, 3)), clip.fps, wav, RATE, syncnet=probe,
                        detector=detector, batch_size=4)
    assert whole.num_frames == chunks.num_frames == 25  # 20 frames at 15 fps -> 33 at 25 fps, cut to 1 s of audio
    assert torch.equal(whole.mean_dists, chunks.mean_dists) and whole.offset_frames == chunks.offset_frames
    assert torch.equal(whole.per_frame.isnan(), chunks.per_frame.isnan())


def test_unscorable_inputs_raise_with_the_reason(detector):
    from latentsync.video_io import read_video

    clip = read_video(shared_path(*CLIP))
    wav = torch.zeros(RATE)
    with pytest.raises(SyncScoreError, match="no face found in any of the 25 frames") as e:
        score_sync(torch.zeros(15, 64, 64, 3, dtype=torch.uint8), 15, wav, RATE, syncnet=SignalProbe(),
                   detector=detector)
    assert e.value.reason == "no_face"
    with pytest.raises(SyncScoreError, match="only 5 frame") as e:
        score_sync(clip.frames[:3], clip.fps, wav, RATE, syncnet=SignalProbe(), detector=detector)
    assert e.value.reason == "too_short"
    six = score_sync(clip.frames[:6], 25, wav, RATE, syncnet=SignalProbe(), detector=detector)  # the shortest track
    assert six.num_frames == 6 and six.num_frames_scored == 1 and six.tracks[0]["num_windows"] == 1
    with pytest.raises(SyncScoreError, match="the audio is 0.200 s long") as e:
        score_sync(clip.frames, clip.fps, wav[:3200], RATE, syncnet=SignalProbe(), detector=detector)
    assert e.value.reason == "too_short"


# ---------------------------------------------------------------------------------------------------------------
# the command line


def test_command_line_json_and_plot(tmp_path, capsys, random_syncnet_file):
    from PIL import Image

    from latentsync.eval.__main__ import main  # what `python -m latentsync.eval sync ...` runs
    from latentsync.video_io import read_audio

    wav, _ = read_audio(shared_path(*SPEECH))
    video = remux(shared_path(*CLIP), wav[0, : int(0.4 * RATE)].numpy(), tmp_path / "clip with speech.mkv")
    plot = tmp_path / "sync.png"
    rc = main(["sync", str(video), "--models", str(random_syncnet_file), "--face-backend", "offline",
               "--no-download", "--json", "--plot", str(plot)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    out = json.loads(printed.out)
    assert out["video"] == str(video) and out["num_frames"] == 10 and out["num_frames_scored"] == 5
    assert out["offset_seconds"] == out["offset_frames"] / 25 and len(out["mean_dists"]) == 31
    assert out["per_frame"][-5:] == [None] * 5 and all(isinstance(v, float) for v in out["per_frame"][:5])
    with Image.open(plot) as im:
        assert im.size == (960, 620) and im.mode == "RGB"
        assert np.unique(np.asarray(im.convert("L"))).size > 20  # a drawn picture, not a blank page


def run_cli(capsys, *args: str) -> tuple[int, str]:
    from latentsync.eval.__main__ import main

    rc = main(["sync", *map(str, args)])
    return rc, capsys.readouterr().err


def test_command_line_errors_exit_2_and_name_the_file(tmp_path, capsys, random_syncnet_file):
    from latentsync.video_io import read_video, write_video

    models = ("--models", random_syncnet_file, "--face-backend", "offline", "--no-download", "--quiet")
    clip_path = shared_path(*CLIP)
    speech = shared_path(*SPEECH)
    black = remux(write_video(tmp_path / "black.mp4", torch.zeros(15, 64, 64, 3, dtype=torch.uint8), 15),
                  np.zeros(RATE, np.float32), tmp_path / "black.mkv")
    short = write_video(tmp_path / "short.mp4", read_video(clip_path).frames[:3], 15)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    cases = {
        "no face": ((black,), black, "no face found in any of the 25 frames"),
        "no audio": ((clip_path,), clip_path, "has no audio track (give the speech with --audio)"),
        "too short": ((short, "--audio", speech), short, "only 5 frame(s) at 25 fps"),
        "unreadable": ((junk, "--audio", speech), junk, "cannot read it"),
        "missing": ((tmp_path / "absent.mp4",), tmp_path / "absent.mp4", "no such file"),
    }
    for name, (args, named, reason) in cases.items():
        rc, err = run_cli(capsys, *args, *models)
        assert rc == 2, (name, err)
        assert f"error: {named}: " in err and reason in err, (name, err)
    rc, err = run_cli(capsys, short, "--audio", speech, "--models", tmp_path / "nowhere", "--no-download", "--quiet")
    assert rc == 2 and "SyncNet-v2 (sync scoring) not found" in err and "ByteDance/LatentSync-1.5" in err


def test_syncnet_v2_download_lands_where_the_loaders_look(tmp_path, monkeypatch):
    from test_hub import serve  # the local Hugging-Face-like server of the hub tests (127.0.0.1 only)

    from latentsync import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    payload = b"syncnet weights" * 100
    with serve({"/ByteDance/LatentSync-1.5/resolve/main/auxiliary/syncnet_v2.model": payload}) as base:
        path = hub.locate_syncnet_v2(tmp_path / "models", endpoint=base)
    assert path == tmp_path / "models" / "latentsync" / "auxiliary" / "syncnet_v2.model"
    assert path.read_bytes() == payload
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / hub.TINY_MARKER).write_text("random\n")
    with pytest.raises(hub.ModelNotFoundError, match="tiny random-weight set"):
        hub.locate_syncnet_v2(tiny)
