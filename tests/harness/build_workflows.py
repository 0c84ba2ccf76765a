#!/usr/bin/env python3
"""Build the pack's example workflows in the REAL ComfyUI frontend (headless Chromium) and write both formats:

    workflows/<name>.json        UI format (what File > Open / the template browser load), from app.graph.serialize()
    workflows/<name>.jpg         its thumbnail in the template browser
    workflows/api/<name>.json    API format twin (for POST /prompt), from app.graphToPrompt()

The graphs are declared below (node types, widget values by name, links by slot name, the model files a loader
names); the frontend fills in everything else from the live node schemas, so the saved JSON is exactly what this
frontend version produces and the two formats cannot drift apart. Regenerate every template, API twin and their
model metadata after a node schema changes (one command; it starts its own server the way `make serve` does without
the model hub, or uses --url), then review the diff:

    .venv/bin/python tests/harness/build_workflows.py [--url http://127.0.0.1:PORT] [--only NAME...] [--no-thumbnails]

Every workflow names the demo media that `make serve` / `make demo` put in ComfyUI's input/ folder and model files
that exist under the same names in the official set and in the tiny random set. Loaders whose file ComfyUI itself
cannot download (Load VAE) carry ComfyUI's model metadata (`properties.models`: name, url, directory), so a fresh
ComfyUI's missing-models dialog offers the download; the LatentSync loaders download their own files on first use.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

HARNESS = Path(__file__).resolve().parent
REPO = HARNESS.parents[1]
sys.path[:0] = [str(REPO), str(HARNESS)]

import comfy_serve  # noqa: E402
from latentsync import hub  # noqa: E402  (plain library: no ComfyUI import)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

VIDEO = comfy_serve.DEMO_VIDEO
SPEECH = comfy_serve.DEMO_AUDIO
VAE = hub.VAE_NAME
SAMPLING = {"seed": 1247, "control_after_generate": "fixed", "steps": 20, "guidance": 1.5, "deepcache": True,
            "deepcache_interval": 3}


def model_entry(file: hub.ModelFile) -> dict:
    """ComfyUI's model metadata for one file (what its own templates carry): the frontend lists the file in its
    missing-models dialog when `directory` lacks it, with a download button for huggingface.co `.safetensors` URLs."""
    directory, _, name = file.relpath.partition("/")
    return {"name": name, "url": file.download_url, "directory": directory}


MODELS_NOTE = """## LatentSync models

Put these files in ComfyUI's `models/` folder. The LatentSync ones are **downloaded on first use** when
*download_missing* is on; the VAE is offered by ComfyUI's missing-models dialog when it is absent:

