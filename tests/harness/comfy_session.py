"""One real ComfyUI server per test session, with this pack, the tiny model set and the real media.

Used by tests/integration and tests/browser (the `comfy_server` fixture of tests/conftest.py calls `acquire()`, which
starts the server once per process; `release()` at session end stops it). The server runs from a fresh temp base
directory (never inside the repository): custom_nodes/ComfyUI-LatentSync -> the repo, models/ filled by `latentsync.tools.make_tiny`, input/
holding the media. HF_HUB_OFFLINE=1 so nothing can be downloaded.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import wave
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

HARNESS = Path(__file__).resolve().parent
REPO = HARNESS.parents[1]
ARTIFACTS = Path(os.environ.get("LATENTSYNC_ARTIFACTS", REPO / "test-artifacts"))
PACK_NAME = "ComfyUI-LatentSync"
PYTHON = os.environ.get("COMFY_PYTHON", str(REPO / ".venv" / "bin" / "python"))

VIDEO = "clip_speaking_woman_frontal_350px_15fps.mp4"
SPEECH = "speech_cmu_arctic_a0009_16k.wav"
SPEECH_LONG = "speech_cmu_arctic_a0007_16k.wav"
SPEECH_SHORT = "speech_cmu_arctic_a0009_16k_first0.6s.wav"  # made by the fixture: the first 0.6 s of SPEECH
MEDIA = (VIDEO, SPEECH, SPEECH_LONG, "face_astronaut_skimage.png")
TINY_VAE = "latentsync_tiny_taesd.safetensors"
SHORT_SECONDS = 0.6


def http_json(url: str, data: dict | None = None, timeout: float = 30):
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read().decode()
    return json.loads(body) if body else None


def write_first_seconds(src: Path, dst: Path, seconds: float) -> None:
    """Copy the first `seconds` of a PCM wav (stdlib only)."""
    with wave.open(str(src), "rb") as r:
        params = r.getparams()
        frames = r.readframes(int(round(seconds * params.framerate)))
    with wave.open(str(dst), "wb") as w:
        w.setparams(params)
        w.writeframes(frames)


@dataclass
class ComfyServer:
    url: str
    base: Path
    log: Path
    pid: int
    ready_s: float
    models_s: float
    env: dict = field(default_factory=dict)

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    def get(self, path: str, timeout: float = 30):
        return http_json(self.url + path, timeout=timeout)

    def post(self, path: str, data: dict, timeout: float = 30):
        return http_json(self.url + path, data, timeout=timeout)

    def queue(self, prompt: dict, client_id: str | None = None) -> str:
        resp = self.post("/prompt", {"prompt": prompt, "client_id": client_id or str(uuid.uuid4())})
        if resp.get("node_errors"):
            raise AssertionError(f"prompt rejected: {json.dumps(resp['node_errors'])[:2000]}")
        return resp["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600, poll: float = 0.25) -> dict:
        """History entry of a finished prompt (success, error or interrupted)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            h = self.get(f"/history/{prompt_id}")
            entry = h.get(prompt_id) if h else None
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"].get("completed") or entry["status"].get("status_str") == "error"):
                return entry
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s; log tail:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 600) -> tuple[dict, float]:
        t0 = time.time()
        pid = self.queue(prompt)
        entry = self.wait(pid, timeout)
        return entry, time.time() - t0

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def output_file(self, item: dict) -> Path:
        """Path of a saved output described by a history `ui` item ({filename, subfolder, type})."""
        folder = {"output": self.output_dir, "temp": self.base / "temp", "input": self.input_dir}[item.get("type", "output")]
        return folder / item.get("subfolder", "") / item["filename"]


_SERVER: ComfyServer | None = None
_FAILED: str | None = None


