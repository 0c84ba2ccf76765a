"""python -m training.prepare_data on a small real set: 25 fps / 16 kHz aligned clips at the chosen size, the cut
split, broken and faceless inputs reported, finished inputs skipped on a re-run (which runs the SyncNet-v2 filter
on the one new input)."""
from __future__ import annotations

import json
import shutil
import sys
from fractions import Fraction

import av
import pytest

from training_tests.helpers import PREPARE_ARGS, run_module
from training.prepare.decode import shift_audio

pytestmark = pytest.mark.slow


def entry(report: dict, name: str) -> dict:
    return next(e for e in report["inputs"] if e["input"].endswith(name))


def test_clips_are_aligned_25fps_16k_at_the_chosen_resolution(prepared):
    assert len(prepared["clips"]) == 4
    for clip in prepared["clips"]:
        with av.open(str(prepared["dir"] / clip)) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert Fraction(v.average_rate) == 25
            assert (v.codec_context.width, v.codec_context.height) == (128, 128)
            assert a.codec_context.sample_rate == 16000 and a.codec_context.layout.nb_channels == 1
            assert sum(1 for _ in c.decode(video=0)) == 50
    report = prepared["report"]
    assert report["settings"]["resolution"] == 128
    assert entry(report, "woman_15fps.mp4")["audio_rate"] == 44100  # re-sampled from 44.1 kHz stereo
    assert entry(report, "woman_15fps.mp4")["audio_channels"] == 2
    for name, fps in (("woman_15fps.mp4", 15), ("woman_30fps.mp4", 30)):
        e = entry(report, name)
        assert e["fps"] == fps and e["frames_25fps"] == 50 and e["status"] == "done"


def test_the_hard_cut_splits_the_video(prepared):
    e = entry(prepared["report"], "cut.mp4")
    assert e["scene_cuts"] == [50]
    assert [(s["start_s"], s["end_s"], s["kept"]) for s in e["segments"]] == [(0.0, 2.0, True), (2.0, 4.0, True)]
    assert {s["clip"] for s in e["segments"]} <= set(prepared["clips"])


def test_broken_and_faceless_inputs_are_reported_and_skipped(prepared):
    report = prepared["report"]
    broken = entry(report, "broken.mp4")
    assert broken["status"] == "broken" and "cannot open" in broken["error"]
    noface = entry(report, "noface.mp4")
    assert noface["status"] == "no_usable_segment"
    assert [s["reason"] for s in noface["segments"]] == ["no face in 50 of 50 frames"]
    assert report["summary"]["dropped"] == {"no face in N of N frames": 1}
    summary = report["summary"]
    assert summary == {**summary, "inputs": 5, "finished": 5, "broken": 1, "without_usable_segment": 1, "clips": 4}
    assert "5 inputs, 0 already done, 5 to process" in prepared["stdout"]


def test_two_processes_do_each_input_once_into_one_report(prepared):
    inputs = [e["input"] for e in prepared["report"]["inputs"]]
    assert len(inputs) == len(set(inputs)) == 5
    for name in inputs:  # each claimed and done by exactly one of the two processes
        assert prepared["stderr"].count(f": {name} (process ") == 1, prepared["stderr"][-3000:]
    assert "by 2 processes" in prepared["stdout"]
    state = prepared["dir"] / ".prepare_state"
    assert list((state / "claims").iterdir()) == [] and not list(state.glob("*.failed"))


def test_second_run_skips_finished_inputs_and_sync_filters_the_new_one(prepared, training_models):
    folder, out = prepared["input_dir"], prepared["dir"]
    before = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    late = folder / "late.mp4"
    shutil.copy(folder / "woman_30fps.mp4", late)
    try:
        proc = run_module([sys.executable, "-m", "training.prepare_data", "--input", str(folder), "--output", str(out),
                           "--models", str(training_models), "--min-confidence", "-1000", "--max-offset", "15",
                           *PREPARE_ARGS])
    finally:
        late.unlink()
    assert "6 inputs, 5 already done, 1 to process" in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir() if p.name in before} == before
    report = json.loads((out / "report.json").read_text())
    new = entry(report, "late.mp4")["segments"]
    assert len(new) == 1 and new[0]["kept"]
    assert isinstance(new[0]["confidence"], float) and -15 <= new[0]["offset_frames"] <= 15
    assert len((out / "fileslist.txt").read_text().split()) == 5


def test_offset_correction_shifts_the_audio_by_whole_frames():
    import torch

    audio = torch.arange(3200, dtype=torch.float32)
    later = shift_audio(audio, 2)  # audio ahead by 2 frames: delay it by 2 x 640 samples
    assert torch.equal(later[1280:], audio[:-1280]) and not later[:1280].any()
    earlier = shift_audio(audio, -1)
    assert torch.equal(earlier[:-640], audio[640:]) and not earlier[-640:].any()