| file | from |
|---|---|
| `latentsync/v1.5/latentsync_unet.pt` (or `v1.6/`) | ByteDance/LatentSync-1.5 (1.6) on Hugging Face |
| `latentsync/whisper/tiny.pt` | ByteDance/LatentSync-1.6, `whisper/tiny.pt` |
| `latentsync/mask.png` | the LatentSync repository |
| `vae/vae-ft-mse-840000-ema-pruned.safetensors` | stabilityai/sd-vae-ft-mse-original (ComfyUI's Load VAE) |
| `insightface/models/buffalo_l/` | InsightFace (non-commercial licence); optional |

Face analyzer *auto* uses InsightFace when buffalo_l is there (or can be downloaded) and the offline RetinaFace
(MIT) otherwise; the node shows which and why. Choose *offline* for commercial use.

The result is as long as the audio: a shorter video is played forward and backward to cover it.
Frames without a face are passed through unchanged (a warning shows on the node).
"""


SCORE_NOTE = """
## Sync scores

*LatentSync Sync Score* rates lip sync with SyncNet-v2 as the official evaluation does
(`latentsync/auxiliary/syncnet_v2.model`, from ByteDance/LatentSync-1.5, downloaded on first use):
**confidence** (LSE-C, higher is better), **distance** (LSE-D, lower is better) and the **offset** in frames at
25 fps (0 = in sync). Bottom left: the original clip against the new speech; right: the lip-synced result.
The figures show under each score node; the plots show the distance at each offset and the confidence over time.
The lip-sync node's own *score* switch is on too: it shows the output's figures on that node.
"""


def loaders(x: int, y: int) -> list[dict]:
    return [
        {"id": "model", "type": "LatentSyncModelLoader", "pos": [x, y], "size": [330, 160],
         "widgets": {"checkpoint": "v1.5/latentsync_unet.pt", "version": "auto", "dtype": "auto",
                     "download_missing": True}},
        {"id": "vae", "type": "VAELoader", "pos": [x, y + 200], "size": [330, 60], "widgets": {"vae_name": VAE},
         "models": [model_entry(hub.VAE_FILE)]},
        {"id": "whisper", "type": "LatentSyncWhisperLoader", "pos": [x, y + 300], "size": [330, 90],
         "widgets": {"whisper": "whisper/tiny.pt", "download_missing": True}},
        {"id": "faces_loader", "type": "LatentSyncFaceAnalyzerLoader", "pos": [x, y + 430], "size": [330, 90],
         "widgets": {"backend": "auto", "download_missing": True}},
    ]


def note(x: int, y: int, text: str = MODELS_NOTE, size=(400, 560)) -> dict:
    return {"id": "note", "type": "MarkdownNote", "pos": [x, y], "size": list(size), "widgets": {"text": text}}


WORKFLOWS = {
    # (a) one node: VIDEO + AUDIO -> VIDEO with ComfyUI's own Load Video / Load Audio / Save Video
    "latentsync_video": {
        "nodes": [
            note(0, 0),
            {"id": "video", "type": "LoadVideo", "pos": [440, 0], "widgets": {"file": VIDEO}},
            {"id": "audio", "type": "LoadAudio", "pos": [440, 420], "widgets": {"audio": SPEECH}},
            *loaders(800, 0),
            {"id": "sync", "type": "LatentSyncLipSyncVideo", "pos": [1180, 0], "widgets": SAMPLING},
            {"id": "save", "type": "SaveVideo", "pos": [1580, 0], "size": [360, 420],
             "widgets": {"filename_prefix": "video/LatentSync", "format": "auto", "codec": "auto"}},
        ],
        "links": [
            ("video", "VIDEO", "sync", "video"), ("audio", "AUDIO", "sync", "audio"),
            ("model", "model", "sync", "model"), ("vae", "VAE", "sync", "vae"),
            ("whisper", "whisper", "sync", "whisper"), ("faces_loader", "face_analyzer", "sync", "face_analyzer"),
            ("sync", "video", "save", "video"),
        ],
        "groups": [],
    },
    # (b) the modular graph: one node per stage, ordinary ComfyUI types in between
    "latentsync_modular": {
        "nodes": [
            note(0, 0),
            {"id": "video", "type": "LoadVideo", "pos": [440, 0], "widgets": {"file": VIDEO}},
            {"id": "components", "type": "GetVideoComponents", "pos": [440, 420]},
            {"id": "audio", "type": "LoadAudio", "pos": [440, 560], "widgets": {"audio": SPEECH}},
            *loaders(800, 0),
            {"id": "loop", "type": "LatentSyncLoopToAudio", "pos": [1170, 0], "size": [330, 130]},
            {"id": "detect", "type": "LatentSyncDetectFaces", "pos": [1170, 180], "size": [330, 170],
             "widgets": {"face_selection": "largest", "face_index": 0}},
            {"id": "preview", "type": "PreviewImage", "pos": [1170, 400], "size": [330, 300]},
            {"id": "embed", "type": "LatentSyncAudioEmbeddings", "pos": [1540, 0], "size": [330, 150]},
            {"id": "encode", "type": "LatentSyncMaskLatents", "pos": [1540, 200], "size": [330, 80]},
            {"id": "sampler", "type": "LatentSyncSampler", "pos": [1540, 330], "size": [330, 260],
             "widgets": {k: v for k, v in SAMPLING.items()}},
            {"id": "decode", "type": "LatentSyncDecode", "pos": [1910, 0], "size": [300, 100]},
            {"id": "paste", "type": "LatentSyncPasteFaces", "pos": [1910, 150], "size": [300, 100]},
            {"id": "create", "type": "CreateVideo", "pos": [1910, 300], "size": [300, 100]},
            {"id": "save", "type": "SaveVideo", "pos": [2250, 0], "size": [360, 420],
             "widgets": {"filename_prefix": "video/LatentSync_modular", "format": "auto", "codec": "auto"}},
        ],
        "links": [
            ("video", "VIDEO", "components", "video"),
            ("components", "images", "loop", "images"), ("audio", "AUDIO", "loop", "audio"),
            ("components", "fps", "loop", "frame_rate"),
            ("faces_loader", "face_analyzer", "detect", "face_analyzer"), ("model", "model", "detect", "model"),
            ("loop", "images", "detect", "images"),
            ("detect", "aligned", "preview", "images"),
            ("whisper", "whisper", "embed", "whisper"), ("loop", "audio", "embed", "audio"),
            ("components", "fps", "embed", "frame_rate"), ("loop", "frame_count", "embed", "frame_count"),
            ("detect", "faces", "encode", "faces"), ("vae", "VAE", "encode", "vae"),
            ("model", "model", "sampler", "model"), ("encode", "face_latents", "sampler", "face_latents"),
            ("embed", "audio_embeds", "sampler", "audio_embeds"),
            ("vae", "VAE", "decode", "vae"), ("sampler", "latent", "decode", "latent"),
            ("encode", "face_latents", "decode", "face_latents"),
            ("loop", "images", "paste", "images"), ("detect", "faces", "paste", "faces"),
            ("decode", "faces", "paste", "generated"),
            ("paste", "images", "create", "images"), ("components", "fps", "create", "fps"),
            ("loop", "audio", "create", "audio"),
            ("create", "VIDEO", "save", "video"),
        ],
        "groups": [],
    },
    # (c) IMAGE batch + AUDIO + frame rate -> IMAGE + AUDIO
    "latentsync_image_batch": {
        "nodes": [
            note(0, 0),
            {"id": "video", "type": "LoadVideo", "pos": [440, 0], "widgets": {"file": VIDEO}},
            {"id": "components", "type": "GetVideoComponents", "pos": [440, 420]},
            {"id": "audio", "type": "LoadAudio", "pos": [440, 560], "widgets": {"audio": SPEECH}},
            *loaders(800, 0),
            {"id": "sync", "type": "LatentSyncLipSyncImages", "pos": [1180, 0], "widgets": SAMPLING},
            {"id": "create", "type": "CreateVideo", "pos": [1580, 0], "size": [300, 100]},
            {"id": "save", "type": "SaveVideo", "pos": [1580, 150], "size": [360, 420],
             "widgets": {"filename_prefix": "video/LatentSync_images", "format": "auto", "codec": "auto"}},
        ],
        "links": [
            ("video", "VIDEO", "components", "video"),
            ("components", "images", "sync", "images"), ("audio", "AUDIO", "sync", "audio"),
            ("components", "fps", "sync", "frame_rate"),
            ("model", "model", "sync", "model"), ("vae", "VAE", "sync", "vae"),
            ("whisper", "whisper", "sync", "whisper"), ("faces_loader", "face_analyzer", "sync", "face_analyzer"),
            ("sync", "images", "create", "images"), ("components", "fps", "create", "fps"),
            ("sync", "audio", "create", "audio"),
            ("create", "VIDEO", "save", "video"),
        ],
        "groups": [],
    },
    # (d) lip-sync the demo clip and score the input (original mouth vs the new speech) and the output side by side
    "latentsync_score": {
        "nodes": [
            note(0, 0, MODELS_NOTE + SCORE_NOTE, size=(400, 760)),
            {"id": "video", "type": "LoadVideo", "pos": [440, 0], "widgets": {"file": VIDEO}},
            {"id": "audio", "type": "LoadAudio", "pos": [440, 420],
             "widgets": {"audio": SPEECH}},
            *loaders(800, 0),
            {"id": "syncnet", "type": "LatentSyncSyncNetLoader", "pos": [800, 560], "size": [330, 90],
             "widgets": {"syncnet": "auxiliary/syncnet_v2.model", "download_missing": True}},
            {"id": "sync", "type": "LatentSyncLipSyncVideo", "pos": [1180, 0], "widgets": {**SAMPLING, "score": True}},
            {"id": "save", "type": "SaveVideo", "pos": [1580, 0], "size": [360, 420],
             "widgets": {"filename_prefix": "video/LatentSync_scored", "format": "auto", "codec": "auto"}},
            {"id": "score_in", "type": "LatentSyncSyncScore", "pos": [1180, 560], "size": [330, 230],
             "widgets": {"face_selection": "largest", "face_index": 0}},
            {"id": "score_out", "type": "LatentSyncSyncScore", "pos": [1980, 0], "size": [330, 230],
             "widgets": {"face_selection": "largest", "face_index": 0}},
            {"id": "plot_in", "type": "PreviewImage", "pos": [1180, 900], "size": [560, 420]},
            {"id": "plot_out", "type": "PreviewImage", "pos": [1980, 340], "size": [560, 420]},
        ],
        "links": [
            ("video", "VIDEO", "sync", "video"), ("audio", "AUDIO", "sync", "audio"),
            ("model", "model", "sync", "model"), ("vae", "VAE", "sync", "vae"),
            ("whisper", "whisper", "sync", "whisper"), ("faces_loader", "face_analyzer", "sync", "face_analyzer"),
            ("sync", "video", "save", "video"),
            ("syncnet", "syncnet", "score_in", "syncnet"),
            ("faces_loader", "face_analyzer", "score_in", "face_analyzer"),
            ("video", "VIDEO", "score_in", "video"), ("audio", "AUDIO", "score_in", "audio"),
            ("score_in", "plot", "plot_in", "images"),
            ("syncnet", "syncnet", "score_out", "syncnet"),
            ("faces_loader", "face_analyzer", "score_out", "face_analyzer"),
            ("sync", "video", "score_out", "video"),
            ("score_out", "plot", "plot_out", "images"),
        ],
        "groups": [],
    },
}

BUILD_JS = """
async (spec) => {
  const app = window.app, LG = window.LiteGraph;
  app.graph.clear();
  const made = {};
  const problems = [];
  for (const n of spec.nodes) {
    const node = LG.createNode(n.type);
    if (!node) { problems.push(`unknown node type ${n.type}`); continue; }
    node.pos = n.pos;
    app.graph.add(node);
    if (n.size) node.size = n.size;
    for (const [name, value] of Object.entries(n.widgets || {})) {
      const w = (node.widgets || []).find((w) => w.name === name);
      if (!w) { problems.push(`${n.type} has no widget ${name}`); continue; }
      w.value = value;
      if (w.callback) { try { w.callback(value); } catch (e) { /* upload widgets may try to fetch previews */ } }
    }
    if (n.models) node.properties = { ...(node.properties || {}), models: n.models };
    made[n.id] = node;
  }
  for (const [src, out, dst, inp] of spec.links) {
    const a = made[src], b = made[dst];
    if (!a || !b) { problems.push(`link ${src}.${out} -> ${dst}.${inp}: missing node`); continue; }
    let o = a.outputs.findIndex((s) => s.name === out || s.label === out);
    if (o < 0) o = a.outputs.findIndex((s) => s.type === out);
    const i = b.inputs.findIndex((s) => s.name === inp);
    if (o < 0 || i < 0) { problems.push(`link ${src}.${out}(${o}) -> ${dst}.${inp}(${i}): no such slot`); continue; }
    const link = a.connect(o, b, i);
    if (!link) problems.push(`link ${src}.${out} -> ${dst}.${inp} refused`);
  }
  app.graph.setDirtyCanvas(true, true);
  const workflow = app.graph.serialize();
  const prompt = await app.graphToPrompt();
  // JSON round trip in the page: undefined fields are dropped exactly as the frontend's own save does
  return { problems, workflow: JSON.stringify(workflow), api: JSON.stringify(prompt.output) };
}
"""


def write_thumbnail(page, workflow: dict, path: Path, size=(640, 360)) -> None:
    """The saved workflow as the frontend draws it (fit to view), cropped to the graph, as a small JPEG."""
    from PIL import Image

    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.Canvas.FitView'); }")
    page.wait_for_timeout(800)
    box = page.evaluate("""() => {
      const c = window.app.canvas, ds = c.ds, nodes = window.app.graph._nodes;
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (const n of nodes) {
        x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
        x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
      }
      const r = c.canvas.getBoundingClientRect();
      const sx = (x) => r.left + (x + ds.offset[0]) * ds.scale, sy = (y) => r.top + (y + ds.offset[1]) * ds.scale;
      return {x: sx(x0) - 10, y: sy(y0) - 10, width: sx(x1) - sx(x0) + 20, height: sy(y1) - sy(y0) + 20};
    }""")
    tmp = path.with_suffix(".png.part")
    page.screenshot(path=str(tmp), clip=box, type="png")
    with Image.open(tmp) as im:
        im = im.convert("RGB")
        im.thumbnail((size[0] * 2, size[1] * 2))
        canvas = Image.new("RGB", size, (32, 32, 32))
        im.thumbnail(size, Image.LANCZOS)
        canvas.paste(im, ((size[0] - im.width) // 2, (size[1] - im.height) // 2))
        canvas.save(path, "JPEG", quality=85, optimize=True)
    tmp.unlink()


def build(url: str, out: Path, only: list[str] | None, chromium: str, thumbnails: bool) -> int:
    (out / "api").mkdir(parents=True, exist_ok=True)
    host = urlparse(url).hostname
    rc = 0
    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="chromium-profile-") as prof:
        ctx = p.chromium.launch_persistent_context(prof, executable_path=chromium, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 2400, "height": 1300})
        ctx.add_init_script("try { localStorage.setItem('vueNodesBannerDismissed', 'true'); } catch (e) {}")
        ctx.route("**/*", lambda r: r.continue_() if urlparse(r.request.url).hostname in (host, "localhost",
                  "127.0.0.1") or r.request.url.startswith(("data:", "blob:")) else r.abort())
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.goto(url.rstrip("/") + "/", wait_until="domcontentloaded", timeout=120_000)
        page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph && "
                               "Object.keys(window.LiteGraph.registered_node_types || {}).length > 50",
                               timeout=120_000)
        page.wait_for_timeout(500)
        page.keyboard.press("Escape")
        for name, spec in WORKFLOWS.items():
            if only and name not in only:
                continue
            res = page.evaluate(BUILD_JS, spec)
            if res["problems"]:
                print(f"{name}: PROBLEMS {res['problems']}", file=sys.stderr)
                rc = 1
                continue
            wf = json.loads(res["workflow"])
            api = json.loads(res["api"])
            wf.setdefault("extra", {})["ds"] = {"scale": 0.55, "offset": [40, 60]}
            (out / f"{name}.json").write_text(json.dumps(wf, indent=2) + "\n", encoding="utf-8")
            (out / "api" / f"{name}.json").write_text(json.dumps(api, indent=2) + "\n", encoding="utf-8")
            print(f"{name}: {len(wf['nodes'])} nodes, {len(wf['links'])} links, {len(api)} API nodes")
            if thumbnails:
                write_thumbnail(page, wf, out / f"{name}.jpg")
        ctx.close()
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running ComfyUI with the pack (default: start one like `make serve` does, "
                                  "tiny model set, offline, and stop it afterwards)")
    ap.add_argument("--out", default=str(REPO / "workflows"))
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--no-thumbnails", action="store_true",
                    help="do not write <name>.jpg (the template browser's thumbnail of each workflow)")
    a = ap.parse_args()
    if a.url:
        return build(a.url, Path(a.out), a.only, a.chromium, not a.no_thumbnails)
    base = Path(tempfile.mkdtemp(prefix="latentsync-build-"))
    try:
        models = comfy_serve.tiny_models(base / "tiny-models")
        info = comfy_serve.launch(models, offline=True, base=base)
        return build(info["COMFY_URL"], Path(a.out), a.only, a.chromium, not a.no_thumbnails)
    finally:
        comfy_serve.stop(base)
        shutil.rmtree(base, ignore_errors=True)  # our own temporary folder


if __name__ == "__main__":
    sys.exit(main())
