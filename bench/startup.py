"""Start-up cost of the pack in ComfyUI 0.3.75: ComfyUI's own import-time line for it, and how much later a server
with the pack answers than one without.

    python -m bench.startup [--repeats 3] [--repo PATH] [--json FILE]

Per repeat, two fresh headless servers are started one after the other (`main.py --cpu`, an empty base folder, no
models): one without custom nodes and one with this pack linked into its custom_nodes/. "ready" is the time from
launching the process to the first answer of GET /system_stats (polled every 20 ms); "import line" is the figure
ComfyUI logs for the pack under "Import times for custom nodes" (the import, the entry point, the node list and
every node's schema, to 0.1 s). Then GET /object_info is timed once on each server.

A probe in a fresh process (`--probe`, also what tests/test_startup.py runs) loads the pack exactly as ComfyUI does
after importing ComfyUI's own modules, and reports the same step to the millisecond, the time to build every node's
schema again (what each /object_info costs the pack; the folders it walked to do so), and which heavy modules (Whisper, diffusers, kornia, OpenCV,
PyAV, numba, insightface, onnxruntime) the pack imported that ComfyUI had not.

`--repo PATH` measures another checkout (e.g. a worktree of an older commit) with this script. Figures depend on
the machine and its load: the medians of the repeats are printed, never asserted.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "ComfyUI-LatentSync"
HEAVY_MODULES = ("whisper", "diffusers", "kornia", "cv2", "av", "numba", "tiktoken", "insightface", "onnxruntime",
                 "transformers")
IMPORT_LINE = re.compile(r"^\s*(?P<seconds>[0-9.]+) seconds(?P<failed> \(IMPORT FAILED\))?: (?P<path>.+)$")


def comfy_dir() -> Path:
    return Path(os.environ.get("COMFY_DIR", REPO_ROOT / ".comfy" / "ComfyUI"))


# ---------------------------------------------------------------------------------------------------------------
# the in-process probe (run in a fresh interpreter)


def _top_level(names) -> set[str]:
    return {name.split(".")[0] for name in names}


def probe(repo: Path) -> dict:
    """Import ComfyUI's modules, then load the pack at `repo` as ComfyUI's `load_custom_node` does; report timings
    and the heavy modules the pack brought in. Changes this interpreter (sys.path, ComfyUI's --cpu flag): call it in
    a process of its own (`python -m bench.startup --probe`)."""
    sys.path.insert(0, str(comfy_dir()))
    from comfy.cli_args import args

    args.cpu = True
    import folder_paths  # noqa: F401  (ComfyUI's own start-up imports these before any custom node)
    import nodes  # noqa: F401
    from comfy_api.latest import ComfyExtension

    before = _top_level(sys.modules)
    start = time.perf_counter()
    name = str(repo / PACK_NAME).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, repo / "__init__.py", submodule_search_locations=[str(repo)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    extension = asyncio.run(module.comfy_entrypoint())
    assert isinstance(extension, ComfyExtension)
    node_list = asyncio.run(extension.get_node_list())
    for node in node_list:
        node.GET_SCHEMA()
    import_s = time.perf_counter() - start
    walks = []
    walk = os.walk
    os.walk = lambda top, *a, **k: (walks.append(str(top)), walk(top, *a, **k))[1]  # counts folder walks
    try:
        start = time.perf_counter()
        for node in node_list:
            node.GET_NODE_INFO_V1()  # what /object_info asks every node for
        schema_s = time.perf_counter() - start
    finally:
        os.walk = walk
    added = _top_level(sys.modules) - before
    return {"import_s": import_s, "object_info_s": schema_s, "object_info_walks": walks, "nodes": len(node_list),
            "heavy_imported": sorted(m for m in HEAVY_MODULES if m in added),
            "heavy_before": sorted(m for m in HEAVY_MODULES if m in before)}


def run_probe(repo: Path, timeout: float = 300) -> dict:
    """`probe` in a fresh interpreter (this one's Python)."""
    proc = subprocess.run([sys.executable, "-m", "bench.startup", "--probe", "--repo", str(repo)], cwd=str(REPO_ROOT),
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the start-up probe failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------
# real servers


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def import_line(log: str, pack: str = PACK_NAME) -> float | None:
    """The seconds of ComfyUI's "Import times for custom nodes" line for `pack`; None when there is none. A line
    that says IMPORT FAILED is an error, not a figure."""
    for line in log.splitlines():
        match = IMPORT_LINE.match(line.strip("\r"))
        if match and Path(match["path"].strip()).name == pack:
            if match["failed"]:
                raise RuntimeError(f"ComfyUI could not import {pack}:\n{log[-4000:]}")
            return float(match["seconds"])
    return None


def start_server(with_pack: bool, repo: Path, timeout: float = 180) -> dict:
    """One fresh server (empty base folder, --cpu), timed from launch to its first answer; it is stopped before
    returning. Returns {"ready_s", "import_line_s", "object_info_s"}."""
    base = Path(tempfile.mkdtemp(prefix="latentsync-startup-"))
    try:
        for sub in ("custom_nodes", "input", "output", "temp", "user"):
            (base / sub).mkdir()
        if with_pack:
            (base / "custom_nodes" / PACK_NAME).symlink_to(repo, target_is_directory=True)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, str(comfy_dir() / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--disable-auto-launch", "--disable-api-nodes", "--base-directory", str(base),
               "--database-url", f"sqlite:///{base / 'user' / 'comfyui.db'}", "--log-stdout"]
        log_path = base / "server.log"
        with open(log_path, "wb") as log:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"} | {
                                        "HF_HUB_OFFLINE": "1"})
            try:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"ComfyUI exited during start-up:\n{log_path.read_text(errors='replace')[-4000:]}")
                    try:
                        _get(f"{url}/system_stats", timeout=1.0)
                        break
                    except (urllib.error.URLError, ConnectionError, TimeoutError):
                        pass
                    if time.perf_counter() - t0 > timeout:
                        raise TimeoutError(f"ComfyUI did not answer within {timeout} s")
                    time.sleep(0.02)
                ready_s = time.perf_counter() - t0
                t1 = time.perf_counter()
                _get(f"{url}/object_info", timeout=60.0)
                object_info_s = time.perf_counter() - t1
            finally:
                proc.terminate()  # our own server process
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        text = log_path.read_text(errors="replace")
        line = import_line(text) if with_pack else None
        if with_pack and line is None:
            raise RuntimeError(f"no import-time line for {PACK_NAME} in the server log:\n{text[-4000:]}")
        return {"ready_s": ready_s, "import_line_s": line, "object_info_s": object_info_s}
    finally:
        shutil.rmtree(base, ignore_errors=True)  # our own temporary base folder


