"""Batch lip-sync (`latentsync.batch`) and its claim files (`latentsync.claims`).

One folder goes through the whole story (shared by the tests in order, tiny models, clips of 6 to 12 frames at 1
step): two processes under `accelerate launch` write 4 outputs once and record 2 failures; a rerun does nothing;
--retry-failed runs only the two; then, with two new jobs, a process is killed mid-job and the rerun finishes the
batch without a part file, a claim, or an output written twice. Job files (CSV, JSON lines) with per-job options
and bad rows are checked in process, before any model loads."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import media_factory as mf
from conftest import REPO_ROOT
from latentsync.batch.__main__ import main as batch_main
from latentsync.batch.job_list import JobListError, read_jobs
from latentsync.claims import ClaimBoard, ClaimLost
from latentsync.options import LipSyncOptions

pytestmark = pytest.mark.slow

COMMON = ["--face-backend", "offline", "--no-download", "--steps", "1", "--guidance", "1.0", "--length-mode",
          "cut_off", "--heartbeat", "1"]
GOOD = {"a_six": 6, "b_twelve": 12, "c_eight": 8, "d_ten": 10}
LATE = {"e_nine": 9, "f_seven": 7}
TIMEOUT = 600


def _clip(folder: Path, name: str, frames: int, speech: bool = True) -> None:
    mf.encode(folder / f"{name}.mp4", mf.clip_frames(frames, (128, 128)), 15)
    if speech:
        mf.write_wav(folder / f"{name}.wav", mf.speech(16000, 1, frames / 15), 16000)


def _batch(args: list[str], processes: int = 1, readme_launcher: bool = False) -> list[str]:
    """The batch runner in one process, or in N under `accelerate launch` (the README's spelling) or
    `accelerate-launch` (the same launcher from accelerate's own console script, about 4 s quicker to start: the
    `accelerate` command imports all its subcommands first)."""
    if processes == 1:
        return [sys.executable, "-m", "latentsync.batch", *args]
    bin_dir = Path(sys.executable).parent
    launch = [str(bin_dir / "accelerate"), "launch"] if readme_launcher else [str(bin_dir / "accelerate-launch")]
    return [*launch, "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "latentsync.batch", *args]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _report(out: Path) -> dict:
    data = json.loads((out / "batch_report.json").read_text())
    return {Path(e["video"]).stem: e for e in data["jobs"]} | {"": data}


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4") if not p.name.startswith(".")}


def _claims(folder: Path) -> list[dict]:
    """The claims being held now (a claim may be released, or half written, while it is read)."""
    held = []
    for path in folder.glob("*.claim"):
        try:
            held.append(json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            continue
    return held


def _leftovers(out: Path) -> list[str]:
    return [p.name for p in out.rglob("*") if p.name.endswith((".claim", ".beat")) or ".part" in p.name]


@pytest.fixture(scope="module")
def story(tiny_model_set, tmp_path_factory) -> dict:
    jobs = tmp_path_factory.mktemp("batch_jobs")
    for name, frames in GOOD.items():
        _clip(jobs, name, frames)
    (jobs / "broken.mp4").write_text("this is not a video\n")
    mf.write_wav(jobs / "broken.wav", mf.speech(16000, 1, 0.5), 16000)
    _clip(jobs, "lonely", 8, speech=False)
    out = tmp_path_factory.mktemp("batch_out")
    args = ["--jobs", str(jobs), "--out", str(out), "--models", str(tiny_model_set), *COMMON]
    first = _run(_batch(args, processes=2, readme_launcher=True))
    return {"jobs": jobs, "out": out, "args": args, "first": first, "after_first": _mtimes(out)}


def test_two_processes_write_four_outputs_once_and_record_two_failures(story):
    out, first = story["out"], story["first"]
    assert sorted(story["after_first"]) == sorted(f"{n}.mp4" for n in GOOD)
    report = _report(out)
    summary = report[""]["summary"]
    assert summary | {"jobs": 6, "done": 4, "failed": 2, "skipped": 0, "processes": 2} == summary
    assert "batch: 4 done, 2 failed, 0 skipped of 6 jobs" in first.stdout
    for name, frames in GOOD.items():
        entry = report[name]
        assert entry["status"] == "done" and entry["output_frames"] == frames and entry["device"] == "cpu"
        assert entry["coverage"]["processed"] == frames and entry["seconds"] > 0
        assert first.stderr.count(f"{name}.mp4: done in") == 1  # each output written by one process, once
    assert "cannot open" in report["broken"]["error"] and "broken.mp4" in report["broken"]["error"]
    assert report["lonely"]["error"].startswith("no speech file for") and "lonely.wav" in report["lonely"]["error"]
    # the longest job first: the 12-frame one was claimed before the 6-frame one by whichever process ran them
    assert report["b_twelve"]["started"] <= report["a_six"]["started"]
    with open(out / "batch_report.csv", newline="") as f:
        rows = {Path(r["video"]).stem: r for r in csv.DictReader(f)}
    assert len(rows) == 6 and rows["c_eight"]["status"] == "done" and rows["c_eight"]["output_frames"] == "8"
    assert rows["lonely"]["status"] == "failed" and rows["lonely"]["error"] == report["lonely"]["error"]
    assert {p["process"] for p in report[""]["processes"]} == {0, 1}
    assert first.stderr.count("loading U-Net") <= 2  # once per process, reused for every job it ran
    assert first.stderr.count("memory allocator: ") == 2  # each CPU process sets its own (latentsync.cpu_allocator)
    assert _leftovers(out) == []


def test_rerun_does_nothing(story):
    again = _run(_batch(story["args"]))
    assert "batch: 0 done, 0 failed, 6 skipped (finished earlier: 4 done, 2 failed)" in again.stdout
    assert "loading U-Net" not in again.stderr  # no job to run: the models are never loaded
    assert _mtimes(story["out"]) == story["after_first"]


def test_retry_failed_runs_only_the_failed_jobs(story):
    before = _report(story["out"])
    retry = _run(_batch(story["args"] + ["--retry-failed"]))
    assert "batch: 0 done, 2 failed, 4 skipped (finished earlier: 4 done, 0 failed)" in retry.stdout
    after = _report(story["out"])
    for name in GOOD:
        assert after[name] == before[name]
    for name in ("broken", "lonely"):
        assert after[name]["run"] != before[name]["run"] and after[name]["error"] == before[name]["error"]
    assert _mtimes(story["out"]) == story["after_first"]


def test_a_process_killed_mid_job_the_rerun_finishes_exactly_once(story):
    jobs, out = story["jobs"], story["out"]
    for name, frames in LATE.items():
        _clip(jobs, name, frames)
    launch = subprocess.Popen(_batch(story["args"], processes=2), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        claims = out / ".batch" / "claims"
        deadline = time.monotonic() + TIMEOUT
        victim = None
        while victim is None and time.monotonic() < deadline and launch.poll() is None:
            parts = [p for p in out.iterdir() if p.name.endswith(".part.mp4")]
            held = _claims(claims)
            if parts and held:
                victim = held[0]["pid"]
            time.sleep(0.05)
        assert victim is not None, "no job was seen in progress"
        os.kill(victim, signal.SIGKILL)
        launch.communicate(timeout=TIMEOUT)
    finally:
        if launch.poll() is None:
            launch.kill()
    killed = _mtimes(out)
    rerun = _run(_batch(story["args"]))
    assert "batch: " in rerun.stdout and "0 failed" in rerun.stdout and "of 8 jobs" in rerun.stdout
    final = _mtimes(out)
    assert sorted(final) == sorted(f"{n}.mp4" for n in {**GOOD, **LATE})
    for name, mtime in killed.items():
        assert final[name] == mtime  # written before the kill: never again
    report = _report(out)
    for name, frames in LATE.items():
        assert report[name]["status"] == "done" and report[name]["output_frames"] == frames
    assert _leftovers(out) == []


# ---------------------------------------------------------------------------------------------------------------
# job files


def test_csv_and_jsonl_jobs_carry_their_own_options(tmp_path):
    _clip(tmp_path, "talk", 6)
    (tmp_path / "sub").mkdir()
    (tmp_path / "jobs.csv").write_text("video,audio,output,steps,length_mode,seed\n"
                                       "talk.mp4,talk.wav,,3,loop,\n"
                                       "talk.mp4,,sub/own_audio.mp4,,,7\n")
    (tmp_path / "jobs.jsonl").write_text(json.dumps({"video": "talk.mp4", "audio": "talk.wav", "face_selection":
                                                     "center", "face_threshold": 0.7}) + "\n\n")
    base = LipSyncOptions(steps=1)
    first, second = read_jobs(tmp_path / "jobs.csv", tmp_path / "out", base)
    assert first.video == tmp_path / "talk.mp4" and first.output == tmp_path / "out" / "talk.mp4"
    assert first.options.steps == 3 and first.options.length_mode == "loop" and first.options.seed == 1247
    assert first.overrides == {"steps": 3, "length_mode": "loop"}
    assert second.audio is None and second.output == tmp_path / "out" / "sub" / "own_audio.mp4"
    assert second.options.steps == 1 and second.options.seed == 7
    (job,) = read_jobs(tmp_path / "jobs.jsonl", tmp_path / "out", base)
    assert job.options.face_selection == "center" and job.options.face_threshold == 0.7


def test_bad_rows_are_reported_with_their_line_numbers_before_any_model_loads(tmp_path, capsys):
    _clip(tmp_path, "talk", 6)
    (tmp_path / "bad.csv").write_text("video,audio,stepz\n"
                                      "talk.mp4,talk.wav,\n"
                                      "talk.mp4,talk.wav,3\n"
                                      "gone.mp4,talk.wav,\n")
    with pytest.raises(JobListError) as info:
        read_jobs(tmp_path / "bad.csv", tmp_path / "out")
    text = str(info.value)
    assert "bad.csv line 2: unknown option 'stepz'" in text and "bad.csv line 4: video file not found" in text
    (tmp_path / "bad.jsonl").write_text('{"video": "talk.mp4", "audio": "missing.wav"}\n'
                                        '{"video": "talk.mp4", "steps": 0}\n')
    code = batch_main(["--jobs", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "out"),
                       "--models", str(tmp_path / "no_models_here"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.jsonl line 1: audio file not found" in err and "bad.jsonl line 2: steps must be at least 1" in err
    assert "loading" not in err and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------
# claims


def test_a_claim_is_held_once_taken_over_when_expired_and_the_old_owner_gives_up(tmp_path):
    with ClaimBoard(tmp_path, heartbeat=0.2, missed=2) as a, ClaimBoard(tmp_path, heartbeat=0.2, missed=2) as b:
        mine = a.claim("job")
        assert mine is not None and b.claim("job") is None  # held, heartbeat alive
        time.sleep(0.5)
        assert b.claim("job") is None  # still beating
        stale = json.loads(mine.path.read_text()) | {"host": "elsewhere", "heartbeat": time.time() - 10}
        with a._lock:  # the owner stops beating (as a frozen machine would)
            a._held.clear()
            mine.path.write_text(json.dumps(stale))
        taken = b.claim("job")
        assert taken is not None and taken.generation == 1 and taken.took_over
        with pytest.raises(ClaimLost):
            mine.check()
        b.release(taken)
        assert list(tmp_path.glob("*.claim")) == []


def test_a_claim_of_a_process_that_ended_on_this_host_is_taken_over_at_once(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(ended.stdout)
    with ClaimBoard(tmp_path, heartbeat=60) as board:
        (tmp_path / "job.0.claim").write_text(json.dumps(board.me | {"pid": pid, "process_started": 1.0,
                                                                     "heartbeat": time.time()}))
        taken = board.claim("job")
        assert taken is not None and taken.generation == 1
        board.release(taken)
    assert list(tmp_path.iterdir()) == []


def test_score_adds_the_outputs_sync_confidence_and_offset(tiny_model_set, tmp_path):
    from latentsync.batch.report import Ledger, csv_row
    from latentsync.batch.worker import BatchWorker
    from latentsync.options import ModelOptions

    video = mf.encode(tmp_path / "talk.mp4", mf.clip_frames(20), 15, audio=mf.speech(16000, 1, 20 / 15),
                      sample_rate=16000)
    model = ModelOptions(models=tiny_model_set, face_backend="offline", download=False)
    worker = BatchWorker({}, Ledger(tmp_path / "out"), model, "cpu", 0, "run", score=True, log=lambda _m: None)
    scored = worker._score(video)
    assert set(scored["score"]) == {"confidence", "offset_frames", "distance"}, scored
    assert -15 <= scored["score"]["offset_frames"] <= 15
    row = csv_row({"status": "done", **scored})
    assert row["sync_confidence"] == scored["score"]["confidence"] and row["sync_offset_frames"] != ""
