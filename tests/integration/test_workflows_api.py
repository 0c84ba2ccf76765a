"""Every API-format workflow in workflows/api/ queued over HTTP on the real server, started like `make serve` without
the model hub (tiny model set under the official names, offline, demo media in input/); the saved video is read back
with PyAV. The one-node video workflow is queued byte for byte as shipped (20 steps, on the test server's 0.6 s of
demo speech: the README's curl example does it, see test_readme_http.py); the others with 0.4 s of audio and 3
steps (TEST_OVERRIDES) to save CI time. Plus the IMAGE path with frames that have no face."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import comfy_session as cs
from comfy_session import EXPECTED_FRAMES, FPS, assert_success, face_reports, fresh_caches, probe, saved_videos

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
API_WORKFLOWS = sorted((REPO / "workflows" / "api").glob("*.json"))


def test_every_shipped_workflow_has_an_api_twin():
    ui = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    assert ui and ui == [p.stem for p in API_WORKFLOWS]


FRONTEND_ONLY = {"MarkdownNote", "Note", "Reroute", "PrimitiveNode"}


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=[p.stem for p in API_WORKFLOWS])
def test_api_twin_is_the_same_graph_as_the_ui_workflow(path):
    """Same nodes (minus frontend-only notes), same class types, same links."""
    ui = cs.load_json(REPO / "workflows" / path.name)
    api = cs.load_json(path)
    nodes = {str(n["id"]): n for n in ui["nodes"] if n["type"] not in FRONTEND_ONLY}
    assert {k: n["type"] for k, n in nodes.items()} == {k: v["class_type"] for k, v in api.items()}
    ui_links = set()
    for _link_id, src, src_slot, dst, dst_slot, _type in ui["links"]:
        name = nodes[str(dst)]["inputs"][dst_slot]["name"]
        ui_links.add((str(dst), name, str(src), src_slot))
    api_links = {(k, name, v[0], v[1]) for k, node in api.items() for name, v in node["inputs"].items()
                 if isinstance(v, list)}
    assert ui_links == api_links


def test_every_name_in_the_shipped_workflows_is_offered_by_a_make_serve_server(comfy_server):
    """What ComfyUI validates before it runs a prompt: every file name (media, models) and choice in every shipped
    API workflow, as shipped, is among the options the server lists (the tiny set has the official names)."""
    info = comfy_server.get("/object_info")
    checked = 0
    for path in API_WORKFLOWS:
        for node_id, node in cs.load_json(path).items():
            spec = info[node["class_type"]]["input"]
            inputs = {**spec.get("required", {}), **spec.get("optional", {})}
            for name, value in node["inputs"].items():
                kind, *extra = inputs.get(name, [None])
                options = extra[0].get("options") if kind == "COMBO" and extra else kind  # V3 nodes: COMBO + options
                if isinstance(value, str) and isinstance(options, list):
                    assert value in options, f"{path.name} node {node_id} {node['class_type']}.{name}={value!r}"
                    checked += 1
    assert checked >= 3 * 10  # media (2), U-Net, version, dtype, VAE, Whisper, face backend, format, codec


SHIPPED = "latentsync_video"


@pytest.mark.slow
def test_shipped_video_workflow_runs_unchanged(comfy_server):
    """workflows/api/latentsync_video.json posted as it is (by the README's curl example): the demo clip lip-synced
    to the demo speech (in the test server its first 0.6 s: 9 frames at 15 fps), the face analyzer's
    `auto` on the offline detector, and why."""
    run = cs.readme_http_run(comfy_server)
    assert run.entry, f"no history entry for the curl run: {run.curl.stdout[-2000:]}\n{run.curl.stderr[-2000:]}"
    assert run.entry["prompt"][2] == cs.load_json(cs.SHIPPED_VIDEO_API)  # the job is the shipped file
    assert_success(run.entry, comfy_server)
    cs.record_timing("api_latentsync_video_unchanged_s", round(run.seconds, 1))
    prompt = cs.load_json(cs.SHIPPED_VIDEO_API)
    (video,) = saved_videos(run.entry, prompt, comfy_server)
    info = probe(video)
    assert info["frames"] == cs.SHIPPED_FRAMES and info["fps"] == FPS and (info["width"], info["height"]) == (350, 350)
    assert info["audio_s"] == pytest.approx(cs.SHIPPED_SECONDS, abs=0.07), info
    (report,) = face_reports(run.entry)
    assert report["frames"] == report["with_face"] == cs.SHIPPED_FRAMES
    (backend,) = [b for out in run.entry["outputs"].values() for b in out.get("latentsync_face_backend", [])]
    assert backend["requested"] == "auto" and backend["backend"] == "offline"
    assert "HF_HUB_OFFLINE" in backend["reason"], backend
    assert "face analyzer auto -> offline RetinaFace" in comfy_server.log.read_text(errors="replace")


OVERRIDDEN = [p for p in API_WORKFLOWS if p.stem != SHIPPED]


@pytest.mark.slow
@pytest.mark.parametrize("path", OVERRIDDEN, ids=[p.stem for p in OVERRIDDEN])
def test_api_workflow_runs_and_writes_the_expected_video(comfy_server, path):
    prompt = cs.adapt_api(cs.load_json(path))
    fresh_caches(comfy_server)
    entry, seconds = comfy_server.run(prompt, timeout=900)
    assert_success(entry, comfy_server)
    cs.record_timing(f"api_{path.stem}_s", round(seconds, 1))

    videos = saved_videos(entry, prompt, comfy_server)
    assert len(videos) == 1 and videos[0].is_file(), entry["outputs"]
    info = probe(videos[0])
    assert info["frames"] == EXPECTED_FRAMES, info
    assert info["fps"] == FPS, info
    assert (info["width"], info["height"]) == (350, 350), info
    assert info["audio_s"] == pytest.approx(EXPECTED_FRAMES / FPS, abs=0.07), info

    reports = face_reports(entry)
    assert reports, "no node reported its face statistics"
    for r in reports:
        assert r["frames"] == EXPECTED_FRAMES and r["with_face"] == EXPECTED_FRAMES and r["without_face"] == 0


@pytest.mark.slow
def test_frames_without_a_face_pass_through_unchanged(comfy_server):
    """IMAGE + AUDIO + frame rate -> IMAGE + AUDIO with a batch [photo with a face, black frame]: the output is as
    long as the audio (ping-pong over the 2 frames), black frames come back bit-identical, the photo keeps every
    pixel outside the pasted face, the node warns in the log and in its UI payload."""
    prompt = cs.faceless_prompt(seed=3)
    entry, seconds = comfy_server.run(prompt, timeout=900)
    assert_success(entry, comfy_server)
    cs.record_timing("api_images_without_face_s", round(seconds, 1))

    report = face_reports(entry)[0]
    order = cs.FACELESS_ORDER
    assert report["frames"] == EXPECTED_FRAMES
    assert report["missing_frames"] == [i for i, src in enumerate(order) if src == 1]
    assert report["without_face"] == 3 and "no face found in 3 of 6 frames" in report["warning"]
    assert "no face found in 3 of 6 frames" in comfy_server.log.read_text(errors="replace")

    files = [comfy_server.output_file(i) for i in entry["outputs"][cs.FACELESS_SAVE_NODE]["images"]]
    assert len(files) == EXPECTED_FRAMES
    photo = np.asarray(Image.open(comfy_server.input_dir / "face_astronaut_skimage.png").convert("RGB"))
    for i, src in enumerate(order):
        frame = np.asarray(Image.open(files[i]).convert("RGB"))
        if src == 1:
            assert not frame.any(), f"frame {i} (no face) was changed"
        else:
            changed = np.any(frame != photo, axis=-1)
            assert changed.any(), f"frame {i}: the face was not re-generated"
            rows, cols = np.nonzero(changed)
            # everything changed lies in one face-sized region; the frame border is untouched
            assert not changed[:40].any() and not changed[-40:].any() and not changed[:, :40].any()
            assert rows.max() - rows.min() < 400 and cols.max() - cols.min() < 400
