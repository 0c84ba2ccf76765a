"""Run the demo through a real headless ComfyUI: start a server the way `make serve` does (official models, else the
tiny random set, offline), queue the shipped one-node API workflow (workflows/api/latentsync_video.json) exactly as
it is - it names the demo media and the official model files, which both model sets have - wait, and copy the video
to output/.

    python scripts/comfy_demo.py [--models models] [--out output/demo_lipsync.mp4]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "harness"))

import comfy_serve  # noqa: E402

WORKFLOW = REPO / "workflows" / "api" / "latentsync_video.json"


def http(url: str, data: bytes | None = None, timeout: float = 30):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read().decode()
    return json.loads(body) if body else None


def saved_video(entry: dict) -> dict | None:
    return next((item for out in entry["outputs"].values() for key in ("images", "videos", "animated")
                 for item in out.get(key, []) if isinstance(item, dict)
                 and str(item.get("filename", "")).endswith(".mp4")), None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=REPO / "models")
    p.add_argument("--out", type=Path, default=REPO / "output" / "demo_lipsync.mp4")
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args(argv)
    log = lambda message: print("\n".join(f"[demo] {line}" for line in message.splitlines()), flush=True)  # noqa: E731
    models, tiny = comfy_serve.choose_models(args.models.resolve(), "1.5", log=log)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    base = Path(tempfile.mkdtemp(prefix="latentsync-demo-"))
    try:
        try:
            info = comfy_serve.launch(models, offline=tiny, base=base)
        except RuntimeError as exc:
            print(f"[demo] {exc}", file=sys.stderr)
            return 1
        url = info["COMFY_URL"]
        log(f"ComfyUI {url} (log {info['COMFY_LOG']})")
        t0 = time.time()
        resp = http(f"{url}/prompt", json.dumps({"prompt": json.loads(WORKFLOW.read_text()),
                                                 "client_id": str(uuid.uuid4())}).encode())
        if resp.get("node_errors"):
            print(json.dumps(resp["node_errors"], indent=1), file=sys.stderr)
            return 1
        prompt_id = resp["prompt_id"]
        log(f"queued {WORKFLOW.relative_to(REPO)} unchanged as {prompt_id} "
            f"(models: {'TINY RANDOM set' if tiny else 'official'})")
        while not (entry := (http(f"{url}/history/{prompt_id}") or {}).get(prompt_id)):
            if time.time() - t0 > args.timeout:
                print(f"[demo] timed out after {args.timeout:.0f} s", file=sys.stderr)
                return 1
            time.sleep(1.0)
        if entry["status"].get("status_str") != "success":
            print(json.dumps(entry["status"], indent=1)[-4000:], file=sys.stderr)
            return 1
        item = saved_video(entry)
        if item is None:
            print(f"[demo] the prompt finished but saved no video: {json.dumps(entry['outputs'])[:2000]}",
                  file=sys.stderr)
            return 1
        for out in entry["outputs"].values():
            for backend in out.get("latentsync_face_backend", []):
                log(f"face analyzer: {backend['backend']} ({backend['reason']})")
        src = base / item.get("type", "output") / item.get("subfolder", "") / item["filename"]
        tmp = args.out.with_name(f".{args.out.name}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, args.out)
        log(f"done in {time.time() - t0:.1f} s: {args.out}")
        if tiny:
            log("(tiny random model set: the mouth in this video is noise, by design)")
        return 0
    finally:
        comfy_serve.stop(base)
        shutil.rmtree(base, ignore_errors=True)  # our own temporary folder


if __name__ == "__main__":
    sys.exit(main())
