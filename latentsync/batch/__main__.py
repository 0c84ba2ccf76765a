"""Lip-sync many videos, on one or many processes and machines, resumable.

    python -m latentsync.batch --jobs JOBS --out DIR [options]
    accelerate launch [--num_processes N] [--num_machines M ...] -m latentsync.batch --jobs JOBS --out DIR [options]
    (one process per GPU; on a machine without GPUs add --multi_gpu to start N CPU processes)

JOBS is a folder, a CSV file with a header row, or a JSON-lines file (.jsonl).
  Folder: every video (NAME.mp4, .mov, .mkv, .avi, .webm, .m4v; sub-folders included) is lip-synced to the speech
  file beside it with the same name (NAME.wav, .mp3, .m4a, .aac, .flac, .ogg or .opus) into DIR/NAME.mp4 (same
  sub-folders). A video without its speech file fails with that message.
  CSV / JSON lines: fields video, audio (empty: the video's own audio), output (default NAME.mp4; relative to DIR)
  and any option below without the dashes (steps, seed, length_mode, face_selection, ...) for that job; relative
  video and audio paths are relative to the job file. Every row is checked before any model loads.

Each process loads the models once and claims jobs one at a time, longest first (claim files in DIR/.batch/claims
with a heartbeat every 30 s; a claim not renewed for 4 heartbeats is taken over; across machines DIR must be a
shared folder with exclusive create and atomic rename, and the clocks in step). Outputs appear under their final name only
when complete. A rerun skips finished jobs (failed ones too, unless --retry-failed) and finishes what a stopped run
left. At the end: DIR/batch_report.json and DIR/batch_report.csv, and a summary line. Exit status 0 when every job
has finished (failed ones included: see the report), 2 for bad options or jobs, 1 when the models cannot load.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
import uuid
from pathlib import Path

from ..process_exit import exit_with


def build_parser() -> argparse.ArgumentParser:
    from ..claims import HEARTBEAT_S, MISSED_BEATS
    from ..options import LipSyncOptions, ModelOptions

    p = argparse.ArgumentParser(prog="python -m latentsync.batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=Path, required=True, help="folder of videos and speech files, .csv or .jsonl")
    p.add_argument("--out", type=Path, required=True, help="output folder (outputs, claims, reports)")
    ModelOptions.add_arguments(p)
    LipSyncOptions.add_arguments(p)
    p.add_argument("--retry-failed", action="store_true", help="run the jobs that failed in earlier runs again")
    p.add_argument("--score", action="store_true",
                   help="score each output with SyncNet-v2 (confidence, offset) into the report")
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs that exist but were not written by this batch (default: such a job fails)")
    p.add_argument("--heartbeat", type=float, default=HEARTBEAT_S,
                   help=f"seconds between claim heartbeats; a claim is taken over after {MISSED_BEATS} missed beats "
                        f"(default: {HEARTBEAT_S:g})")
    p.add_argument("--quiet", action="store_true", help="only the summary line and errors")
    return p


def _device(model, state) -> str:
    if model.device == "cpu" or state.device.type == "cpu":
        if model.device == "cuda":
            from ..options import OptionError

            raise OptionError("--device cuda, but PyTorch sees no CUDA GPU")
        return "cpu"
    return str(state.device)


def main(argv: list[str] | None = None, own_process: bool = False) -> int:
    """The batch runner; `own_process`: see `latentsync.__main__.main`."""
    args = build_parser().parse_args(argv)
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    from ..claims import ClaimBoard, work_through
    from ..options import LipSyncOptions, ModelOptions, OptionError
    from .job_list import JobListError, longest_first, read_jobs
    from .report import Ledger, summarize, summary_line, write_reports
    from .worker import BatchWorker, ModelsUnavailable

    import torch

    # without a GPU (or with --device cpu) the launched processes are CPU processes over gloo
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    t0 = time.monotonic()
    prefix = f"[batch {state.process_index}/{state.num_processes}]"

    def log(message: str) -> None:
        if not args.quiet:
            print(f"{prefix} {time.monotonic() - t0:7.1f}s {message}", file=sys.stderr, flush=True)

    def error(message: str) -> None:
        if state.is_main_process:
            print(f"error: {message}", file=sys.stderr, flush=True)

    try:
        options = LipSyncOptions.from_args(args)
        model = ModelOptions.from_args(args)
        device = _device(model, state)
        if args.heartbeat <= 0:
            raise OptionError("--heartbeat must be positive")
        jobs = read_jobs(args.jobs, args.out, options)
    except (OptionError, JobListError) as e:
        error(str(e))
        return 2
    out = args.out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out)
    run = [uuid.uuid4().hex[:12] if state.is_main_process else None]
    if state.num_processes > 1:
        broadcast_object_list(run)
    run_id = run[0]
    ordered = longest_first(jobs)
    by_key = {job.key: job for job in ordered}
    log(f"{len(jobs)} jobs ({ledger.finished()} finished earlier), run {run_id}, device {device}")
    if own_process and device == "cpu":
        from ..cpu_allocator import keep_freed_memory_in_heap

        log(keep_freed_memory_in_heap())
    worker = BatchWorker(by_key, ledger, model, device, state.process_index, run_id,
                         retry_failed=args.retry_failed, score=args.score, overwrite=args.overwrite, log=log)
    started = time.time()
    with ClaimBoard(ledger.claims_dir, heartbeat=args.heartbeat) as board:
        try:
            stats = work_through(board, list(by_key), worker.is_done, worker.run,
                                 on_wait=lambda keys: log(f"waiting for {len(keys)} job(s) other processes hold"))
        except ModelsUnavailable as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:
            print("cancelled: the job in progress was not written; run the same command again to finish",
                  file=sys.stderr)
            return 130
    ledger.record_process(f"{socket.gethostname()}-{board.me['pid']}-{run_id}", {
        "run": run_id, "process": state.process_index, "host": socket.gethostname(), "device": device,
        "started": started, "jobs": len(stats.ran), "done": worker.counts["done"], "failed": worker.counts["failed"],
        "busy_s": round(stats.busy_s, 3), "idle_s": round(stats.idle_s, 3), "wall_s": round(stats.wall_s, 3),
        "frames": worker.counts["frames"]})
    log(f"this process: {len(stats.ran)} jobs in {stats.wall_s:.1f} s ({stats.busy_s:.1f} s working, "
        f"{stats.idle_s:.1f} s waiting for others)")
    state.wait_for_everyone()
    if state.is_main_process:
        entries = [ledger.entry(key) or {"key": key, "status": "pending", "video": str(job.video),
                                         "output": str(job.output)} for key, job in by_key.items()]
        summary = summarize(entries, ledger.processes(run_id), run_id)
        json_path, csv_path = write_reports(out, entries, summary, ledger.processes(run_id))
        for entry in entries:
            if entry["status"] == "failed" and entry.get("run") == run_id:
                print(f"FAILED {entry['video']}: {entry['error']}", file=sys.stderr)
        print(summary_line(summary))
        print(f"reports: {json_path} {csv_path}")
    return 0


if __name__ == "__main__":
    exit_with(main(own_process=True))
