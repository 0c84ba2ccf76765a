"""The VIDEO node streaming in the real ComfyUI server, and the server under a run of 20 prompts.

- A 60-second video through Load Video -> LatentSync Lip Sync (Video) -> Save Video peaks no higher than a
  24-second one, up to a bound derived from the window size (the server's peak is reset before each prompt). The face
  is on screen in the last 4 frames only (`FACE_SECONDS`): every frame streams through the node's reading,
  detection, the window queues, the encoder and Save Video, and both videos run the model on the same frames after
  the whole length has streamed (when everything the run holds has had its chance to grow). (The model on every
  window of a long video is the command line's check, tests/test_streaming_memory.py; here ComfyUI's VAE, a TAESD,
  would cost a second per frame.)
- 20 prompts queued in a row, valid and bad mixed: every valid one completes with the right output, every bad one
  fails with its own node's error (at validation or while running), the server stays up, and its resident memory
  after the last prompt is within 10 % of that after the first.

Both use the session's shared server: the memory figures are taken from its own process (peak reset with
/proc/PID/clear_refs before each measured prompt; resident memory read after the first and the last prompt of the
run), so no second server is needed.
"""
from __future__ import annotations

import copy
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest

import comfy_session as cs
from bench.memory import make_speech, make_video, video_prompt
from comfy_session import assert_success, probe, process_memory, reset_peak_memory, saved_videos
from media_factory import (LONG_FPS, LONG_FRAME_BYTES, LONG_HEIGHT, LONG_REFERENCE_S, LONG_WIDTH, SERVER_SLACK_MIB,
                           window_bound)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LIPSYNC = "7"  # the lip-sync node in bench.memory.video_prompt
FACE_SECONDS = 2  # 4 frames at LONG_FPS, at the end of the video (ComfyUI's VAE here: about a second a frame)
LOAD_SPEECH, LOAD_SECONDS = "load_speech_1frame.wav", 1 / 15  # the load run's valid video prompts: 1 frame each
LOAD_FRAMES = round(LOAD_SECONDS * cs.FPS)


def lipsync_prompt(video: str, audio: str | None, seed: int, **inputs) -> dict:
    """Load Video (+ Load Audio) -> LatentSync Lip Sync (Video) -> Save Video, tiny models, 1 step, no guidance."""
    prompt = copy.deepcopy(video_prompt(video, audio or cs.SPEECH_SHORT, steps=1))
    node = prompt[LIPSYNC]["inputs"]
    node.update(seed=seed, guidance=1.0, **inputs)
    if audio is None:
        del node["audio"], prompt["2"]
    return prompt


# ---------------------------------------------------------------------------------------------------------------
# memory


def test_a_60_second_video_through_the_video_node_needs_no_more_memory_than_a_24_second_one(comfy_server):
    peaks = {}
    for seconds in (LONG_REFERENCE_S, 60):
        video, audio = f"stream_{seconds}s.mp4", f"stream_{seconds}s.wav"
        make_video(comfy_server.input_dir / video, seconds, LONG_FPS, LONG_WIDTH, LONG_HEIGHT, FACE_SECONDS,
                   face_at_start=False)
        make_speech(comfy_server.input_dir / audio, seconds)
        prompt = lipsync_prompt(video, audio, seed=seconds)
        reset_peak_memory(comfy_server.pid)
        entry, run_s = comfy_server.run(prompt, timeout=1200)
        assert_success(entry, comfy_server)
        peaks[seconds] = process_memory(comfy_server.pid, "VmHWM")
        info = probe(saved_videos(entry, prompt, comfy_server)[0])
        assert info["frames"] == LONG_FPS * seconds and info["fps"] == LONG_FPS
        assert (info["width"], info["height"]) == (LONG_WIDTH, LONG_HEIGHT)
        assert cs.face_reports(entry)[0]["with_face"] == FACE_SECONDS * LONG_FPS  # the model ran on the last frames
        cs.record_timing(f"video_node_{seconds}s_960x540_2fps_s", round(run_s, 1))
    cs.record_timing("video_node_peak_mib", {k: round(v / 2**20) for k, v in peaks.items()})
    held = (120 - 2 * LONG_REFERENCE_S) * LONG_FRAME_BYTES * 5  # ComfyUI's float32 IMAGE + a uint8 copy, per frame
    bound = window_bound(SERVER_SLACK_MIB)
    assert peaks[60] - peaks[LONG_REFERENCE_S] <= bound < held, ({k: v / 2**20 for k, v in peaks.items()},
                                                                 bound / 2**20, held / 2**20)


# ---------------------------------------------------------------------------------------------------------------
# 20 prompts in a row


@pytest.fixture(scope="module")
def bad_media(comfy_server) -> dict:
    """Files for the prompts that must fail: a text file named .mp4, a truncated video, a video without a face; and
    the valid prompts' speech (LOAD_SECONDS of the shared speech)."""
    import media_factory as mf  # noqa: PLC0415

    folder = comfy_server.input_dir
    cs.write_first_seconds(folder / cs.SPEECH, folder / LOAD_SPEECH, LOAD_SECONDS)
    (folder / "load_broken.mp4").write_text("not a video\n")
    mf.truncated_copy(mf.faststart_clip(folder / "load_fast.mp4", 30), folder / "load_truncated.mp4")
    wall = np.full((8, 160, 200, 3), 90, np.uint8)
    mf.encode(folder / "load_noface.mp4", wall, 15)
    return {"broken": "load_broken.mp4", "truncated": "load_truncated.mp4", "noface": "load_noface.mp4"}


