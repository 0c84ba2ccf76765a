"""Streaming keeps memory flat: a 60-second video through the command line peaks no higher than an 8-second one, up to
a bound derived from the window size (not the length). Cheap on purpose: 2 frames per second (120 frames of
960x540), tiny models, 1 step, no guidance. Holding the video whole (as before issue 10) would add at least
120 x 1.5 MB for the decoded frames and as much again for the output: well above the bound.

The same check through the VIDEO node in a real ComfyUI is in integration/test_streaming_server.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.memory import make_speech, make_video, peak_rss
from conftest import REPO_ROOT
from latentsync.face.gaps import DEFAULT_MAX_GAP
from latentsync.pipeline import WINDOW

pytestmark = pytest.mark.slow

WIDTH, HEIGHT, FPS = 960, 540, 2
FRAME_BYTES = WIDTH * HEIGHT * 3
CACHED_FRAMES = WINDOW + DEFAULT_MAX_GAP + 6  # the pipeline's frame cache (window + detection look-ahead)
SLACK = 64 * 2**20  # allocator noise, the encoder's own buffers


def window_bound() -> int:
    """What may differ between a short and a long run: the frame cache twice over (reads and the window's output)
    plus slack. Independent of the video's length."""
    return 2 * CACHED_FRAMES * FRAME_BYTES + SLACK


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    work = tmp_path_factory.mktemp("long")
    out = {}
    for seconds in (8, 60):
        video, audio = work / f"v{seconds}.mp4", work / f"a{seconds}.wav"
        make_video(video, seconds, FPS, WIDTH, HEIGHT)
        make_speech(audio, seconds)
        out[seconds] = (video, audio)
    return out


def cli_peak(models: Path, video: Path, audio: Path, out: Path) -> int:
    cmd = [sys.executable, "-m", "latentsync", "--video", str(video), "--audio", str(audio), "--out", str(out),
           "--models", str(models), "--face-backend", "offline", "--steps", "1", "--guidance", "1.0",
           "--device", "cpu", "--no-download", "--report", str(out.with_suffix(".json"))]
    result = peak_rss(cmd, REPO_ROOT, cap=4 * 2**30)
    assert result["rc"] == 0 and not result["tripped"], result["stderr"]
    return result["peak"]


def test_a_60_second_video_through_the_command_line_needs_no_more_memory_than_an_8_second_one(
        tiny_model_set, clips, tmp_path):
    short = cli_peak(tiny_model_set, *clips[8], tmp_path / "short.mp4")
    long = cli_peak(tiny_model_set, *clips[60], tmp_path / "long.mp4")
    held = 2 * 120 * FRAME_BYTES  # what holding the input and the output frames would cost
    assert long - short <= window_bound() < held, (short / 2**20, long / 2**20, window_bound() / 2**20)
    report = json.loads((tmp_path / "long.json").read_text())
    assert report["output_frames"] == 120 and report["coverage"]["processed"] == 120
