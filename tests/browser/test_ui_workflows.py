"""Every UI workflow in workflows/ in the real ComfyUI frontend (Debian Chromium, tests/harness/browser_check.py):
it loads with no missing node types, the node help page opens, the prompt the page would queue is its API twin's
(which runs over HTTP), and queued from the page it runs to completion and the pack's web extension shows the
reports on the nodes (PAGE_RUNS). One Chromium with the frontend loaded once serves the whole module: each test loads
its workflow into that page, as a user loads one workflow after another. Screenshots are kept under
test-artifacts/browser/."""
from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlparse

import pytest

import comfy_session as cs
from latentsync import hub

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
UI_WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
SHOTS = cs.ARTIFACTS / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
BROWSER_SEED = 11  # not the seed of the API tests, so the page's run is not answered from ComfyUI's cache
HELP_NODE = {  # the node whose help page is opened in each workflow
    "latentsync_video": "LatentSyncLipSyncVideo",
    "latentsync_modular": "LatentSyncSampler",
    "latentsync_image_batch": "LatentSyncLipSyncImages",
    "latentsync_score": "LatentSyncSyncScore",
}


@pytest.fixture(scope="module")
def browser(comfy_server):
    """The real frontend in Chromium (local requests only), loaded once for the module. While
    ``browser.hide_vae_listing`` is true, the model folder listing the frontend asks for (/experiment/models/vae)
    comes back empty, as on a fresh ComfyUI."""
    if not Path(CHROMIUM).exists():
        message = f"chromium not found at {CHROMIUM}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    from browser_check import BrowserSession

    SHOTS.mkdir(parents=True, exist_ok=True)
    session = None

    def hide_vae_listing(route) -> bool:
        if session.hide_vae_listing and urlparse(route.request.url).path.endswith("/experiment/models/vae"):
            route.fulfill(status=200, content_type="application/json", body="[]")
            return True
        return False

    with sync_playwright() as p:
        session = BrowserSession(p, comfy_server.url, CHROMIUM, viewport="2400x1300", timeout=600,
                                 route_hook=hide_vae_listing)
        session.hide_vae_listing = False
        try:
            yield session.open()
        finally:
            session.close()


def browser_check(browser, workflow: Path, shot: Path, **options) -> tuple[int, dict]:
    """browser_check.py's checks of one workflow, in the module's page; the report is kept beside the screenshot."""
    rc, report = browser.check(str(workflow), str(shot), **options)
    (SHOTS / f"{shot.stem}.json").write_text(json.dumps(report, indent=1))
    return rc, report


def own_console_errors(report: dict) -> list[str]:
    """Errors from the pack's own web code (the frontend's blocked registry look-ups at api.comfy.org, which name
    our node ids, are not ours: the test browser has no internet)."""
    return [e for e in report.get("console_errors", [])
            if "latentsync" in e.lower() and "api.comfy.org" not in e]


def test_every_pack_node_type_is_used_by_some_workflow():
    used = {n["type"] for p in UI_WORKFLOWS for n in cs.load_json(p)["nodes"]}
    assert set(HELP_NODE.values()) <= used
    assert sorted(p.stem for p in UI_WORKFLOWS) == sorted(HELP_NODE)


# Queued from the page: the workflows whose nodes draw every kind of report of the web extension (the lip-sync VIDEO
# node, the modular nodes, the score nodes, both loaders' notes; the Images node is queued from the page by
# test_frames_without_a_face_warn_in_the_ui). For every workflow the page's own prompt (`app.graphToPrompt()`, what
# Queue sends) must equal its API twin with the same test overrides, and every API twin runs over HTTP
# (integration/test_workflows_api.py; the video one unchanged by the README's curl example): so each UI workflow is
# proven to run without queueing all four from a browser (CI time).
PAGE_RUNS = {"latentsync_modular", "latentsync_score"}


def page_overrides() -> dict:
    return {**cs.TEST_OVERRIDES, ("*", "seed"): BROWSER_SEED}


FRONTEND_WIDGETS = {"video-preview", "audioUI"}  # the frontend's own preview widgets, ignored by the server