def _make_models(models: Path) -> float:
    t0 = time.time()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([PYTHON, "-m", "latentsync.tools.make_tiny", "--out", str(models)], cwd=str(REPO),
                          env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"make_tiny failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.time() - t0


def start(media_dir: Path) -> ComfyServer:
    base = Path(tempfile.mkdtemp(prefix="latentsync-comfy-"))
    models_s = _make_models(base / "models")
    (base / "input").mkdir(parents=True, exist_ok=True)
    for name in MEDIA:
        src = media_dir / name
        if not src.is_file():
            raise FileNotFoundError(f"missing shared media {src}")
        shutil.copy2(src, base / "input" / name)
    write_first_seconds(media_dir / SPEECH, base / "input" / SPEECH_SHORT, SHORT_SECONDS)
    env = dict(os.environ, HF_HUB_OFFLINE="1", COMFY_PYTHON=PYTHON)
    env.pop("COMFY_ROOT", None)
    cmd = ["bash", str(HARNESS / "start_comfy.sh"), "-n", f"{REPO}={PACK_NAME}", "-b", str(base), "--strict",
           "--timeout", "240"]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        log = base / "server.log"
        tail = log.read_text(errors="replace")[-6000:] if log.exists() else ""
        raise RuntimeError(f"start_comfy.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{tail}")
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return ComfyServer(url=values["COMFY_URL"], base=Path(values["COMFY_BASE"]), log=Path(values["COMFY_LOG"]),
                       pid=int(values["COMFY_PID"]), ready_s=float(values.get("COMFY_READY_S", time.time() - t0)),
                       models_s=models_s, env=values)


def acquire(media_dir: Path) -> ComfyServer:
    """The session's server (started on first use). A failed start is remembered, not retried per test."""
    global _SERVER, _FAILED
    if _SERVER is not None:
        return _SERVER
    if _FAILED is not None:
        raise RuntimeError(_FAILED)
    try:
        _SERVER = start(media_dir)
    except Exception as exc:
        _FAILED = f"ComfyUI did not start: {exc}"
        raise
    return _SERVER


def release() -> None:
    """Stop the session's server, keep its log under test-artifacts/, delete its temp base directory."""
    global _SERVER
    server, _SERVER = _SERVER, None
    if server is None:
        return
    subprocess.run(["bash", str(HARNESS / "stop_comfy.sh"), str(server.base)], capture_output=True, timeout=60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if server.log.exists():
        shutil.copy2(server.log, ARTIFACTS / "server.log")
    if str(server.base).startswith(tempfile.gettempdir()) and server.base.name.startswith("latentsync-comfy-"):
        shutil.rmtree(server.base, ignore_errors=True)


def load_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


if __name__ == "__main__":  # manual use: start a server like the tests do and print where it is
    srv = start(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "media")
    print(json.dumps({"url": srv.url, "base": str(srv.base), "log": str(srv.log), "ready_s": srv.ready_s,
                      "models_s": srv.models_s}))


# ---------------------------------------------------------------------------------------------------------------
# what the tests change in the shipped workflows (and nothing else): files of the tiny model set / test media,
# no downloads, few sampling steps. Keys: (class_type or "*", input name).

TEST_STEPS = 3
TEST_OVERRIDES: dict[tuple[str, str], object] = {
    ("VAELoader", "vae_name"): TINY_VAE,  # the tiny set's random TAESD, read by ComfyUI's own Load VAE
    ("LatentSyncFaceAnalyzerLoader", "backend"): "offline",  # insightface would need a download
    ("*", "download_missing"): False,
    ("LoadAudio", "audio"): SPEECH_SHORT,  # 0.6 s of the real speech: 9 frames at 15 fps, one window
    ("*", "steps"): TEST_STEPS,
}


def adapt_api(prompt: dict, overrides: dict | None = None) -> dict:
    """A copy of an API-format prompt with TEST_OVERRIDES (or `overrides`) applied to literal inputs."""
    overrides = TEST_OVERRIDES if overrides is None else overrides
    out = json.loads(json.dumps(prompt))
    for node in out.values():
        for (cls, name), value in overrides.items():
            if cls in ("*", node["class_type"]) and name in node["inputs"] and not isinstance(node["inputs"][name], list):
                node["inputs"][name] = value
    return out


def ui_overrides(overrides: dict | None = None) -> list[str]:
    """The same overrides as browser_check.py --set arguments (TYPE.WIDGET=JSON)."""
    overrides = TEST_OVERRIDES if overrides is None else overrides
    return [f"{cls}.{name}={json.dumps(value)}" for (cls, name), value in overrides.items()]


def record_timing(key: str, value) -> None:
    """Measured figures of this run, kept in test-artifacts/timings.json (merged across tests)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "timings.json"
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
    data[key] = value
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# checks shared by the API, cancel and browser tests

FPS = Fraction(15)  # the shared clip's frame rate
EXPECTED_FRAMES = round(SHORT_SECONDS * FPS)  # output = as long as the audio: 0.6 s at 15 fps = 9 frames


def fresh_caches(server) -> None:
    """POST /free: ComfyUI drops its node-output cache and unloads models, so the next run does all the work."""
    server.post("/free", {"unload_models": True, "free_memory": True})
    time.sleep(1.0)  # the flag is handled by the prompt worker between prompts


def probe(path: Path) -> dict:
    """Frame count (decoded), frame rate, size and audio duration of a video file."""
    import av  # noqa: PLC0415

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        out = {"fps": Fraction(v.average_rate), "width": v.codec_context.width, "height": v.codec_context.height}
        out["frames"] = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        out["sample_rate"] = a.sample_rate
        out["audio_s"] = float(a.duration * a.time_base) if a.duration else sum(
            f.samples for f in c.decode(audio=0)) / a.sample_rate
    return out


def saved_videos(entry: dict, prompt: dict, server) -> list[Path]:
    paths = []
    for node_id, node in prompt.items():
        if node["class_type"] == "SaveVideo":
            for item in entry["outputs"][node_id]["images"]:
                paths.append(server.output_file(item))
    return paths


def face_reports(entry: dict) -> list[dict]:
    return [r for out in entry["outputs"].values() for r in out.get("latentsync_faces", [])]


def assert_success(entry: dict, server) -> None:
    status = entry["status"]
    if status["status_str"] != "success":
        errors = [m for kind, m in status["messages"] if kind == "execution_error"]
        detail = "\n".join(f"{m['node_type']}: {m['exception_message']}\n{''.join(m['traceback'])[-2000:]}"
                           for m in errors)
        raise AssertionError(f"prompt failed: {detail or status}\n--- server log ---\n{server.log_tail()}")


FACELESS_ORDER = [0, 1, 1, 0, 0, 1, 1, 0, 0]  # ping-pong over [photo, black frame] for 9 output frames
FACELESS_SAVE_NODE = "10"


def faceless_prompt(seed: int) -> dict:
    """API prompt: [real photo with a face, black frame] + 0.6 s of speech -> Lip Sync (Images) -> Save Image."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "face_astronaut_skimage.png"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": 0}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": {"class_type": "LoadAudio", "inputs": {"audio": SPEECH_SHORT}},
        "5": {"class_type": "LatentSyncModelLoader", "inputs": {"checkpoint": "v1.5/latentsync_unet.pt",
                                                                "version": "auto", "dtype": "auto",
                                                                "download_missing": False}},
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": TINY_VAE}},
        "7": {"class_type": "LatentSyncWhisperLoader", "inputs": {"whisper": "whisper/tiny.pt",
                                                                  "download_missing": False}},
        "8": {"class_type": "LatentSyncFaceAnalyzerLoader", "inputs": {"backend": "offline",
                                                                       "download_missing": False}},
        "9": {"class_type": "LatentSyncLipSyncImages", "inputs": {
            "images": ["3", 0], "audio": ["4", 0], "frame_rate": 15.0, "model": ["5", 0], "vae": ["6", 0],
            "whisper": ["7", 0], "face_analyzer": ["8", 0], "seed": seed, "steps": TEST_STEPS, "guidance": 1.5,
            "deepcache": True, "deepcache_interval": 3}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "test/noface"}},
    }


# ---------------------------------------------------------------------------------------------------------------
# the server's memory (Linux /proc): resident now, and the peak since the last reset

def process_memory(pid: int, field: str = "VmRSS") -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(f"{field} not in /proc/{pid}/status")


def reset_peak_memory(pid: int) -> None:
    """Start a new peak: VmHWM becomes the current RSS (Linux >= 4.0: write 5 to /proc/PID/clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


FACELESS_LIPSYNC_NODE = "9"  # the Lip Sync (Images) node of faceless_prompt
