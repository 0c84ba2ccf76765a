"""`make serve`'s server, one code path for `make serve`, `make demo` and the tests' session server.

A real headless ComfyUI 0.3.75 with this pack (`start_comfy.sh --strict`), the demo media in its `input/` folder
(the names the shipped workflows use) and a models folder: the official set when it is in ``--models`` (or can be
downloaded into it by `latentsync.tools.fetch_models`), else the tiny random set (said loudly), served offline
(``HF_HUB_OFFLINE=1``: nothing is downloaded, so the face analyzer's ``auto`` takes the offline detector at once).

    .venv/bin/python tests/harness/comfy_serve.py [--models models] [--version 1.5] [--port 8188]   # = make serve

Runs until Ctrl-C; then the server is stopped and its temporary base folder removed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

HARNESS = Path(__file__).resolve().parent
REPO = HARNESS.parents[1]
PACK_NAME = "ComfyUI-LatentSync"
PYTHON = os.environ.get("COMFY_PYTHON", str(REPO / ".venv" / "bin" / "python"))
DEMO_DIR = REPO / "assets" / "demo"
DEMO_VIDEO = "demo_clip_15fps.mp4"  # the names every shipped workflow uses
DEMO_AUDIO = "demo_speech_arctic_a0007.wav"
TINY_DIR = REPO / ".cache" / "tiny-models"  # make serve / make demo keep their tiny set here (git-ignored)
TINY_MARKER = "TINY_MODEL_SET.txt"
TINY_MESSAGE = """\
==============================================================================
The official LatentSync weights are not available here (see the messages above).
Using the TINY RANDOM model set instead: every workflow runs end to end through
ComfyUI, but the generated mouth is noise. Put the official files in
{models} (or let the download succeed) for a real lip-sync.
=============================================================================="""

Log = Callable[[str], None]


def _run_tool(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m latentsync.tools.X` from the checkout (its output goes to ours)."""
    return subprocess.run([PYTHON, "-m", module, *args], cwd=str(REPO), timeout=3600)


OFFICIAL_NAMES = ("latentsync/v1.5/latentsync_unet.pt", "latentsync/whisper/tiny.pt", "latentsync/mask.png",
                  "vae/vae-ft-mse-840000-ema-pruned.safetensors")  # what the shipped workflows need, in both sets


def tiny_models(folder: Path, log: Log = print) -> Path:
    """The tiny random set (256 px, v1.5) in ``folder``, written by `latentsync.tools.make_tiny` unless already there.
    A tiny set in ``folder`` without the official names (written by an older version of the pack) is replaced."""
    if (folder / TINY_MARKER).is_file() and not all((folder / name).is_file() for name in OFFICIAL_NAMES):
        log(f"the tiny set in {folder} predates the official file names: writing it again")
        shutil.rmtree(folder)  # a random-weight set this tool wrote (its marker says so), nothing of the user's
    if not (folder / TINY_MARKER).is_file():
        proc = _run_tool("latentsync.tools.make_tiny", "--out", str(folder), "--resolution", "256")
        if proc.returncode != 0:
            raise RuntimeError(f"make_tiny failed ({proc.returncode}) for {folder}")
    log(f"models: TINY RANDOM set in {folder}")
    return folder


def choose_models(models: Path, version: str = "1.5", tiny_dir: Path = TINY_DIR, log: Log = print) -> tuple[Path, bool]:
    """(models folder, is_tiny): the official set in ``models`` (found or downloaded), else the tiny set."""
    models.mkdir(parents=True, exist_ok=True)
    if _run_tool("latentsync.tools.fetch_models", "--models", str(models), "--version", version,
                 "--face-backend", "offline", "--no-syncnet").returncode == 0:
        log(f"models: official LatentSync {version} set in {models}")
        return models, False
    log(TINY_MESSAGE.format(models=models))
    return tiny_models(tiny_dir, log), True


def demo_media() -> list[Path]:
    return [DEMO_DIR / DEMO_VIDEO, DEMO_DIR / DEMO_AUDIO]


def launch(models: Path, offline: bool, base: Path | None = None, port: int | None = None,
           extra_inputs: Iterable[Path] = (), timeout: float = 240) -> dict[str, str]:
    """Start the server (returns start_comfy.sh's COMFY_PID/PORT/URL/BASE/LOG/READY_S values). Its input/ folder
    holds the demo media and ``extra_inputs``; ``offline`` sets HF_HUB_OFFLINE=1 for it (the tiny set)."""
    base = Path(base) if base is not None else Path(tempfile.mkdtemp(prefix="latentsync-serve-"))
    env = {k: v for k, v in os.environ.items() if k != "COMFY_ROOT"}
    env["COMFY_PYTHON"] = PYTHON
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    cmd = ["bash", str(HARNESS / "start_comfy.sh"), "-n", f"{REPO}={PACK_NAME}", "-m", str(models), "-b", str(base),
           "--strict", "--timeout", str(int(timeout))]
    for path in [*demo_media(), *extra_inputs]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"input file not found: {path}")
        cmd += ["-i", str(path)]
    if port is not None:
        cmd += ["-p", str(port)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout + 60)
    if proc.returncode != 0:
        log = base / "server.log"
        tail = log.read_text(errors="replace")[-6000:] if log.exists() else ""
        raise RuntimeError(f"start_comfy.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{tail}")
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def stop(base: Path) -> None:
    """Stop the server of ``base`` (its own process only)."""
    subprocess.run(["bash", str(HARNESS / "stop_comfy.sh"), str(base)], capture_output=True, timeout=60)


def serve(models: Path, version: str, port: int) -> int:
    models, tiny = choose_models(models.resolve(), version)
    base = Path(tempfile.mkdtemp(prefix="latentsync-serve-"))
    try:
        info = launch(models, offline=tiny, base=base, port=port)
    except RuntimeError as exc:
        print(f"[serve] {exc}", file=sys.stderr)
        shutil.rmtree(base, ignore_errors=True)
        return 1
    print(f"[serve] ComfyUI with {PACK_NAME}: {info['COMFY_URL']}   (log: {info['COMFY_LOG']})")
    print(f"[serve] models: {'TINY RANDOM set (the mouth is noise), offline' if tiny else 'official'} in {models}")
    print(f"[serve] templates: Workflow > Browse Templates > Extensions > {PACK_NAME}; "
          f"input/: {DEMO_VIDEO}, {DEMO_AUDIO}")
    print("[serve] Ctrl-C to stop", flush=True)
    pid = int(info["COMFY_PID"])
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    try:
        while _alive(pid):
            time.sleep(1)
        print("[serve] ComfyUI exited", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(base)
        shutil.rmtree(base, ignore_errors=True)  # our own temporary base folder
        print("[serve] stopped")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=REPO / "models")
    p.add_argument("--version", choices=["1.5", "1.6"], default="1.5")
    p.add_argument("--port", type=int, default=8188)
    args = p.parse_args(argv)
    return serve(args.models, args.version, args.port)


if __name__ == "__main__":
    sys.exit(main())
