"""Streaming keeps memory flat: a 60-second video through the command line peaks no higher than a 24-second one, up
to a bound derived from the window size (not the length). Cheap on purpose: 2 frames per second of 960x540, tiny
models, 1 step, no guidance. The 24-second reference is long enough for everything of fixed size to be full (the
encoder's look-ahead, the frame cache); holding the video whole, as before issue 10, would add at least
2 x 72 x 1.5 MB (the extra decoded frames and output frames): well above the bound. The two runs are separate
processes run side by side: each peak is that process's own ru_maxrss, which the other does not change.

The same check through the VIDEO node in a real ComfyUI is in integration/test_streaming_server.py.
"""
from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import comfy_session

from bench.memory import make_speech, make_video, peak_rss
from conftest import REPO_ROOT
from media_factory import LONG_FPS, LONG_FRAME_BYTES, LONG_HEIGHT, LONG_REFERENCE_S, LONG_WIDTH, window_bound

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    work = tmp_path_factory.mktemp("long")
    out = {}
    for seconds in (LONG_REFERENCE_S, 60):
        video, audio = work / f"v{seconds}.mp4", work / f"a{seconds}.wav"
        make_video(video, seconds, LONG_FPS, LONG_WIDTH, LONG_HEIGHT)
        make_speech(audio, seconds)
        out[seconds] = (video, audio)
    return out


def cli_peak(models: Path, video: Path, audio: Path, out: Path) -> int:
    cmd = [sys.executable, "-m", "latentsync", "--video", str(video), "--audio", str(audio), "--out", str(out),
           "--models", str(models), "--face-backend", "offline", "--steps", "1", "--guidance", "1.0",
           "--device", "cpu", "--no-download", "--report", str(out.with_suffix(".json"))]  # overlapped (the default)
    result = peak_rss(cmd, REPO_ROOT, cap=4 * 2**30)
    assert result["rc"] == 0 and not result["tripped"], result["stderr"]
    return result["peak"]


def test_a_60_second_video_through_the_command_line_needs_no_more_memory_than_a_24_second_one(
        tiny_model_set, clips, tmp_path):
    with ThreadPoolExecutor(max_workers=2) as pool:  # two processes, each peak its own (CI time: side by side)
        runs = [pool.submit(cli_peak, tiny_model_set, *clips[seconds], tmp_path / name)
                for seconds, name in ((LONG_REFERENCE_S, "short.mp4"), (60, "long.mp4"))]
        short, long = (run.result() for run in runs)
    comfy_session.record_timing("cli_peak_mib", {LONG_REFERENCE_S: round(short / 2**20), 60: round(long / 2**20)})
    held = 2 * (120 - 2 * LONG_REFERENCE_S) * LONG_FRAME_BYTES  # what holding the input and the output frames would cost
    assert long - short <= window_bound() < held, (short / 2**20, long / 2**20, window_bound() / 2**20)
    report = json.loads((tmp_path / "long.json").read_text())
    assert report["output_frames"] == 120 and report["coverage"]["processed"] == 120