def images_strict_prompt(seed: int) -> dict:
    prompt = cs.faceless_prompt(seed)  # [photo with a face, black frame] -> Lip Sync (Images)
    prompt[cs.FACELESS_LIPSYNC_NODE]["inputs"].update(strict_faces=True, steps=1)
    return prompt


def run_plan(bad_media) -> list[tuple[str, dict, object]]:
    """(kind, prompt, expectation): "ok" (expectation: the length mode), "ok_images", "invalid" (rejected at
    validation; expectation: the input named), "error" (fails while running; expectation: (node type, text))."""
    def ok(seed: int, mode: str):
        return "ok", lipsync_prompt(cs.VIDEO, LOAD_SPEECH, seed, length_mode=mode), mode

    def ok_images(seed: int):
        return "ok_images", cs.faceless_prompt(seed), None

    video_node = "LatentSyncLipSyncVideo"
    return [
        ok(101, "pingpong"),
        ("invalid", lipsync_prompt(cs.VIDEO, cs.SPEECH_SHORT, 1, length_mode="sideways"), "length_mode"),
        ok(102, "loop"),
        ("error", lipsync_prompt(cs.VIDEO, None, 2), (video_node, "has no audio track")),
        ok(103, "freeze"),
        ("error", lipsync_prompt(bad_media["broken"], cs.SPEECH_SHORT, 3), (video_node, "not a media file")),
        ok_images(104),
        ("invalid", lipsync_prompt(cs.VIDEO, cs.SPEECH_SHORT, 4, steps=0), "steps"),
        ok(105, "cut_off"),
        ("error", lipsync_prompt(bad_media["truncated"], cs.SPEECH_SHORT, 5), (video_node, "truncated")),
        ok(106, "pingpong"),
        ("error", lipsync_prompt(bad_media["noface"], cs.SPEECH_SHORT, 6, strict_faces=True),
         (video_node, "strict faces: no face in output frame 0")),
        ok(107, "loop"),
        ("invalid", lipsync_prompt(cs.VIDEO, cs.SPEECH_SHORT, 7, max_face_gap=-1), "max_face_gap"),
        ok(108, "freeze"),
        ("error", images_strict_prompt(8), ("LatentSyncLipSyncImages", "strict faces: no face in output frame 1")),
        ok(109, "cut_off"),
        ok(110, "pingpong"),
        ok_images(111),
        ok(112, "loop"),
    ]


def test_twenty_prompts_in_a_row_valid_and_bad(comfy_server, bad_media):
    plan = run_plan(bad_media)
    assert len(plan) == 20 and plan[0][0].startswith("ok") and plan[-1][0].startswith("ok")
    rss = []
    for k, (kind, prompt, expect) in enumerate(plan):
        if kind == "invalid":
            try:
                comfy_server.post("/prompt", {"prompt": prompt})
                raise AssertionError(f"prompt {k} was accepted")
            except urllib.error.HTTPError as exc:  # 400 with the node's errors
                errors = json.loads(exc.read().decode()).get("node_errors", {})
            assert LIPSYNC in errors and expect in str(errors[LIPSYNC]), (k, errors)
        else:
            entry = comfy_server.wait(comfy_server.queue(prompt), timeout=900)
            if kind == "error":
                assert entry["status"]["status_str"] == "error", (k, entry["status"])
                messages = [m for t, m in entry["status"]["messages"] if t == "execution_error"]
                node_type, text = expect
                assert messages and messages[0]["node_type"] == node_type, (k, messages)
                assert text in messages[0]["exception_message"], (k, messages[0]["exception_message"])
            elif kind == "ok_images":
                assert_success(entry, comfy_server)
                assert len(entry["outputs"][cs.FACELESS_SAVE_NODE]["images"]) == cs.EXPECTED_FRAMES
            else:
                assert_success(entry, comfy_server)
                info = probe(saved_videos(entry, prompt, comfy_server)[0])
                assert info["frames"] == LOAD_FRAMES and info["fps"] == cs.FPS, (k, expect, info)
                assert info["audio_s"] == pytest.approx(LOAD_SECONDS, abs=0.07), (k, info)
                report = cs.face_reports(entry)[0]
                assert report["length_mode"] == expect and report["with_face"] == LOAD_FRAMES
        assert comfy_server.get("/system_stats")["system"]["comfyui_version"]  # still up
        rss.append(process_memory(comfy_server.pid))
    cs.record_timing("load_run_rss_mib", [round(r / 2**20) for r in rss])
    assert abs(rss[-1] - rss[0]) <= 0.10 * rss[0], [round(r / 2**20) for r in rss]
    leftovers = [p.name for p in (comfy_server.base / "temp" / "latentsync").glob("*.part*")]
    assert leftovers == []  # failed runs left no part files behind
