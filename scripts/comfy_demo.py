"""Run the demo through a real headless ComfyUI: start a server with this pack, queue the one-node API workflow
(workflows/api/latentsync_video.json) on the bundled clip and speech, wait, copy the video to output/.

    python scripts/comfy_demo.py --models DIR --version 1.5 [--out output/demo_lipsync.mp4]

Only the workflow's file names are changed (the demo media, the model set's files); its graph is the shipped one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "tests" / "harness"
WORKFLOW = REPO / "workflows" / "api" / "latentsync_video.json"
DEMO_VIDEO = "demo_clip_15fps.mp4"
DEMO_AUDIO = "demo_speech_arctic_a0007.wav"
TINY_MARKER = "TINY_MODEL_SET.txt"
TINY_VAE = "latentsync_tiny_taesd.safetensors"
OFFICIAL_VAES = ("vae-ft-mse-840000-ema-pruned.safetensors", "sd-vae-ft-mse/diffusion_pytorch_model.safetensors")


def http(url: str, data: dict | None = None, timeout: float = 30):
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read().decode()
    return json.loads(body) if body else None


def choose_vae(url: str, tiny: bool) -> str:
    listed = http(f"{url}/object_info/VAELoader")["VAELoader"]["input"]["required"]["vae_name"][0]
    wanted = (TINY_VAE,) if tiny else OFFICIAL_VAES
    for name in wanted:
        if name in listed:
            return name
    raise SystemExit(f"no usable VAE in the models folder: looked for {', '.join(wanted)}; ComfyUI lists {listed}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--version", choices=["1.5", "1.6"], default="1.5")
    p.add_argument("--face-backend", choices=["insightface", "offline"], default=None,
                   help="default: insightface when buffalo_l is in the models folder, else offline")
    p.add_argument("--out", type=Path, default=REPO / "output" / "demo_lipsync.mp4")
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args(argv)
    models = args.models.resolve()
    tiny = (models / TINY_MARKER).is_file()
    backend = args.face_backend or (
        "insightface" if (models / "insightface" / "models" / "buffalo_l" / "det_10g.onnx").is_file() else "offline")
    args.out.parent.mkdir(parents=True, exist_ok=True)

    base = Path(tempfile.mkdtemp(prefix="latentsync-demo-"))
    env = dict(os.environ, COMFY_PYTHON=str(REPO / ".venv" / "bin" / "python"))
    start = subprocess.run(["bash", str(HARNESS / "start_comfy.sh"), "-n", f"{REPO}=ComfyUI-LatentSync",
                            "-m", str(models), "-i", str(REPO / "assets" / "demo"), "-b", str(base), "--strict"],
                           env=env, capture_output=True, text=True)
    if start.returncode != 0:
        print(start.stdout, start.stderr, sep="\n", file=sys.stderr)
        return 1
    info = dict(line.split("=", 1) for line in start.stdout.splitlines() if "=" in line)
    url = info["COMFY_URL"]
    print(f"[demo] ComfyUI {url} (base {base}, log {info['COMFY_LOG']})", flush=True)
    try:
        prompt = json.loads(WORKFLOW.read_text())
        settings = {
            ("LoadVideo", "file"): DEMO_VIDEO,
            ("LoadAudio", "audio"): DEMO_AUDIO,
            ("VAELoader", "vae_name"): choose_vae(url, tiny),
            ("LatentSyncModelLoader", "checkpoint"): f"v{args.version}/latentsync_unet.pt",
            ("LatentSyncFaceAnalyzerLoader", "backend"): backend,
        }
        for node in prompt.values():
            for (cls, name), value in settings.items():
                if node["class_type"] == cls:
                    node["inputs"][name] = value
        t0 = time.time()
        resp = http(f"{url}/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
        if resp.get("node_errors"):
            print(json.dumps(resp["node_errors"], indent=1), file=sys.stderr)
            return 1
        pid = resp["prompt_id"]
        print(f"[demo] queued {pid} (models: {'TINY RANDOM set' if tiny else 'official'}, face backend {backend})",
              flush=True)
        while True:
            entry = (http(f"{url}/history/{pid}") or {}).get(pid)
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"]["completed"] or entry["status"].get("status_str") == "error"):
                break
            if time.time() - t0 > args.timeout:
                print(f"[demo] timed out after {args.timeout:.0f} s", file=sys.stderr)
                return 1
            time.sleep(1.0)
        if entry["status"].get("status_str") != "success":
            print(json.dumps(entry["status"], indent=1)[-4000:], file=sys.stderr)
            return 1
        saved = [item for out in entry["outputs"].values() for key in ("images", "videos", "animated")
                 for item in out.get(key, []) if isinstance(item, dict) and str(item.get("filename", "")).endswith(".mp4")]
        if not saved:
            print(f"[demo] the prompt finished but saved no video: {json.dumps(entry['outputs'])[:2000]}",
                  file=sys.stderr)
            return 1
        src = base / saved[0].get("type", "output") / saved[0].get("subfolder", "") / saved[0]["filename"]
        tmp = args.out.with_name(f".{args.out.name}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, args.out)
        print(f"[demo] done in {time.time() - t0:.1f} s: {args.out}", flush=True)
        if tiny:
            print("[demo] (tiny random model set: the mouth in this video is noise, by design)", flush=True)
        return 0
    finally:
        subprocess.run(["bash", str(HARNESS / "stop_comfy.sh"), str(base)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