def measure(repeats: int, repo: Path, log=print) -> dict:
    runs = {"without": [], "with": []}
    for i in range(repeats):
        for label in ("without", "with"):
            run = start_server(label == "with", repo)
            runs[label].append(run)
            log(f"  run {i + 1}/{repeats} {label:7s} the pack: ready {run['ready_s']:.2f} s, /object_info "
                f"{run['object_info_s'] * 1000:.0f} ms"
                + (f", import line {run['import_line_s']:.1f} s" if run["import_line_s"] is not None else ""))
    probe_result = run_probe(repo)

    def median(label: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[label])

    return {
        "repeats": repeats, "repo": str(repo), "cpus": os.cpu_count(),
        "ready_without_s": median("without", "ready_s"), "ready_with_s": median("with", "ready_s"),
        "start_delay_s": median("with", "ready_s") - median("without", "ready_s"),
        "import_line_s": median("with", "import_line_s"),
        "object_info_without_s": median("without", "object_info_s"),
        "object_info_with_s": median("with", "object_info_s"),
        "probe": probe_result, "runs": runs,
    }


def table(result: dict) -> str:
    p = result["probe"]
    rows = [
        ("ComfyUI's import-time line for the pack", f"{result['import_line_s']:.1f} s"),
        ("the same step, measured by the probe", f"{p['import_s'] * 1000:.0f} ms"),
        ("server ready without the pack", f"{result['ready_without_s']:.2f} s"),
        ("server ready with the pack", f"{result['ready_with_s']:.2f} s"),
        ("difference", f"{result['start_delay_s']:+.2f} s"),
        ("GET /object_info without / with the pack",
         f"{result['object_info_without_s'] * 1000:.0f} / {result['object_info_with_s'] * 1000:.0f} ms"),
        ("the pack's share of /object_info (probe)", f"{p['object_info_s'] * 1000:.1f} ms"),
        ("heavy modules the pack imports at start-up", ", ".join(p["heavy_imported"]) or "none"),
    ]
    lines = [f"| start-up ({result['repeats']} repeats, medians; {result['cpus']} CPUs) | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="server starts with and without the pack (default 3)")
    ap.add_argument("--repo", type=Path, default=REPO_ROOT, help="the checkout of the pack to measure")
    ap.add_argument("--json", type=Path, help="write every figure to this JSON file")
    ap.add_argument("--probe", action="store_true", help="only the in-process probe, as one JSON line")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    repo = args.repo.resolve()
    if not (repo / "__init__.py").is_file():
        raise SystemExit(f"not a checkout of the pack: {repo}")
    if args.probe:
        print(json.dumps(probe(repo)))
        return 0
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    print(f"start-up of {repo} in ComfyUI at {comfy_dir()} ({args.repeats} repeats)")
    result = measure(args.repeats, repo)
    print()
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
