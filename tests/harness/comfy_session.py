"""One real ComfyUI server per test session, started the way `make serve` starts it on a machine without the model
hub: `comfy_serve.launch` with the tiny random model set, offline (HF_HUB_OFFLINE=1), the demo media in input/.

Used by tests/integration and tests/browser (the `comfy_server` fixture of tests/conftest.py calls `acquire()`, which
starts the server once per process; `release()` at session end stops it). The server runs from a fresh temp base
directory (never inside the repository): custom_nodes/ComfyUI-LatentSync -> the repo, models/ -> a tiny set made by
`latentsync.tools.make_tiny`, input/ holding the demo media plus the shared test media (the other tests use them).
"""
from __future__ import annotations

import json
import os
import re
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

import comfy_serve
from comfy_serve import DEMO_AUDIO, DEMO_VIDEO, PACK_NAME

HARNESS = Path(__file__).resolve().parent
REPO = HARNESS.parents[1]
ARTIFACTS = Path(os.environ.get("LATENTSYNC_ARTIFACTS", REPO / "test-artifacts"))
PYTHON = comfy_serve.PYTHON

VIDEO = "clip_speaking_woman_frontal_350px_15fps.mp4"
SPEECH = "speech_cmu_arctic_a0009_16k.wav"
SPEECH_LONG = "speech_cmu_arctic_a0007_16k.wav"
SPEECH_SHORT = "speech_cmu_arctic_a0009_16k_first0.4s.wav"  # made by the fixture: the first 0.4 s of SPEECH
MEDIA = (VIDEO, SPEECH, SPEECH_LONG, "face_astronaut_skimage.png")
OFFICIAL_VAE = "vae-ft-mse-840000-ema-pruned.safetensors"  # in the tiny set: a random TAESD for ComfyUI's Load VAE
SHORT_SECONDS = 0.4


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


