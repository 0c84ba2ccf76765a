"""scripts/comfy_batch.py against the session's ComfyUI server: two jobs from a JSON-lines file (one with its own
speech, one with the video's own audio track) go through the shipped API workflow, changed only in the inputs the
jobs set; the outputs land under their names with the batch runner's report; a rerun skips them."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import media_factory as mf
from conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = REPO_ROOT / "scripts" / "comfy_batch.py"


def test_two_jobs_through_the_server_with_the_shipped_workflow(comfy_server, tmp_path):
    mf.encode(tmp_path / "first.mp4", mf.clip_frames(3, (128, 128)), 15)  # short clips: the server's VAE (CI time)
    mf.write_wav(tmp_path / "first.wav", mf.speech(16000, 1, 3 / 15), 16000)
    mf.encode(tmp_path / "own.mp4", mf.clip_frames(2, (128, 128)), 15, audio=mf.speech(44100, 1, 2 / 15),
              sample_rate=44100)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"video": "first.mp4", "audio": "first.wav", "seed": 5}) + "\n"
                    + json.dumps({"video": "own.mp4", "output": "sub/own_audio.mp4"}) + "\n")
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--jobs", str(jobs), "--out", str(out), "--server", comfy_server.url,
           "--set", "steps=1", "--set", "guidance=1.0", "--set", "length_mode=cut_off"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + comfy_server.log_tail()
    assert "batch: 2 done, 0 failed, 0 skipped of 2 jobs" in proc.stdout
    report = json.loads((out / "batch_report.json").read_text())
    jobs_by_name = {e["output"].rsplit("/", 1)[-1]: e for e in report["jobs"]}
    assert jobs_by_name["first.mp4"]["output_frames"] == 3 and jobs_by_name["first.mp4"]["options"] == {"seed": 5}
    assert jobs_by_name["own_audio.mp4"]["output_frames"] == 2 and jobs_by_name["own_audio.mp4"]["audio"] is None
    assert (out / "first.mp4").is_file() and (out / "sub" / "own_audio.mp4").is_file()
    assert (out / "batch_report.csv").read_text().count("\n") == 3
    assert not [p for p in out.rglob("*") if ".part" in p.name or p.name.endswith(".claim")]
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "batch: 0 done, 0 failed, 2 skipped" in again.stdout, again.stdout + again.stderr