def page_prompt_is_twin(page: dict, twin: dict, object_info: dict) -> None:
    """The page's prompt has the twin's nodes and every input of the twin with the same value; an input the twin
    leaves out is an optional input at its default (added to the pack after the twin was exported: the server fills
    in the same default) or a frontend preview widget."""
    assert {k: v["class_type"] for k, v in page.items()} == {k: v["class_type"] for k, v in twin.items()}
    for key, node in twin.items():
        inputs = page[key]["inputs"]
        assert {n: inputs.get(n) for n in node["inputs"]} == node["inputs"], (key, node["class_type"])
        optional = object_info[node["class_type"]]["input"].get("optional", {})
        for name, value in inputs.items():
            if name in node["inputs"] or name in FRONTEND_WIDGETS:
                continue
            assert name in optional, (key, node["class_type"], name)
            spec = optional[name][1] if len(optional[name]) > 1 else {}
            assert value == spec.get("default"), (key, node["class_type"], name, value, spec.get("default"))


@pytest.mark.parametrize("workflow", UI_WORKFLOWS, ids=[p.stem for p in UI_WORKFLOWS])
def test_ui_workflow_loads_shows_help_and_queues_its_api_twin(comfy_server, browser, workflow):
    queue = workflow.stem in PAGE_RUNS
    if queue:
        cs.fresh_caches(comfy_server)  # every node runs (a loader answered from the cache would not report again)
    rc, report = browser_check(browser, workflow, SHOTS / f"{workflow.stem}.png", prompt=True, queue=queue,
                               help_node=HELP_NODE[workflow.stem], sets=cs.ui_overrides(page_overrides()))
    assert report["missing_node_types"] == [], report["missing_node_types"]
    assert not report["frontend_missing_dialog"], report["dialog_text"]
    assert all(s["changed"] >= 1 for s in report["set_widgets"] if s["name"] != "download_missing"), report["set_widgets"]
    assert report["help"]["ok"], report["help"]
    twin = cs.adapt_api(cs.load_json(REPO / "workflows" / "api" / workflow.name), page_overrides())
    page_prompt_is_twin(report["page_prompt"], twin, comfy_server.get("/object_info"))  # what Queue sends
    assert rc == 0, f"browser_check rc {rc}: {json.dumps({k: report.get(k) for k in ('queue_result', 'help')})}"
    assert own_console_errors(report) == []
    assert Path(report["screenshot"]).is_file() and Path(report["help"]["screenshot"]).is_file()
    if queue:
        check_page_run(comfy_server, workflow, report)


def check_page_run(comfy_server, workflow: Path, report: dict) -> None:
    assert report["queue_result"] == "success"
    cs.record_timing(f"browser_{workflow.stem}_total_s", report["total_s"])

    # what the page queued really ran: the saved video is as long as the audio
    outputs = report["queue_outputs"]
    videos = [comfy_server.output_file(i) for out in outputs.values() for i in out.get("images", [])
              if i["filename"].endswith(".mp4") and i["type"] == "output"]  # not the lip-sync node's preview
    assert len(videos) == 1, outputs
    info = cs.probe(videos[0])
    assert info["frames"] == cs.EXPECTED_FRAMES and info["fps"] == cs.FPS, info

    # the web extension received the node's report and drew it
    reports = report["node_reports"]
    assert reports, "no node shows a face report (web/js/latentsync.js)"
    assert all(r["report"]["with_face"] == cs.EXPECTED_FRAMES for r in reports), reports
    assert all(r["text"].startswith("\u2713 face found in all") for r in reports), reports
    if workflow.stem == "latentsync_score":  # the sync figures drawn on both score nodes and the lip-sync node
        syncs = sorted((r["type"], r["text"].split(": confidence")[0]) for r in report["sync_reports"])
        assert syncs == [("LatentSyncLipSyncVideo", "output sync"), ("LatentSyncSyncScore", "sync"),
                         ("LatentSyncSyncScore", "sync")], report["sync_reports"]
        assert all("(random weights)" in r["text"] for r in report["sync_reports"]), report["sync_reports"]
    # the face analyzer's `auto` says on the node what it chose and why (this server is offline, like `make serve`
    # without the model hub)
    (backend,) = report["backend_reports"]
    assert backend["type"] == "LatentSyncFaceAnalyzerLoader"
    assert backend["text"].startswith("auto \u2192 offline RetinaFace: buffalo_l is not in"), backend
    assert "HF_HUB_OFFLINE" in backend["text"]
    # the model loader says which version it loaded and how it knows
    (model,) = report["model_reports"]
    assert model["type"] == "LatentSyncModelLoader" and model["info"]["version"] == "1.5", model
    assert model["text"].startswith("LatentSync 1.5 (256 px faces), auto: from the folder name v1.5/"), model
    assert Path(report["screenshot_after_queue"]).is_file()


