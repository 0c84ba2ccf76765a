"""Peak resident memory against video length: the command line and the VIDEO node in a real ComfyUI.

    python -m bench.memory [--lengths 10 60 300] [--fps 25] [--size 1280x720] [--paths cli node]
                           [--repo PATH] [--cap-gib 8] [--json FILE] [--png FILE] [--label NAME] [--plot A.json B.json]

For each length a 720p video is made at run time (the shared speaking-face clip composited onto a textured
1280x720 background, H.264) with the real ARCTIC speech tiled to the same length, and the tiny random model set is
written. Then, per length:

  cli   `python -m latentsync --video V --audio A --out O --face-backend offline --steps 1` in a fresh process;
        its peak RSS is the ru_maxrss of that process (exact, measured by a small wrapper process).
  node  a fresh headless ComfyUI 0.3.75 with this pack queues Load Video + Load Audio -> LatentSync Lip Sync
        (Video) -> Save Video; the server's peak RSS is VmHWM of its process after the prompt (exact), minus
        nothing (the server's own baseline is reported beside it).

A watchdog kills a run whose RSS passes --cap-gib (default 8 GiB: the machine is shared) and the row says
"> cap". `--repo PATH` runs the code of another checkout (e.g. a worktree of an older commit) with this script, so
the same bench measures "before" and "after". Results are printed as a table, written as JSON (--json) and drawn as a
PNG (--png, PIL only). `--plot before.json after.json --png FILE` draws several saved runs into one figure.

Timings are printed for information only; they depend on the machine and on its load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import wave
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "harness"))
from comfy_session import http_json as _http  # noqa: E402  (stdlib only: the tests' ComfyUI HTTP helper)
SHARED_MEDIA = Path(os.environ.get("LATENTSYNC_SHARED", REPO_ROOT.parent / "shared")) / "media"
FACE_CLIP = "clip_speaking_woman_frontal_350px_15fps.mp4"
SPEECH = "speech_cmu_arctic_a0007_16k.wav"
GIB = 1024 ** 3

# ---------------------------------------------------------------------------------------------------------------
# media


def _face_frames(size: int) -> list[np.ndarray]:
    import av
    import cv2

    with av.open(str(SHARED_MEDIA / FACE_CLIP)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    frames = [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]
    return frames + frames[::-1]  # ping-pong: no jump when it repeats


def make_video(path: Path, seconds: float, fps: int, width: int, height: int, face_seconds: float | None = None,
               face_at_start: bool = True) -> None:
    """`seconds` of H.264 at `fps`: the face clip (scaled to 60 % of the height) on a textured background; with
    `face_seconds`, the face is there only in the first (unless not `face_at_start`) and the last `face_seconds` (the
    background alone between: frames that stream through every stage but the model's)."""
    import av

    face = _face_frames(int(height * 0.6) // 2 * 2)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) * 127 // (width + height))], -1)
    background = np.clip(background + rng.integers(-12, 13, background.shape), 0, 255).astype(np.uint8)
    fs = face[0].shape[0]
    y0, x0 = (height - fs) // 2, (width - fs) // 2
    count = int(round(seconds * fps))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "23"}
        edge = count if face_seconds is None else int(round(face_seconds * fps))
        for i in range(count):
            frame = background.copy()
            if (face_at_start and i < edge) or i >= count - edge:
                frame[y0:y0 + fs, x0:x0 + fs] = face[i % len(face)]
            c.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(s.encode(None))


def make_speech(path: Path, seconds: float) -> None:
    """The real ARCTIC sentence (16 kHz mono PCM16) repeated to `seconds`."""
    with wave.open(str(SHARED_MEDIA / SPEECH), "rb") as r:
        params = r.getparams()
        pcm = np.frombuffer(r.readframes(params.nframes), dtype=np.int16)
    need = int(round(seconds * params.framerate))
    tiled = np.tile(pcm, need // len(pcm) + 1)[:need]
    with wave.open(str(path), "wb") as w:
        w.setparams(params)
        w.writeframes(tiled.tobytes())


def make_models(repo: Path, out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(repo))
    subprocess.run([sys.executable, "-m", "latentsync.tools.make_tiny", "--out", str(out)], cwd=str(repo), env=env,
                   check=True, capture_output=True, timeout=900)


# ---------------------------------------------------------------------------------------------------------------
# measuring


def _rss(pid: int, field: str = "VmRSS") -> int:
    """VmRSS / VmHWM of a process in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Watchdog(threading.Thread):
    """Kills `pid` (its process group when `group`) when its RSS passes `cap` bytes."""

    def __init__(self, pid: int, cap: int, group: bool = False):
        super().__init__(daemon=True)
        self.pid, self.cap, self.group = pid, cap, group
        self.tripped = False
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(0.05):
            if _rss(self.pid) > self.cap:
                self.tripped = True
                try:
                    os.killpg(self.pid, signal.SIGKILL) if self.group else os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return

    def stop(self) -> None:
        self._stop.set()


# The wrapper runs one command and prints the peak RSS of its child (ru_maxrss of RUSAGE_CHILDREN: only that child
# was waited for in this wrapper process) as JSON on the last line. A watchdog thread enforces the cap.
_WRAPPER = r"""
import json, os, resource, signal, subprocess, sys, threading, time
cmd, cwd, cap = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
state = {"tripped": False}
def watch():
    while p.poll() is None:
        try:
            rss = next(int(l.split()[1]) * 1024 for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            rss = 0
        if rss > cap:
            state["tripped"] = True
            p.kill()
            return
        time.sleep(0.05)
threading.Thread(target=watch, daemon=True).start()
t0 = time.time()
_, err = p.communicate()
print(json.dumps({"rc": p.returncode, "seconds": time.time() - t0, "tripped": state["tripped"],
                  "peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, "stderr": err[-3000:]}))
"""


def peak_rss(cmd: list[str], cwd: Path, cap: int = 8 * GIB) -> dict:
    """Run `cmd` in a fresh process; {"rc", "seconds", "tripped" (killed at `cap` bytes), "peak" (bytes, exact
    ru_maxrss of that process), "stderr" (its tail)}."""
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, json.dumps(cmd), str(cwd), str(int(cap))],
                          capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_cli(repo: Path, models: Path, video: Path, audio: Path, out: Path, cap: int, steps: int) -> dict:
    cmd = [sys.executable, "-m", "latentsync", "--video", str(video), "--audio", str(audio), "--out", str(out),
           "--models", str(models), "--face-backend", "offline", "--steps", str(steps), "--device", "cpu",
           "--no-download"]
    result = peak_rss(cmd, repo, cap)
    status = "capped" if result["tripped"] else ("ok" if result["rc"] == 0 else "failed")
    out.unlink(missing_ok=True)
    return {"status": status, "peak_bytes": result["peak"], "seconds": round(result["seconds"], 1),
            "error": "" if status == "ok" else result["stderr"][-1500:]}


OFFICIAL_VAE = "vae-ft-mse-840000-ema-pruned.safetensors"  # the tiny set's file under the official name
OLD_TINY_VAE = "latentsync_tiny_taesd.safetensors"  # its name in tiny sets made before the official names


def tiny_vae_name(models: Path) -> str:
    """The VAE file Load VAE should pick in ``models`` (a tiny set made by the measured checkout's make_tiny)."""
    return OLD_TINY_VAE if (Path(models) / "vae" / OLD_TINY_VAE).is_file() else OFFICIAL_VAE


def video_prompt(video: str, audio: str, steps: int, vae_name: str = OFFICIAL_VAE) -> dict:
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": video}},
        "2": {"class_type": "LoadAudio", "inputs": {"audio": audio}},
        "3": {"class_type": "LatentSyncModelLoader", "inputs": {"checkpoint": "v1.5/latentsync_unet.pt",
                                                                "version": "auto", "dtype": "auto",
                                                                "download_missing": False}},
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": vae_name}},
        "5": {"class_type": "LatentSyncWhisperLoader", "inputs": {"whisper": "whisper/tiny.pt",
                                                                  "download_missing": False}},
        "6": {"class_type": "LatentSyncFaceAnalyzerLoader", "inputs": {"backend": "offline",
                                                                       "download_missing": False}},
        "7": {"class_type": "LatentSyncLipSyncVideo", "inputs": {
            "video": ["1", 0], "audio": ["2", 0], "model": ["3", 0], "vae": ["4", 0], "whisper": ["5", 0],
            "face_analyzer": ["6", 0], "seed": 1, "steps": steps, "guidance": 1.5, "deepcache": True,
            "deepcache_interval": 3}},
        "8": {"class_type": "SaveVideo", "inputs": {"video": ["7", 0], "filename_prefix": "bench/memory",
                                                    "format": "auto", "codec": "auto"}},
    }


def measure_node(repo: Path, models: Path, video: Path, audio: Path, cap: int, steps: int, work: Path) -> dict:
    base = Path(tempfile.mkdtemp(prefix="bench-memory-comfy-", dir=work))
    harness = REPO_ROOT / "tests" / "harness"
    env = dict(os.environ, HF_HUB_OFFLINE="1", COMFY_PYTHON=sys.executable,
               COMFY_MAIN=str(REPO_ROOT / ".comfy" / "ComfyUI" / "main.py"))
    env.pop("COMFY_ROOT", None)
    start = subprocess.run(["bash", str(harness / "start_comfy.sh"), "-n", f"{repo}=ComfyUI-LatentSync", "-m",
                            str(models), "-i", str(video), "-i", str(audio), "-b", str(base), "--strict",
                            "--timeout", "300"], env=env, capture_output=True, text=True, timeout=400)
    if start.returncode != 0:
        return {"status": "failed", "peak_bytes": 0, "seconds": 0, "error": start.stderr[-1500:]}
    values = dict(line.split("=", 1) for line in start.stdout.splitlines() if "=" in line)
    pid, url = int(values["COMFY_PID"]), values["COMFY_URL"]
    baseline = _rss(pid)
    dog = Watchdog(pid, cap, group=True)
    dog.start()
    t0 = time.time()
    status, error = "failed", ""
    try:
        resp = _http(url + "/prompt", {"prompt": video_prompt(video.name, audio.name, steps, tiny_vae_name(models)),
                                       "client_id": str(uuid.uuid4())})
        prompt_id = resp["prompt_id"]
        while True:
            if dog.tripped:
                status = "capped"
                break
            try:
                entry = (_http(url + f"/history/{prompt_id}") or {}).get(prompt_id)
            except OSError:
                entry = None
                if dog.tripped or _rss(pid) == 0:
                    status = "capped" if dog.tripped else "failed"
                    error = "the server died"
                    break
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"]["completed"] or entry["status"].get("status_str") == "error"):
                status = "ok" if entry["status"]["status_str"] == "success" else "failed"
                if status == "failed":
                    error = json.dumps(entry["status"]["messages"])[-1500:]
                break
            time.sleep(0.5)
        peak = _rss(pid, "VmHWM")
    finally:
        dog.stop()
        seconds = time.time() - t0
        subprocess.run(["bash", str(harness / "stop_comfy.sh"), str(base)], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
    if status == "capped":
        peak = cap
    return {"status": status, "peak_bytes": peak, "baseline_bytes": baseline, "seconds": round(seconds, 1),
            "error": error}


# ---------------------------------------------------------------------------------------------------------------
# report


def _cell(r: dict, cap: int) -> str:
    if r["status"] == "capped":
        return f"> {cap / GIB:.1f} GiB (stopped)"
    if r["status"] != "ok":
        return "failed"
    return f"{r['peak_bytes'] / GIB:.2f} GiB"


def print_table(results: dict, cap: int) -> None:
    paths = sorted({p for length in results.values() for p in length})
    print(f"| video length | " + " | ".join(f"{p}: peak RSS (time)" for p in paths) + " |")
    print("|---|" + "---|" * len(paths))
    for length, row in results.items():
        cells = [f"{_cell(row[p], cap)} ({row[p]['seconds']:.0f} s)" if p in row else "" for p in paths]
        print(f"| {length} s | " + " | ".join(cells) + " |")


def draw_png(runs: list[dict], path: Path) -> None:
    """Peak RSS (GiB) against video length (s), one line per (run label, path); capped points drawn hollow."""
    from PIL import Image, ImageDraw

    w, h, left, right, top, bottom = 900, 560, 80, 240, 40, 60
    series = []
    for run in runs:
        for p in ("cli", "node"):
            pts = [(float(length), run["results"][length][p]) for length in run["results"] if p in run["results"][length]]
            if pts:
                series.append((f"{run['label']} {p}", pts, run["cap_bytes"]))
    xmax = max(x for _, pts, _ in series for x, _ in pts)
    ymax = max(r["peak_bytes"] for _, pts, _ in series for _, r in pts) / GIB
    ymax = max(1.0, ymax * 1.1)
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    px = lambda x: left + (w - left - right) * x / xmax  # noqa: E731
    py = lambda y: h - bottom - (h - top - bottom) * y / ymax  # noqa: E731
    d.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill="black")
    for i in range(6):
        y = ymax * i / 5
        d.line([(left - 4, py(y)), (left, py(y))], fill="black")
        d.text((8, py(y) - 6), f"{y:.1f} GiB", fill="black")
    for x in sorted({x for _, pts, _ in series for x, _ in pts}):
        d.line([(px(x), h - bottom), (px(x), h - bottom + 4)], fill="black")
        d.text((px(x) - 12, h - bottom + 8), f"{x:.0f} s", fill="black")
    first = runs[0]
    d.text((left, 10), f"peak resident memory vs video length ({first['size']} at {first['fps']} fps, tiny models, "
                       f"{first['steps']} step); hollow = killed at the cap", fill="black")
    colours = ["#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]
    for k, (name, pts, _cap) in enumerate(series):
        c = colours[k % len(colours)]
        xy = [(px(x), py(r["peak_bytes"] / GIB)) for x, r in pts if r["status"] in ("ok", "capped")]
        if len(xy) > 1:
            d.line(xy, fill=c, width=3)
        for (x, r) in pts:
            if r["status"] not in ("ok", "capped"):
                continue
            cx, cy = px(x), py(r["peak_bytes"] / GIB)
            d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], outline=c, fill=c if r["status"] == "ok" else "white", width=2)
            if r["status"] == "capped":
                d.text((cx + 8, cy - 6), "killed at cap", fill=c)
        ly = top + 20 * k
        d.line([(w - right + 20, ly + 6), (w - right + 45, ly + 6)], fill=c, width=3)
        d.text((w - right + 50, ly), name, fill="black")
    img.save(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=float, nargs="+", default=[10, 60, 300], help="video lengths in seconds")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT of the generated video")
    p.add_argument("--paths", nargs="+", choices=["cli", "node"], default=["cli", "node"])
    p.add_argument("--repo", type=Path, default=REPO_ROOT, help="checkout whose code is measured")
    p.add_argument("--cap-gib", type=float, default=8.0, help="kill a run whose RSS passes this")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--work", type=Path, default=None, help="folder for media, models and runs (default: a temp dir)")
    p.add_argument("--label", default=None, help="name of this run in the PNG legend")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--png", type=Path, default=None)
    p.add_argument("--plot", type=Path, nargs="+", default=None, help="only draw saved --json runs into --png")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.plot:
        runs = [json.loads(p.read_text()) for p in args.plot]
        draw_png(runs, args.png or Path("memory.png"))
        return 0
    width, height = (int(v) for v in args.size.lower().split("x"))
    cap = int(args.cap_gib * GIB)
    repo = args.repo.resolve()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# bench.memory: code of {repo}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{width}x{height} at {args.fps} fps; steps {args.steps}; cap {args.cap_gib} GiB; work {work}", flush=True)
    models = work / "models"
    if not (models / "TINY_MODEL_SET.txt").exists():
        make_models(repo, models)
    results: dict = {}
    for length in args.lengths:
        tag = f"{length:g}s"
        video, audio = work / f"video_{tag}_{height}p{args.fps}.mp4", work / f"speech_{tag}.wav"
        if not video.exists():
            t0 = time.time()
            make_video(video, length, args.fps, width, height)
            print(f"# made {video.name} in {time.time() - t0:.0f} s", flush=True)
        if not audio.exists():
            make_speech(audio, length)
        row = results.setdefault(f"{length:g}", {})
        if "cli" in args.paths:
            row["cli"] = measure_cli(repo, models, video, audio, work / f"out_{tag}.mp4", cap, args.steps)
            print(f"# {tag} cli: {row['cli']['status']} {row['cli']['peak_bytes'] / GIB:.2f} GiB "
                  f"{row['cli']['seconds']} s {row['cli']['error'][-300:]}", flush=True)
        if "node" in args.paths:
            row["node"] = measure_node(repo, models, video, audio, cap, args.steps, work)
            print(f"# {tag} node: {row['node']['status']} {row['node']['peak_bytes'] / GIB:.2f} GiB "
                  f"(server at start {row['node'].get('baseline_bytes', 0) / GIB:.2f} GiB) "
                  f"{row['node']['seconds']} s {row['node']['error'][-300:]}", flush=True)
    print_table(results, cap)
    run = {"label": args.label or repo.name, "repo": str(repo), "fps": args.fps, "size": args.size,
           "steps": args.steps, "cap_bytes": cap, "results": results}
    if args.json:
        args.json.write_text(json.dumps(run, indent=2) + "\n")
    if args.png:
        draw_png([run], args.png)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
