"""Sync scoring on the real server: the shipped `latentsync_score` template over HTTP (figures on both score nodes,
plot images), the lip-sync node's `score` switch (same figures as the score node on its output), the IMAGE + AUDIO +
frame-rate path (same figures as the VIDEO path on the same frames), and Cancel during scoring.

The generic test of every API workflow (test_workflows_api.py, which runs before this file) already queues the
template with the same test inputs; its result is taken from the server's /history instead of running it twice.
Run alone, this test queues the template itself."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image

import comfy_session as cs
from comfy_session import assert_success

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "workflows" / "api" / "latentsync_score.json"
PLOT_SIZE = (960, 620)
SCORED_FRAMES = 10  # 0.4 s of audio at 25 fps (the clip's 15 fps frames picked to 25 fps, cut to the audio)


def nodes_of(prompt: dict, class_type: str) -> list[str]:
    return sorted((k for k, v in prompt.items() if v["class_type"] == class_type), key=int)


def sync_report(entry: dict, node: str) -> dict:
    reports = entry["outputs"].get(node, {}).get("latentsync_sync", [])
    assert len(reports) == 1, entry["outputs"].get(node)
    return reports[0]


def assert_well_formed(report: dict) -> None:
    assert report["error"] == "" and report["tiny"] is True  # the test server runs the tiny random set
    assert math.isfinite(report["confidence"]) and report["confidence"] >= 0
    assert math.isfinite(report["distance"]) and report["distance"] > 0
    assert isinstance(report["offset_frames"], int) and -15 <= report["offset_frames"] <= 15
    assert report["offset_seconds"] == report["offset_frames"] / 25
    assert report["frames"] == SCORED_FRAMES and report["frames_scored"] == SCORED_FRAMES - 5


def figures(report: dict) -> tuple:
    return report["confidence"], report["distance"], report["offset_frames"], report["frames_scored"]


def finished_run_of(server, prompt: dict) -> dict | None:
    """The history entry of an earlier successful run of exactly this prompt, if the server has one."""
    for entry in (server.get("/history", timeout=60) or {}).values():
        if entry.get("status", {}).get("status_str") == "success" and entry["prompt"][2] == prompt:
            return entry
    return None


def test_score_template_image_path_and_score_switch(comfy_server):
    prompt = cs.adapt_api(cs.load_json(TEMPLATE))
    entry = finished_run_of(comfy_server, prompt)
    if entry is None:
        entry, seconds = comfy_server.run(prompt, timeout=900)
        cs.record_timing("api_latentsync_score_s", round(seconds, 1))
    assert_success(entry, comfy_server)

    # the template as shipped: two score nodes, the input's against the output's, figures + a plot each
    score_in, score_out = (next(k for k in nodes_of(prompt, "LatentSyncSyncScore")
                                if (prompt[k]["inputs"]["video"][0] == src)) for src in
                           (nodes_of(prompt, "LoadVideo")[0], nodes_of(prompt, "LatentSyncLipSyncVideo")[0]))
    reports = {name: sync_report(entry, node) for name, node in (("input", score_in), ("output", score_out))}
    for report in reports.values():
        assert_well_formed(report)
    assert figures(reports["input"]) != figures(reports["output"])  # different mouths, different figures
    for preview in nodes_of(prompt, "PreviewImage"):
        (item,) = entry["outputs"][preview]["images"]
        with Image.open(comfy_server.output_file(item)) as im:
            assert im.size == PLOT_SIZE
    (video,) = cs.saved_videos(entry, prompt, comfy_server)
    assert cs.probe(video)["frames"] == cs.EXPECTED_FRAMES

    # IMAGE + AUDIO + frame rate: the same frames and audio as the template's input score -> the same figures
    loaders = {k: prompt[k] for k in (*nodes_of(prompt, "LatentSyncSyncNetLoader"),
                                      *nodes_of(prompt, "LatentSyncFaceAnalyzerLoader"),
                                      *nodes_of(prompt, "LoadVideo"), *nodes_of(prompt, "LoadAudio"))}
    syncnet = nodes_of(prompt, "LatentSyncSyncNetLoader")[0]
    analyzer = nodes_of(prompt, "LatentSyncFaceAnalyzerLoader")[0]
    image_prompt = {
        **loaders,
        "90": {"class_type": "GetVideoComponents", "inputs": {"video": [nodes_of(prompt, "LoadVideo")[0], 0]}},
        "91": {"class_type": "LatentSyncSyncScore", "inputs": {
            "syncnet": [syncnet, 0], "face_analyzer": [analyzer, 0], "images": ["90", 0],
            "audio": [nodes_of(prompt, "LoadAudio")[0], 0], "frame_rate": ["90", 2], "face_selection": "largest",
            "face_index": 0}},
    }
    image_entry, _ = comfy_server.run(image_prompt, timeout=300)
    assert_success(image_entry, comfy_server)
    assert figures(sync_report(image_entry, "91")) == figures(reports["input"])

    # the lip-sync node's `score` switch (on in the template) scores its own output: the figures of the score node
    # on that output, shown next to its face report
    lipsync = nodes_of(prompt, "LatentSyncLipSyncVideo")[0]
    assert prompt[lipsync]["inputs"]["score"] is True
    own = sync_report(entry, lipsync)
    assert own["label"] == "output" and figures(own) == figures(reports["output"])
    assert entry["outputs"][lipsync]["latentsync_faces"][0]["with_face"] == cs.EXPECTED_FRAMES


def test_cancel_while_scoring_stops_the_score_node(comfy_server):
    """The whole demo speech (4 s, 100 frames at 25 fps): Cancel after a few frames stops the node early."""
    prompt = cs.adapt_api(cs.load_json(TEMPLATE), {**cs.TEST_OVERRIDES, ("LoadAudio", "audio"): cs.SPEECH_LONG})
    keep = {*nodes_of(prompt, "LoadVideo"), *nodes_of(prompt, "LoadAudio"),
            *nodes_of(prompt, "LatentSyncSyncNetLoader"), *nodes_of(prompt, "LatentSyncFaceAnalyzerLoader")}
    score = next(k for k in nodes_of(prompt, "LatentSyncSyncScore") if prompt[k]["inputs"]["video"][0] in keep)
    plot = next(k for k in nodes_of(prompt, "PreviewImage") if prompt[k]["inputs"]["images"][0] == score)
    prompt = {k: v for k, v in prompt.items() if k in keep | {score, plot}}
    cs.fresh_caches(comfy_server)
    progress = []
    for _, kind, data in cs.prompt_events(comfy_server, prompt, timeout=300):
        if kind == "progress" and data.get("node") == score:
            progress.append((data["value"], data["max"]))
            if len(progress) == 3:
                comfy_server.post("/interrupt", {})
    assert kind == "execution_interrupted" and data.get("node_id") == score, (kind, data)  # the last event: the end
    total = progress[-1][1]
    assert total >= 75 and progress[-1][0] < total, progress  # 45 frames at 15 fps -> 75 at 25 fps, not all done