def test_frames_without_a_face_warn_in_the_ui(browser, tmp_path):
    """An API prompt loaded into the page (the frontend converts it), run from the page: the node shows the
    warning and a toast says which frames had no face."""
    prompt = tmp_path / "faceless_api.json"
    prompt.write_text(json.dumps(cs.faceless_prompt(seed=BROWSER_SEED)))
    rc, report = browser_check(browser, prompt, SHOTS / "faceless_warning.png", queue=True)
    assert rc == 0 and report["queue_result"] == "success", report.get("queue_result")
    (node_report,) = [r for r in report["node_reports"] if r["type"] == "LatentSyncLipSyncImages"]
    assert node_report["report"]["without_face"] == 3
    assert node_report["text"].startswith("\u26a0 no face in 3 of 6 frames")
    assert any("no face found in 3 of 6 frames" in t for t in report["toasts"]), report["toasts"]
    assert own_console_errors(report) == []


def test_template_browser_lists_and_opens_the_pack_workflows(browser):
    """The user's way to the examples: Templates -> Extensions -> ComfyUI-LatentSync shows every workflow in
    workflows/ with its thumbnail; clicking one loads it with every node type known."""
    browser.close_dialogs()
    page = browser.page
    page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
    page.get_by_text(cs.PACK_NAME, exact=True).click()
    page.wait_for_function("() => document.querySelectorAll('[data-testid^=\"template-workflow-\"] img').length >= 3"
                           " && Array.from(document.querySelectorAll('[data-testid^=\"template-workflow-\"] img'))"
                           ".every((i) => i.complete && i.naturalWidth > 0)", timeout=30_000)
    cards = page.evaluate("() => Array.from(document.querySelectorAll('[data-testid^=\"template-workflow-\"]'))"
                          ".map((c) => c.dataset.testid.replace('template-workflow-', ''))")
    page.screenshot(path=str(SHOTS / "template_browser.png"))
    assert sorted(cards) == sorted(p.stem for p in UI_WORKFLOWS)
    page.click('[data-testid="template-workflow-latentsync_video"]')
    page.wait_for_function("() => window.app.graph._nodes.some((n) => n.type === 'LatentSyncLipSyncVideo')",
                           timeout=30_000)
    types = page.evaluate("() => window.app.graph._nodes.map((n) => [n.type,"
                          " !!window.LiteGraph.registered_node_types[n.type]])")
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "template_opened.png"))
    assert sorted(t for t, _ in types) == sorted(n["type"] for n in cs.load_json(REPO / "workflows" /
                                                                             "latentsync_video.json")["nodes"])
    assert all(known for _, known in types)


MISSING_DIALOG_JS = """() => Array.from(document.querySelectorAll('.comfy-missing-models')).map((box) => ({
  text: box.innerText,
  buttons: Array.from(box.querySelectorAll('button')).map((b) => ({label: b.innerText, title: b.title,
                                                                   disabled: b.disabled})),
}))"""


def test_missing_models_dialog_offers_the_vae_download_only_when_it_is_absent(browser):
    """Every template carries ComfyUI's model metadata on its Load VAE node: with the tiny set (all official names
    present) the frontend finds nothing missing; when the vae folder's listing is empty, as on a fresh ComfyUI, its
    Missing Models dialog offers the download from Hugging Face, and nothing else (the LatentSync loaders download
    their own files)."""
    vae_url = hub.VAE_FILE.download_url
    page = browser.page
    try:
        for workflow in UI_WORKFLOWS:
            data = cs.load_json(workflow)
            (vae_node,) = [n for n in data["nodes"] if n["type"] == "VAELoader"]
            assert vae_node["properties"]["models"] == [{"name": hub.VAE_NAME, "url": vae_url, "directory": "vae"}]
            for hidden in (False, True):
                browser.hide_vae_listing = hidden
                browser.close_dialogs()
                browser.load(data, workflow.name)
                boxes = page.evaluate(MISSING_DIALOG_JS)
                if not hidden:
                    assert boxes == [], f"{workflow.name}: the frontend reports missing models: {boxes}"
                    continue
                page.screenshot(path=str(SHOTS / f"missing_models_{workflow.stem}.png"))
                assert len(boxes) == 1, boxes
                assert f"vae / {hub.VAE_NAME}" in boxes[0]["text"] and "latentsync" not in boxes[0]["text"]
                download = [b for b in boxes[0]["buttons"] if b["label"].startswith("Download")]
                assert download and download[0]["title"] == vae_url and not download[0]["disabled"], boxes
    finally:
        browser.hide_vae_listing = False
        browser.close_dialogs()
