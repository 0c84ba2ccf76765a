"""Lip-sync many videos through one or several running ComfyUI servers over HTTP, as ComfyUI users do it: for each
job, upload its video and speech, queue the shipped API workflow (workflows/api/latentsync_video.json) with only
the inputs the job sets changed, wait, download the saved video into DIR, and write the same report as
`python -m latentsync.batch` (DIR/batch_report.json + .csv). One job at a time per server, longest first; resumable
(finished jobs are skipped; --retry-failed runs the failed ones again).

    python scripts/comfy_batch.py --jobs JOBS --out DIR --server http://HOST:8188 [--server URL ...] \
        [--set steps=10 ...] [--workflow workflows/api/latentsync_video.json] [--retry-failed]

JOBS: a folder, CSV or JSON-lines file, as for `python -m latentsync.batch` (per-job options become the lip-sync
node's inputs: max_gap is its max_face_gap). `--set NAME=VALUE`: an option for every job. Only the standard library
talks to the servers; the job list, claims and report are the pack's own (run it from the checkout).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from latentsync.batch.job_list import Job, longest_first, read_jobs  # noqa: E402
from latentsync.batch.report import Ledger, summarize, summary_line, write_reports  # noqa: E402
from latentsync.claims import Claim, ClaimBoard, work_through  # noqa: E402
from latentsync.options import LipSyncOptions  # noqa: E402

WORKFLOW = REPO / "workflows" / "api" / "latentsync_video.json"
NODE_INPUT = {"max_gap": "max_face_gap"}  # option name -> the lip-sync node's input, where they differ


class ServerError(RuntimeError):
    """What the server answered when a job could not be queued or did not succeed."""


class Server:
    def __init__(self, url: str, timeout: float):
        self.url, self.timeout, self.client_id = url.rstrip("/"), timeout, str(uuid.uuid4())

    def _json(self, path: str, data: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read().decode() or "null")
        except urllib.error.HTTPError as exc:
            raise ServerError(f"{self.url}{path}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:2000]}") \
                from None

    def upload(self, path: Path, name: str) -> str:
        """POST a file into the server's input/ folder; returns the name to put into the workflow."""
        boundary = uuid.uuid4().hex
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n")
        tail = (f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue'
                f"\r\n--{boundary}--\r\n")
        body = head.encode() + Path(path).read_bytes() + tail.encode()
        answer = self._json("/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return answer["name"] if not answer.get("subfolder") else f"{answer['subfolder']}/{answer['name']}"

    def run(self, prompt: dict) -> dict:
        """Queue, wait until the job ends, return its history entry (raises with the server's message)."""
        answer = self._json("/prompt", json.dumps({"prompt": prompt, "client_id": self.client_id}).encode(),
                            {"Content-Type": "application/json"})
        if answer.get("node_errors"):
            raise ServerError(f"the server refused the workflow: {json.dumps(answer['node_errors'])[:2000]}")
        prompt_id, start = answer["prompt_id"], time.monotonic()
        while not (history := self._json(f"/history/{prompt_id}")):
            if time.monotonic() - start > self.timeout:
                self._json("/interrupt", b"{}", {"Content-Type": "application/json"})
                raise ServerError(f"no result after {self.timeout:.0f} s (interrupted)")
            time.sleep(0.5)
        entry = history[prompt_id]
        if entry["status"]["status_str"] != "success":
            messages = [m for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
            detail = messages[-1][1].get("exception_message", "").strip() if messages else entry["status"]
            raise ServerError(f"{detail}")
        return entry

    def download(self, item: dict, dst: Path) -> None:
        """The saved video into `dst`, through a hidden part file renamed into place."""
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        tmp = dst.with_name(f".{dst.stem}.{uuid.uuid4().hex[:12]}.part{dst.suffix}")
        try:
            with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=300) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)


def saved_video(entry: dict) -> dict:
    for out in entry["outputs"].values():
        for key in ("images", "videos", "animated"):
            for item in out.get(key, []):
                if isinstance(item, dict) and str(item.get("filename", "")).endswith(".mp4"):
                    return item
    raise ServerError("the job succeeded but saved no video")