def start(media_dir: Path) -> ComfyServer:
    """A server as `make serve` starts it without the model hub (tiny set, offline), plus the shared test media; the
    demo speech in its input/ is the first SHIPPED_SECONDS of the real one (the issue's "shorter inputs")."""
    from latentsync.tools.make_tiny import make_tiny_model_set

    base = Path(tempfile.mkdtemp(prefix="latentsync-comfy-"))
    t0 = time.time()
    # The files `make serve`'s `python -m latentsync.tools.make_tiny --resolution 256` writes (same function, seed 0),
    # written in this process, which imports torch and diffusers for its own tests anyway (CI time: a process of its
    # own spends about 9 s importing and exiting); comfy_serve.tiny_models then finds them in place.
    make_tiny_model_set(base / "tiny-models", resolution=256, seed=0)
    models = comfy_serve.tiny_models(base / "tiny-models", log=lambda _msg: None)
    models_s = time.time() - t0
    media = [media_dir / name for name in MEDIA]
    missing = [str(p) for p in media if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing shared media {', '.join(missing)}")
    values = comfy_serve.launch(models, offline=True, base=base, extra_inputs=media)
    write_first_seconds(media_dir / SPEECH, base / "input" / SPEECH_SHORT, SHORT_SECONDS)
    demo_speech = base / "input" / DEMO_AUDIO  # the shipped workflows' speech, cut short under its own name
    write_first_seconds(comfy_serve.DEMO_DIR / DEMO_AUDIO, demo_speech, SHIPPED_SECONDS)
    return ComfyServer(url=values["COMFY_URL"], base=Path(values["COMFY_BASE"]), log=Path(values["COMFY_LOG"]),
                       pid=int(values["COMFY_PID"]), ready_s=float(values["COMFY_READY_S"]), models_s=models_s,
                       env=values)


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
    comfy_serve.stop(server.base)
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
# What the tests change in the shipped workflows that they do not run as shipped (the one-node video workflow runs
# unchanged, see test_readme_http.py): the audio and the step count, so a run is one 6-frame window (a few seconds on a
# 2-core CPU instead of about 100 s). Everything else - media, model files, face backend `auto`, downloads on - is as
# shipped: the tiny set has the official file names, the server is offline like `make serve` without the model hub.
# Keys: (class_type or "*", input name).

TEST_STEPS = 3
TEST_OVERRIDES: dict[tuple[str, str], object] = {
    ("LoadAudio", "audio"): SPEECH_SHORT,  # 0.4 s of real speech: 6 frames at 15 fps, one window
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
EXPECTED_FRAMES = round(SHORT_SECONDS * FPS)  # output = as long as the audio: 0.4 s at 15 fps = 6 frames


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


FACELESS_ORDER = [0, 1, 1, 0, 0, 1]  # ping-pong over [photo, black frame] for 6 output frames
FACELESS_SAVE_NODE = "10"


def faceless_prompt(seed: int) -> dict:
    """API prompt: [real photo with a face, black frame] + 0.4 s of speech -> Lip Sync (Images) -> Save Image."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "face_astronaut_skimage.png"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": 0}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": {"class_type": "LoadAudio", "inputs": {"audio": SPEECH_SHORT}},
        "5": {"class_type": "LatentSyncModelLoader", "inputs": {"checkpoint": "v1.5/latentsync_unet.pt",
                                                                "version": "auto", "dtype": "auto",
                                                                "download_missing": False}},
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": OFFICIAL_VAE}},
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


END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


def prompt_events(server, prompt: dict, timeout: float = 600):
    """Queue ``prompt`` with a websocket open; yield ``(time, type, data)`` for each of its messages until it ends
    (the ending message, one of END_EVENTS, is yielded last; its data holds the prompt_id)."""
    import websocket  # noqa: PLC0415 - only the tests that watch a run need it

    client_id = str(uuid.uuid4())
    ws = websocket.create_connection(server.url.replace("http", "ws", 1) + f"/ws?clientId={client_id}",
                                     timeout=timeout)
    try:
        prompt_id = server.queue(prompt, client_id)
        deadline = time.time() + timeout
        while time.time() < deadline:
            raw = ws.recv()
            if isinstance(raw, bytes):  # preview images
                continue
            message = json.loads(raw)
            data = message.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            yield time.time(), message["type"], data
            if message["type"] in END_EVENTS:
                return
        raise TimeoutError(f"prompt {prompt_id} did not end within {timeout} s")
    finally:
        ws.close()


# ---------------------------------------------------------------------------------------------------------------
# the README's HTTP example, run as written against the session's server (which is started like `make serve`)

README = REPO / "README.md"
README_HTTP_SECTION = "### Queue a workflow over HTTP"
SHIPPED_VIDEO_API = REPO / "workflows" / "api" / "latentsync_video.json"
# In the test server the demo speech (4.0 s) is cut to its first SHIPPED_SECONDS under its own name (CI time: the
# shipped workflow runs 20 steps, and ComfyUI's VAE on the tiny set costs about a second per frame).
SHIPPED_SECONDS = 0.6
SHIPPED_FRAMES = 9  # 0.6 s at the clip's 15 fps: one (padded) window
OWN_FILES_SECONDS = 0.2  # the "user's" speech for the README's own-files example: 3 frames (CI time)


def readme_http_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the README's HTTP section, in order."""
    text = README.read_text(encoding="utf-8")
    start = text.index(README_HTTP_SECTION)
    end = text.find("\n## ", start)
    return re.findall(r"```(bash|python)\n(.*?)```", text[start:end if end > 0 else None], re.S)


@dataclass
class ReadmeHttpRun:
    curl: subprocess.CompletedProcess  # the bash block, from the checkout: the shipped workflow, byte for byte
    python: subprocess.CompletedProcess  # the first Python block, from the checkout: the same, as it is
    own_files: subprocess.CompletedProcess  # both Python blocks, from a user's folder with my_clip.mp4 + my_speech.wav
    prompt_id: str  # the curl run's job
    entry: dict  # its history entry
    seconds: float  # its wall time


_README_RUN: ReadmeHttpRun | None = None


def readme_http_run(server: ComfyServer) -> ReadmeHttpRun:
    """Run the README's HTTP examples once per session (memoised: the curl run is also the "shipped workflow runs
    unchanged" check of test_workflows_api.py). COMFY_URL points them at the session's server, as the README says.
    The curl block goes first and does the work (about 20 s here); the first Python block posts the same prompt and is
    answered from ComfyUI's cache; the own-files block uploads a copy of the real clip and 0.2 s of real speech."""
    global _README_RUN
    if _README_RUN is not None:
        return _README_RUN
    blocks = readme_http_blocks()
    langs = [lang for lang, _ in blocks]
    if langs != ["bash", "python", "python"]:
        raise AssertionError(f"the README's HTTP section should have a bash and two Python blocks, found {langs}")
    (_, curl_code), (_, python_code), (_, own_code) = blocks
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["COMFY_URL"] = server.url

    def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=1200)

    fresh_caches(server)  # every node of the shipped workflow runs (and reports), even after the browser tests
    t0 = time.time()
    curl = run(["bash", "-c", curl_code], REPO)
    seconds = time.time() - t0
    python = run([sys.executable, "-c", python_code], REPO)
    user = Path(tempfile.mkdtemp(prefix="latentsync-user-"))
    try:
        (user / "workflows").symlink_to(REPO / "workflows", target_is_directory=True)
        shutil.copy2(server.input_dir / VIDEO, user / "my_clip.mp4")
        write_first_seconds(server.input_dir / SPEECH, user / "my_speech.wav", OWN_FILES_SECONDS)
        own_files = run([sys.executable, "-c", python_code + "\n" + own_code], user)
    finally:
        shutil.rmtree(user, ignore_errors=True)  # our own temporary folder
    match = re.search(r'"prompt_id": "([0-9a-f-]{36})"', curl.stdout)
    prompt_id = match.group(1) if match else ""
    entry = (server.get(f"/history/{prompt_id}") or {}).get(prompt_id, {}) if prompt_id else {}
    _README_RUN = ReadmeHttpRun(curl, python, own_files, prompt_id, entry, seconds)
    return _README_RUN


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
