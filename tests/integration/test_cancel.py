"""Cancel (POST /interrupt) during sampling stops the run within one step; the next prompt runs normally."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

import comfy_session as cs
from comfy_session import EXPECTED_FRAMES, assert_success, probe, saved_videos

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MODULAR = REPO / "workflows" / "api" / "latentsync_modular.json"
LONG_STEPS = 400


def node_of(prompt: dict, class_type: str) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == class_type)


def test_interrupt_during_sampling_stops_within_one_step_and_next_prompt_runs(comfy_server):
    prompt = cs.adapt_api(cs.load_json(MODULAR), {**cs.TEST_OVERRIDES, ("*", "steps"): LONG_STEPS})
    sampler = node_of(prompt, "LatentSyncSampler")
    steps = []  # (time, value) of the sampler's progress events
    interrupted_at = None
    after_interrupt = []
    outcome = None
    for now, kind, data in cs.prompt_events(comfy_server, prompt, timeout=600):
        if kind == "progress" and data.get("node") == sampler:
            if interrupted_at is None:
                steps.append((now, data["value"], data["max"]))
                if len(steps) >= 6:
                    interrupted_at = time.time()
                    comfy_server.post("/interrupt", {})
            else:
                after_interrupt.append((now, data["value"]))
        elif kind in cs.END_EVENTS:
            outcome = (kind, now, data)
    assert outcome is not None, "the run neither finished nor stopped"

    kind, stopped_at, data = outcome
    prompt_id = data["prompt_id"]
    assert kind == "execution_interrupted", data
    assert data.get("node_id") == sampler, f"interrupted in {data.get('node_type')}, expected the sampler"
    assert steps[-1][2] == LONG_STEPS and steps[-1][1] < LONG_STEPS
    intervals = [b[0] - a[0] for a, b in zip(steps[1:], steps[2:])]  # skip the first (includes window set-up)
    step_s = max(intervals)
    latency = stopped_at - interrupted_at
    # the step in flight finishes, then the next Cancel check stops it: no further step, no more than one step's time
    assert len(after_interrupt) <= 1, f"{len(after_interrupt)} more sampler steps ran after Cancel"
    assert latency <= 1.5 * step_s + 1.0, f"stopped {latency:.2f} s after Cancel; a step takes {step_s:.2f} s"
    cs.record_timing("cancel_latency_s", round(latency, 2))
    cs.record_timing("cancel_step_s", round(step_s, 2))

    history = comfy_server.wait(prompt_id, timeout=60)
    assert history["status"]["status_str"] == "error"
    assert "execution_interrupted" in [k for k, _ in history["status"]["messages"]]

    # the next prompt runs normally (the interrupt flag was cleared, the models are still usable)
    normal = cs.adapt_api(cs.load_json(MODULAR))
    entry, seconds = comfy_server.run(normal, timeout=900)
    assert_success(entry, comfy_server)
    cs.record_timing("after_cancel_modular_s", round(seconds, 1))
    videos = saved_videos(entry, normal, comfy_server)
    assert len(videos) == 1 and probe(videos[0])["frames"] == EXPECTED_FRAMES