def job_prompt(workflow: dict, job: Job, video_name: str, audio_name: str | None, settings: dict) -> dict:
    """The shipped workflow with this job's files and the options it sets; nothing else changed."""
    prompt = json.loads(json.dumps(workflow))
    lipsync = [k for k, n in prompt.items() if n["class_type"] == "LatentSyncLipSyncVideo"]
    if len(lipsync) != 1:
        raise ValueError("the workflow needs exactly one LatentSyncLipSyncVideo node")
    node = prompt[lipsync[0]]
    for key, n in list(prompt.items()):
        if n["class_type"] == "LoadVideo":
            n["inputs"]["file"] = video_name
        elif n["class_type"] == "LoadAudio":
            if audio_name is None:  # the video's own audio: drop the speech loader and its link
                del prompt[key]
                node["inputs"].pop("audio", None)
            else:
                n["inputs"]["audio"] = audio_name
    for name, value in settings.items():
        node["inputs"][NODE_INPUT.get(name, name)] = value
    return prompt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/comfy_batch.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--server", action="append", required=True, help="a ComfyUI server's URL (repeat for several)")
    p.add_argument("--workflow", type=Path, default=WORKFLOW, help="API-format workflow with one lip-sync node")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="an option for every job")
    p.add_argument("--retry-failed", action="store_true")
    p.add_argument("--timeout", type=float, default=3600, help="seconds one job may take on a server")
    args = p.parse_args(argv)
    try:
        pairs = dict(item.split("=", 1) for item in args.set)
        base = LipSyncOptions.from_mapping(pairs)
        jobs = longest_first(read_jobs(args.jobs, args.out, base))
    except ValueError as e:  # OptionError, JobListError, a --set without '='
        print(f"error: {e}", file=sys.stderr)
        return 2
    workflow = json.loads(args.workflow.read_text(encoding="utf-8"))
    common = {k.replace("-", "_"): getattr(base, k.replace("-", "_")) for k in pairs}
    ledger = Ledger(args.out)
    run_id = uuid.uuid4().hex[:12]
    by_key = {job.key: job for job in jobs}

    def is_done(key: str) -> bool:
        entry = ledger.entry(key)
        return entry is not None and not (entry["status"] == "failed" and args.retry_failed
                                          and entry.get("run") != run_id)

    def serve(server: Server, board: ClaimBoard, stats: list) -> None:
        def run(key: str, claim: Claim) -> None:
            job = by_key[key]
            entry = {"key": key, "video": str(job.video), "audio": str(job.audio) if job.audio else None,
                     "output": str(job.output), "where": job.where, "video_seconds": job.duration_s,
                     "options": job.overrides, "device": server.url, "host": server.url, "process": 0,
                     "run": run_id, "recovered": False, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            t0 = time.monotonic()
            try:
                if job.problem:
                    raise ServerError(job.problem)
                video = server.upload(job.video, f"batch_{key}{job.video.suffix}")
                audio = server.upload(job.audio, f"batch_{key}{job.audio.suffix}") if job.audio else None
                history = server.run(job_prompt(workflow, job, video, audio, {**common, **job.overrides}))
                claim.check()
                job.output.parent.mkdir(parents=True, exist_ok=True)
                server.download(saved_video(history), job.output)
                with av.open(str(job.output)) as c:
                    stream = c.streams.video[0]
                    entry.update(status="done", output_frames=int(stream.frames),
                                 output_seconds=float(stream.duration * stream.time_base))
            except (ServerError, urllib.error.URLError, OSError, ValueError) as exc:
                entry.update(status="failed", error=str(exc))
            seconds = time.monotonic() - t0
            entry.update(seconds=round(seconds, 3), finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            ledger.record(key, entry)
            print(f"[{server.url}] {job.where}: {entry['status']}"
                  + (f": {entry['error']}" if entry["status"] == "failed" else f" in {seconds:.1f} s"),
                  file=sys.stderr, flush=True)

        result = work_through(board, list(by_key), is_done, run)
        stats.append({"run": run_id, "process": 0, "host": server.url, "device": server.url,
                      "jobs": len(result.ran), "busy_s": round(result.busy_s, 3), "idle_s": round(result.idle_s, 3),
                      "wall_s": round(result.wall_s, 3)})

    stats: list = []
    with ClaimBoard(ledger.claims_dir) as board:
        threads = [threading.Thread(target=serve, args=(Server(url, args.timeout), board, stats), daemon=True)
                   for url in args.server]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, s in enumerate(stats):
        ledger.record_process(f"comfy-{run_id}-{i}", s)
    entries = [ledger.entry(key) or {"key": key, "status": "pending", "video": str(job.video),
                                     "output": str(job.output)} for key, job in by_key.items()]
    summary = summarize(entries, ledger.processes(run_id), run_id)
    write_reports(args.out, entries, summary, ledger.processes(run_id))
    print(summary_line(summary))
    return 0 if summary["pending"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
